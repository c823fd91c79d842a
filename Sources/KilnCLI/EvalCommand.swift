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
            \(FashionMNIST.defaultDirectory)), from --images DIR (PNG and JPEG files in torchvision's ImageFolder \
            layout, DIR/<class>/*.png with classes in sorted order as labels; decoded batch by batch, resized, \
            cropped and normalized as --resize/--crop/--color and the input-domain flags say, else as the \
            student records, else to the model's input size) or from --inputs X.npy (float32, the model's input \
            layout) with --labels Y.npy (int64, int32 or uint8). With labels it prints top-1, top-5 and each \
            class's top-1. Without --labels (detectors, segmenters, any output) give \
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

    @Option(help: "A folder of PNG/JPEG images in ImageFolder layout (DIR/<class>/*.png), or of unlabelled images with --reference.")
    var images: String?

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

    @Option(help: "Evaluate only the first N images (of an image folder: in class order, then by file name).")
    var limit: Int?

    @Option(help: "Images per batch.")
    var batch: Int = 250

    @Flag(help: "Print one JSON object instead of text.")
    var json = false

    @OptionGroup(title: "Input domain (how image pixels are normalized)") var domain: InputDomainOptions

    @OptionGroup(title: "Images (with --images)") var image: ImageOptions

    @OptionGroup var compute: ComputeOptions

    func validate() throws {
        _ = try domain.stated()
        guard [dataset != nil, inputs != nil, images != nil].filter({ $0 }).count == 1 else {
            throw ValidationError("give one of --dataset fashion-mnist[=DIR], --images DIR or --inputs X.npy --labels Y.npy")
        }
        if labels != nil && inputs == nil { throw ValidationError("--labels goes with --inputs") }
        if inputs != nil && labels == nil && reference == nil {
            throw ValidationError("--inputs without --labels needs --reference (outputs are then compared with it)")
        }
        if labels == nil && dataset == nil && images == nil && (minTop1 != nil || maxDrop != nil || minAgreement != nil) {
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
                let images = try data.batch(0..<min(data.count, 1000))
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
    /// Class names by label, when the data names them (an image folder's subfolders).
    var classes: [String]? = nil
    /// How image pixels were preprocessed and normalized, for the report.
    let normalization: String?
    /// Images `range` as a batch tensor.
    let batch: (Range<Int>) throws -> Tensor

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
        } else if let images = options.images {
            let folder = try ImageFolder(images)
            let preprocessing = try options.image.resolve(inputShape: model.inputShape, metadata: model.metadata,
                                                          preset: options.domain.preprocess, file: model.path)
            let resolved = try options.domain.resolve(metadata: model.metadata, channels: preprocessing.color.channels,
                                                      file: model.path)
            let domain = resolved?.domain ?? .normalized(mean: [0], std: [1])
            if folder.classes.isEmpty && options.reference == nil {
                throw DataFileError(file: images, "holds images but no class subfolders (DIR/<class>/*.png): unlabelled images need --reference")
            }
            count = min(options.limit ?? folder.count, folder.count)
            labels = folder.classes.isEmpty ? nil : Array(folder.labels.prefix(count))
            classes = folder.classes.isEmpty ? nil : folder.classes
            normalization = "\(preprocessing), " + (resolved.map { "\($0.domain) (\($0.source))" } ?? "x/255 (none given)")
            batch = { try folder.batch($0, preprocessing: preprocessing, domain: domain) }
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

/// Top-1 of the images of one class.
struct ClassAccuracy: Encodable {
    var name: String
    var images: Int
    var top1: Double
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
    /// With labels and at least five classes: images whose label is among the five largest logits, as a fraction.
    var top5: Double?
    /// With labels: top-1 of each class (named when the data names its classes).
    var classes: [ClassAccuracy]?
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
        var correct = 0, referenceCorrect = 0, agreeing = 0, topFive = 0, classWidth = 0
        var perClass: [Int: (images: Int, correct: Int)] = [:]
        let names = model.outputNames
        if let reference, reference.outputNames.count != names.count {
            throw DataFileError(file: reference.path, "has \(reference.outputNames.count) output(s) but \(model.path) has \(names.count)")
        }
        var signal = [Double](repeating: 0, count: names.count), noise = signal
        var cosineSums = signal, cosineMins = [Double](repeating: 1, count: names.count)
        let progress = Progress(label: "eval", total: data.count)
        for start in stride(from: 0, to: data.count, by: batch) {
            let range = start..<min(start + batch, data.count)
            let x = try data.batch(range)
            let outputs = try model.predictOutputs(x)
            let predicted = try data.labels.map { labels -> [Int] in
                let predicted = try argmax(outputs[0], expected: range.count, file: model.path)
                classWidth = outputs[0].shape[1]
                for (row, (i, guess)) in zip(range, predicted).enumerated() {
                    perClass[labels[i], default: (0, 0)].images += 1
                    if guess == labels[i] {
                        correct += 1
                        perClass[labels[i], default: (0, 0)].correct += 1
                    }
                    if rank(of: labels[i], row: row, outputs[0]) < 5 { topFive += 1 }
                }
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
            if classWidth >= 5 { result.top5 = Double(topFive) / n }
            result.classes = perClass.keys.sorted().map { label in
                let tally = perClass[label]!
                let name = data.classes.map { label < $0.count ? $0[label] : "\(label)" } ?? "\(label)"
                return ClassAccuracy(name: name, images: tally.images, top1: Double(tally.correct) / Double(tally.images))
            }
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

    /// How many logits of row `row` of [n, classes] logits are larger than the one of `label` (0: the label is
    /// the argmax; a label outside the classes ranks last).
    static func rank(of label: Int, row: Int, _ logits: Tensor) -> Int {
        let classes = logits.shape[1]
        guard (0..<classes).contains(label) else { return classes }
        let values = logits.scalars[(row * classes)..<((row + 1) * classes)]
        let target = values[row * classes + label]
        return values.filter { $0 > target }.count
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
        if let top5 { lines.append(String(format: "top-5: %.2f%%", top5 * 100)) }
        if let classes, classes.count > 1 {
            let names = NameColumn(classes.map(\.name) + ["class"])
            lines.append(names.cell("class") + "  images   top-1")
            for entry in classes {
                lines.append(names.cell(entry.name) + String(format: "  %6d  %6.2f%%", entry.images, entry.top1 * 100))
            }
        }
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
