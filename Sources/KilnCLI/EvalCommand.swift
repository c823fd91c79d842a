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
        abstract: "Measure top-1 accuracy on labelled images, and how closely every output follows a reference model.",
        discussion: """
            Exit status 2 means a bar (--min-top1, --max-drop, --min-agreement, --min-sqnr, --min-cosine) was missed; \
            1 means an error. Data comes from --dataset fashion-mnist[=DIR] (the 10k test images; default DIR \
            \(FashionMNIST.defaultDirectory)) or from --inputs X.npy (float32, the model's input layout) with \
            --labels Y.npy (int64, int32 or uint8). Without --labels (detectors, segmenters, any output) give \
            --reference: every output is compared with the reference's — SQNR in dB over all images and the \
            cosine of each image's output (mean and worst). Fashion-MNIST pixels are scaled to [0, 1] and normalized as \
            --input-mean/--input-std (or --preprocess, --input-range) say, or as the model's metadata says when \
            the flags are absent.
            """)

    @Argument(help: "The model to evaluate (.onnx teacher or .kiln student).")
    var model: String

    @Option(help: "fashion-mnist or fashion-mnist=DIR.")
    var dataset: String?

    @Option(help: "Input images as float32 .npy.")
    var inputs: String?

    @Option(help: "Labels as int .npy (with --inputs; optional with --reference).")
    var labels: String?

    @Option(help: "A reference model (e.g. the teacher): per-output SQNR and cosine; with labels also argmax agreement.")
    var reference: String?

    @Option(name: .customLong("min-top1"), help: "Fail (exit status 2) if top-1 is below this many percent.")
    var minTop1: Double?

    @Option(name: .customLong("max-drop"), help: "Fail (exit status 2) if top-1 is more than this many points below the reference's.")
    var maxDrop: Double?

    @Option(name: .customLong("min-agreement"), help: "Fail (exit status 2) if fewer than this many percent of argmaxes agree with the reference.")
    var minAgreement: Double?

    @Option(name: .customLong("min-sqnr"), help: "Fail (exit status 2) if any output's SQNR against the reference is below this many dB.")
    var minSQNR: Double?

    @Option(name: .customLong("min-cosine"), help: "Fail (exit status 2) if any output's mean cosine with the reference is below this.")
    var minCosine: Double?

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
        if labels != nil && inputs == nil { throw ValidationError("--labels goes with --inputs") }
        if inputs != nil && labels == nil && reference == nil {
            throw ValidationError("--inputs without --labels needs --reference (outputs are then compared with it)")
        }
        if labels == nil && dataset == nil && (minTop1 != nil || maxDrop != nil || minAgreement != nil) {
            throw ValidationError("--min-top1, --max-drop and --min-agreement need labels")
        }
        guard batch >= 1 else { throw ValidationError("--batch must be at least 1") }
        if let limit, limit < 1 { throw ValidationError("--limit must be at least 1") }
        if reference == nil && (maxDrop != nil || minAgreement != nil || minSQNR != nil || minCosine != nil || layers) {
            throw ValidationError("--max-drop, --min-agreement, --min-sqnr, --min-cosine and --layers need --reference")
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

    /// The bars (--min-top1, --max-drop, --min-agreement, --min-sqnr, --min-cosine) the result misses, each as a sentence.
    func bars(_ result: Evaluation) -> [String] {
        var missed: [String] = []
        for output in result.outputs ?? [] {
            if let minSQNR, let sqnr = output.sqnr, sqnr < minSQNR {
                missed.append(String(format: "output '%@' SQNR %.2f dB is below --min-sqnr %.2f", output.name, sqnr, minSQNR))
            }
            if let minCosine, output.meanCosine < minCosine {
                missed.append(String(format: "output '%@' mean cosine %.6f is below --min-cosine %.6f", output.name, output.meanCosine, minCosine))
            }
        }
        guard let top1 = result.top1.map({ $0 * 100 }) else { return missed }
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
    /// Class of each image, when the data is labelled.
    let labels: [Int]?
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
            guard x.rank >= 1 else { throw DataFileError(file: options.inputs!, "holds a scalar, not a batch of inputs") }
            let y = try options.labels.map { try NPY.readLabels($0) }
            if let y, x.shape[0] != y.count {
                throw DataFileError(file: options.labels!, "has \(y.count) labels but \(options.inputs!) holds \(x.shape[0]) images")
            }
            let count = min(options.limit ?? x.shape[0], x.shape[0])
            self.count = count
            labels = y.map { Array($0.prefix(count)) }
            normalization = nil
            let sample = x.shape.dropFirst().reduce(1, *)
            batch = { range in
                Tensor(shape: [range.count] + x.shape.dropFirst(),
                       scalars: Array(x.scalars[(range.lowerBound * sample)..<(range.upperBound * sample)]))
            }
        }
    }
}

/// How one output of the model follows the same output of the reference over the whole set.
struct OutputAgreement: Encodable {
    /// The output's name.
    var name: String
    /// 10·log10(Σ reference² / Σ (model − reference)²) over every element of every image, in dB; nil when the
    /// outputs are identical.
    var sqnr: Double?
    /// Mean over images of the cosine between the model's and the reference's output.
    var meanCosine: Double
    /// The lowest of those cosines.
    var minCosine: Double
}

/// Top-1, agreement and per-output figures of one evaluation.
struct Evaluation: Encodable {
    var model = ""
    var reference: String?
    var normalization: String?
    var count = 0
    /// With labels: images whose argmax is the label, and that as a fraction.
    var correct: Int?
    var top1: Double?
    var referenceTop1: Double?
    var agreement: Double?
    var meanCosine: Double?
    /// With a reference: how each output follows the reference's.
    var outputs: [OutputAgreement]?
    var seconds = 0.0
    /// Accuracy bars missed (empty when all pass or none were set).
    var failures: [String] = []
    /// With --layers: each student layer's SQNR against the teacher on the images.
    var layers: [LayerReport]?

    static func run(_ model: LoadedModel, reference: LoadedModel?, data: EvalData, batch: Int) throws -> Evaluation {
        var result = Evaluation()
        var correct = 0, referenceCorrect = 0, agreeing = 0
        let names = model.outputNames
        if let reference, reference.outputNames.count != names.count {
            throw DataFileError(file: reference.path, "has \(reference.outputNames.count) output(s) but \(model.path) has \(names.count)")
        }
        var signal = [Double](repeating: 0, count: names.count), noise = signal
        var cosineSums = signal, cosineMins = [Double](repeating: 1, count: names.count)
        let progress = Progress(label: "eval", total: data.count)
        for start in stride(from: 0, to: data.count, by: batch) {
            let range = start..<min(start + batch, data.count)
            let x = data.batch(range)
            let outputs = try model.predictOutputs(x)
            let predicted = try data.labels.map { labels -> [Int] in
                let predicted = try argmax(outputs[0], expected: range.count, file: model.path)
                for (i, label) in zip(range, predicted) where label == labels[i] { correct += 1 }
                return predicted
            }
            if let reference {
                let referenceOutputs = try reference.predictOutputs(x)
                for (index, (a, b)) in zip(outputs, referenceOutputs).enumerated() {
                    guard a.shape == b.shape, a.shape.first == range.count else {
                        throw DataFileError(file: reference.path, "output '\(names[index])' is \(b.shape.shapeDescription) but \(model.path) gives \(a.shape.shapeDescription)")
                    }
                    for (x, y) in zip(a.scalars, b.scalars) {
                        signal[index] += Double(y) * Double(y)
                        noise[index] += (Double(x) - Double(y)) * (Double(x) - Double(y))
                    }
                    let cosines = cosines(a, b)
                    cosineSums[index] += cosines.reduce(0, +)
                    cosineMins[index] = min(cosineMins[index], cosines.min() ?? 1)
                }
                if let labels = data.labels, let predicted {
                    let referencePredicted = try argmax(referenceOutputs[0], expected: range.count, file: reference.path)
                    for (i, label) in zip(range, referencePredicted) where label == labels[i] { referenceCorrect += 1 }
                    agreeing += zip(predicted, referencePredicted).filter { $0 == $1 }.count
                }
            }
            progress.update(range.upperBound)
        }
        progress.finish()
        result.count = data.count
        let n = Double(data.count)
        if data.labels != nil {
            result.correct = correct
            result.top1 = Double(correct) / n
        }
        if reference != nil {
            result.outputs = names.indices.map { i in
                OutputAgreement(name: names[i], sqnr: noise[i] > 0 ? 10 * log10(signal[i] / noise[i]) : nil,
                                meanCosine: cosineSums[i] / n, minCosine: cosineMins[i])
            }
            if data.labels != nil {
                result.referenceTop1 = Double(referenceCorrect) / n
                result.agreement = Double(agreeing) / n
                result.meanCosine = cosineSums[0] / n
            }
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

    /// Cosine similarity of each sample pair of two [n, ...] tensors of the same shape.
    static func cosines(_ a: Tensor, _ b: Tensor) -> [Double] {
        let classes = a.count / max(a.shape[0], 1)
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
        var lines: [String] = []
        if let top1, let correct { lines.append(String(format: "top-1: %.2f%% (%d/%d)", top1 * 100, correct, count)) }
        else { lines.append("images: \(count) (no labels)") }
        if let normalization { lines.append("normalization: \(normalization)") }
        if let reference, let agreement, let meanCosine, let referenceTop1 {
            lines.append(String(format: "reference %@: top-1 %.2f%%, agreement %.2f%%, mean logit cosine %.6f",
                                reference, referenceTop1 * 100, agreement * 100, meanCosine))
        }
        if let outputs {
            let names = NameColumn(outputs.map(\.name) + ["output"])
            lines.append(names.cell("output") + "   SQNR dB  mean cosine  min cosine")
            for output in outputs {
                let sqnr = output.sqnr.map { String(format: "%8.2f", $0) } ?? "   exact"
                lines.append(names.cell(output.name) + "  " + sqnr + String(format: "  %11.6f  %10.6f", output.meanCosine, output.minCosine))
            }
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
