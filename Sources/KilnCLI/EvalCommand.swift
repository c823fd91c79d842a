import ArgumentParser
import Foundation
import KilnGraph
import KilnQuant
import KilnRuntime
import KilnTensor

/// `kiln eval MODEL`: top-1 on a labelled set, and agreement with a reference model.
struct EvalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "Measure top-1 accuracy on labelled images, optionally against a reference model.",
        discussion: """
            Exit status 2 means an accuracy bar (--min-top1, --max-drop, --min-agreement) was missed; 1 means an \
            error. Data comes from --dataset fashion-mnist[=DIR] (the 10k test images; default DIR \
            \(FashionMNIST.defaultDirectory)) or from --inputs X.npy (float32, the model's input layout) with \
            --labels Y.npy (int64, int32 or uint8). Fashion-MNIST pixels are scaled to [0, 1] and normalized as \
            --input-mean/--input-std (or --preprocess, --input-range) say, or as the model's metadata says when \
            the flags are absent.
            """)

    @Argument(help: "The model to evaluate (.onnx teacher or .kiln student).")
    var model: String

    @Option(help: "fashion-mnist or fashion-mnist=DIR.")
    var dataset: String?

    @Option(help: "Input images as float32 .npy.")
    var inputs: String?

    @Option(help: "Labels as int .npy (with --inputs).")
    var labels: String?

    @Option(help: "A reference model (e.g. the teacher): report argmax agreement and mean logit cosine.")
    var reference: String?

    @Option(name: .customLong("min-top1"), help: "Fail (exit status 2) if top-1 is below this many percent.")
    var minTop1: Double?

    @Option(name: .customLong("max-drop"), help: "Fail (exit status 2) if top-1 is more than this many points below the reference's.")
    var maxDrop: Double?

    @Option(name: .customLong("min-agreement"), help: "Fail (exit status 2) if fewer than this many percent of argmaxes agree with the reference.")
    var minAgreement: Double?

    @Flag(help: "With a .kiln student and its ONNX teacher as --reference: each layer's SQNR against the teacher on these images (at most the first 1,000).")
    var layers = false

    @Option(help: "Evaluate only the first N images.")
    var limit: Int?

    @Option(help: "Images per batch.")
    var batch: Int = 250

    @Flag(help: "Print one JSON object instead of text.")
    var json = false

    @OptionGroup(title: "Input domain (how Fashion-MNIST pixels are normalized)") var domain: InputDomainOptions

    @OptionGroup var compute: ComputeOptions

    func validate() throws {
        _ = try domain.stated()
        guard (dataset == nil) != (inputs == nil) else {
            throw ValidationError("give either --dataset fashion-mnist[=DIR] or --inputs X.npy --labels Y.npy")
        }
        guard (inputs == nil) == (labels == nil) else { throw ValidationError("--inputs and --labels go together") }
        guard batch >= 1 else { throw ValidationError("--batch must be at least 1") }
        if let limit, limit < 1 { throw ValidationError("--limit must be at least 1") }
        if reference == nil && (maxDrop != nil || minAgreement != nil || layers) {
            throw ValidationError("--max-drop, --min-agreement and --layers need --reference")
        }
    }

    func run() throws {
        try reportingErrors {
            try compute.apply()
            let student = try LoadedModel(path: model)
            let teacher = try reference.map { try LoadedModel(path: $0) }
            let data = try EvalData(self, model: student)
            let start = Date()
            var result = try Evaluation.run(student, reference: teacher, data: data, batch: batch)
            result.seconds = Date().timeIntervalSince(start)
            result.model = model
            result.reference = reference
            result.normalization = data.normalization
            result.failures = bars(result)
            if layers, let teacher {
                guard let graph = teacher.graph, case .student = student.backend else {
                    throw ValidationError("--layers needs a .kiln student and its ONNX teacher as --reference")
                }
                let full = try KilnFile.decode(try [UInt8](Data(contentsOf: URL(fileURLWithPath: model))))
                let images = data.batch(0..<min(data.count, 1000))
                do {
                    result.layers = try Quantizer.layerReport(full, teacher: graph, images: images)
                } catch let error as QuantizeError {
                    throw DataFileError(file: model, error.message)
                }
            }
            if json {
                try printJSON(result)
            } else {
                print(result.text)
            }
            if !result.failures.isEmpty {
                FileHandle.standardError.write(Data("kiln: accuracy bar missed: \(result.failures.joined(separator: "; "))\n".utf8))
                throw ExitCode(2)
            }
        }
    }

    /// The accuracy bars (--min-top1, --max-drop, --min-agreement) the result misses, each as a sentence.
    func bars(_ result: Evaluation) -> [String] {
        var missed: [String] = []
        let top1 = result.top1 * 100
        if let minTop1, top1 < minTop1 {
            missed.append(String(format: "top-1 %.2f%% is below --min-top1 %.2f%%", top1, minTop1))
        }
        if let maxDrop, let reference = result.referenceTop1.map({ $0 * 100 }), reference - top1 > maxDrop {
            missed.append(String(format: "top-1 %.2f%% is %.2f points below the reference's %.2f%% (--max-drop %.2f)", top1, reference - top1, reference, maxDrop))
        }
        if let minAgreement, let agreement = result.agreement.map({ $0 * 100 }), agreement < minAgreement {
            missed.append(String(format: "agreement %.2f%% is below --min-agreement %.2f%%", agreement, minAgreement))
        }
        return missed
    }
}

/// Labelled inputs for an evaluation.
struct EvalData {
    /// Number of images.
    let count: Int
    /// Class of each image.
    let labels: [Int]
    /// How Fashion-MNIST pixels were normalized, for the report.
    let normalization: String?
    /// Images `range` as a batch tensor.
    let batch: (Range<Int>) -> Tensor

    init(_ options: EvalCommand, model: LoadedModel) throws {
        if let dataset = options.dataset {
            let parts = dataset.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts[0] == "fashion-mnist" else {
                throw ValidationError("unknown dataset '\(parts[0])' (known: fashion-mnist)")
            }
            let set = try FashionMNIST(split: .test, directory: parts.count > 1 ? parts[1] : FashionMNIST.defaultDirectory)
            let resolved = try options.domain.resolve(metadata: model.metadata, channels: 1, file: model.path)
            let (mean, std) = resolved.map { ($0.domain.normalization.mean[0], $0.domain.normalization.std[0]) } ?? (0, 1)
            count = min(options.limit ?? set.count, set.count)
            labels = Array(set.labels.prefix(count))
            normalization = resolved.map { "\($0.domain) (\($0.source))" } ?? "x/255 (none given)"
            batch = { set.tensor($0, mean: mean, std: std) }
        } else {
            let x = try NPY.readTensor(options.inputs!)
            let y = try NPY.readLabels(options.labels!)
            guard x.rank >= 1, x.shape[0] == y.count else {
                throw DataFileError(file: options.labels!, "has \(y.count) labels but \(options.inputs!) holds \(x.shape.first ?? 0) images")
            }
            count = min(options.limit ?? y.count, y.count)
            labels = Array(y.prefix(count))
            normalization = nil
            let sample = x.shape.dropFirst().reduce(1, *)
            batch = { range in
                Tensor(shape: [range.count] + x.shape.dropFirst(),
                       scalars: Array(x.scalars[(range.lowerBound * sample)..<(range.upperBound * sample)]))
            }
        }
    }
}

/// Top-1 and agreement figures of one evaluation.
struct Evaluation: Encodable {
    var model = ""
    var reference: String?
    var normalization: String?
    var count = 0
    var correct = 0
    var top1 = 0.0
    var referenceTop1: Double?
    var agreement: Double?
    var meanCosine: Double?
    var seconds = 0.0
    /// Accuracy bars missed (empty when all pass or none were set).
    var failures: [String] = []
    /// With --layers: each student layer's SQNR against the teacher on the images.
    var layers: [LayerReport]?

    static func run(_ model: LoadedModel, reference: LoadedModel?, data: EvalData, batch: Int) throws -> Evaluation {
        var result = Evaluation()
        var referenceCorrect = 0, agreeing = 0
        var cosineSum = 0.0
        let progress = Progress(label: "eval", total: data.count)
        for start in stride(from: 0, to: data.count, by: batch) {
            let range = start..<min(start + batch, data.count)
            let x = data.batch(range)
            let logits = try model.predict(x)
            let predicted = try argmax(logits, expected: range.count, file: model.path)
            for (i, label) in zip(range, predicted) where label == data.labels[i] { result.correct += 1 }
            if let reference {
                let referenceLogits = try reference.predict(x)
                let referencePredicted = try argmax(referenceLogits, expected: range.count, file: reference.path)
                for (i, label) in zip(range, referencePredicted) where label == data.labels[i] { referenceCorrect += 1 }
                agreeing += zip(predicted, referencePredicted).filter { $0 == $1 }.count
                cosineSum += cosines(logits, referenceLogits).reduce(0, +)
            }
            progress.update(range.upperBound)
        }
        progress.finish()
        result.count = data.count
        result.top1 = Double(result.correct) / Double(data.count)
        if reference != nil {
            result.referenceTop1 = Double(referenceCorrect) / Double(data.count)
            result.agreement = Double(agreeing) / Double(data.count)
            result.meanCosine = cosineSum / Double(data.count)
        }
        return result
    }

    /// Index of the largest logit of each row of [n, classes] logits.
    static func argmax(_ logits: Tensor, expected: Int, file: String) throws -> [Int] {
        guard logits.rank == 2, logits.shape[0] == expected else {
            throw DataFileError(file: file, "output \(logits.shape.shapeDescription) is not [\(expected), classes] logits")
        }
        let classes = logits.shape[1]
        return (0..<expected).map { row in
            let values = logits.scalars[(row * classes)..<((row + 1) * classes)]
            return values.indices.max { values[$0] < values[$1] }! - row * classes
        }
    }

    /// Cosine similarity of each row pair of two [n, classes] tensors.
    static func cosines(_ a: Tensor, _ b: Tensor) -> [Double] {
        let classes = a.shape[1]
        return (0..<a.shape[0]).map { row in
            var dot = 0.0, na = 0.0, nb = 0.0
            for j in (row * classes)..<((row + 1) * classes) {
                let (x, y) = (Double(a.scalars[j]), Double(b.scalars[j]))
                dot += x * y
                na += x * x
                nb += y * y
            }
            return na > 0 && nb > 0 ? dot / (na * nb).squareRoot() : (na == nb ? 1 : 0)
        }
    }

    var text: String {
        var lines = [String(format: "top-1: %.2f%% (%d/%d)", top1 * 100, correct, count)]
        if let normalization { lines.append("normalization: \(normalization)") }
        if let reference, let agreement, let meanCosine, let referenceTop1 {
            lines.append(String(format: "reference %@: top-1 %.2f%%, agreement %.2f%%, mean logit cosine %.6f",
                                reference, referenceTop1 * 100, agreement * 100, meanCosine))
        }
        if let layers {
            let names = NameColumn(layers.map(\.layer))
            lines.append(names.cell("layer") + "  " + "op".padding(toLength: 14, withPad: " ", startingAt: 0) + "  SQNR dB")
            for layer in layers {
                lines.append(names.cell(layer.layer) + "  " + layer.op.padding(toLength: 14, withPad: " ", startingAt: 0)
                             + (layer.sqnr.map { String(format: "  %7.1f", $0) } ?? "        -"))
            }
        }
        lines.append(String(format: "time: %.2f s", seconds))
        return lines.joined(separator: "\n")
    }
}
