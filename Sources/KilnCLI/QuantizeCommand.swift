import ArgumentParser
import Foundation
import Synchronization
import KilnGraph
import KilnONNX
import KilnQuant
import KilnRuntime
import KilnTensor

/// `kiln quantize TEACHER.onnx -o STUDENT.kiln --calibration X.npy|DIR`.
struct QuantizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "quantize",
        abstract: "Quantize an ONNX teacher into an int8 student (.kiln), with real or synthesized calibration data.",
        discussion: """
            BatchNorm is folded into the convolutions before them; Relu/Relu6/Clip after a Conv, Gemm or Add \
            becomes a clamp. Weights are int8, symmetric per output channel; activations uint8 with a zero point; \
            biases int32. Activation ranges come from the calibration images (float32 .npy in the model's input \
            layout, or a folder of them) by --range: minmax, percentile (of each tail, --percentile, default 99.99) \
            or mse (the clipping that minimises quantization error); the default is percentile for real data and \
            minmax for synthesized data, whose extremes are signal, not outliers. When the teacher's metadata gives its input \
            normalization (kiln.input_mean, kiln.input_std), the input is quantized over the whole normalized pixel \
            range instead. Without --calibration, Kiln synthesizes the \
            calibration set from the teacher's BatchNorm statistics (Genie; see `kiln synthesize --help`): by default \
            \(SynthesisOptions().count) images, \(SynthesisOptions().iterations) iterations per batch of \
            \(SynthesisOptions().batch), a few minutes on 2 cores for the Fashion-MNIST teachers; --save-calibration keeps \
            them. With --bits below w8a8 (or --distill genie) the student is distilled block by block on the calibration \
            images: every weight and activation step starts from a search over clipping ranges, then each block \
            (a residual or inverted residual block, a conv+activation group, the head) learns AdaRound rounding, \
            weight and activation steps with QDrop to reproduce the teacher's block; a checkpoint is written after \
            each block (OUTPUT.checkpoint.json), Ctrl-C stops cleanly and --resume continues. The student is \
            written atomically.
            """)

    @Argument(help: "The fp32 teacher (.onnx).")
    var teacher: String

    @Option(name: .shortAndLong, help: "Where to write the student (.kiln).")
    var output: String

    @Option(help: "Real calibration images: a float32 .npy [N, ...] or a folder of .npy files (default: synthesize them).")
    var calibration: String?

    @Option(name: .customLong("save-calibration"), help: "Write the synthesized calibration images to this .npy.")
    var saveCalibration: String?

    @Option(name: .customLong("synthetic-count"), help: "Synthesized images (without --calibration).")
    var syntheticCount: Int = SynthesisOptions().count

    @Option(name: .customLong("synthetic-iterations"), help: "Synthesis iterations per batch (without --calibration).")
    var syntheticIterations: Int = SynthesisOptions().iterations

    @Option(help: "Seed of the synthesis (without --calibration).")
    var seed: UInt64 = 0

    @Option(help: "Activation range method: minmax, percentile or mse (default: percentile with --calibration, minmax for synthesized data).")
    var range: String?

    @Option(help: "Percentile kept at each end with --range percentile.")
    var percentile: Double = 99.99

    @Option(name: .customLong("onnx-out"), help: "Also write the student as standard QDQ ONNX (runs in onnxruntime).")
    var onnxOut: String?

    @Option(help: "Bit widths: w8a8, w4a8, w4a4 or w2a4 (first and last layers stay 8-bit unless --all-layers).")
    var bits: String = "w8a8"

    @Option(help: "Block reconstruction: genie (AdaRound + learned steps + QDrop per block) or none (default: none for w8a8, genie otherwise).")
    var distill: String?

    @Option(name: .customLong("iterations-per-block"), help: "Reconstruction steps per block.")
    var iterationsPerBlock: Int = DistillOptions().iterationsPerBlock

    @Flag(name: .customLong("all-layers"), help: "Quantize the first and last layers to --bits too.")
    var allLayers = false

    @Flag(help: "Continue an interrupted reconstruction from OUTPUT.checkpoint.json.")
    var resume = false

    @Flag(help: "Print one JSON object instead of the table.")
    var json = false

    @OptionGroup(title: "Input domain (what real inputs look like)") var domain: InputDomainOptions

    @OptionGroup var compute: ComputeOptions

    func validate() throws {
        _ = try domain.stated()
        guard range.map({ ["minmax", "percentile", "mse"].contains($0) }) ?? true else {
            throw ValidationError("--range must be minmax, percentile or mse")
        }
        guard percentile > 50, percentile <= 100 else { throw ValidationError("--percentile must be in (50, 100]") }
        guard calibration == nil || saveCalibration == nil else {
            throw ValidationError("--save-calibration saves synthesized data; it does not go with --calibration")
        }
        guard syntheticCount >= 1, syntheticIterations >= 1 else { throw ValidationError("--synthetic-count and --synthetic-iterations must be ≥ 1") }
        guard BitWidths(bits) != nil else { throw ValidationError("--bits must look like w8a8, w4a8, w4a4, w2a4 (2–8 bits each)") }
        guard distill.map({ ["genie", "none"].contains($0) }) ?? true else { throw ValidationError("--distill must be genie or none") }
        guard iterationsPerBlock >= 1 else { throw ValidationError("--iterations-per-block must be at least 1") }
    }

    /// Whether this run reconstructs blocks or needs the lower-bit path.
    var usesDistiller: Bool {
        let widths = BitWidths(bits)!
        return widths != .w8a8 || (distill ?? "none") == "genie" || allLayers
    }

    func run() throws {
        try reportingErrors {
            try compute.apply()
            let onnx = try ONNXModel(contentsOf: teacher)
            let graph = try importTeacher(onnx)
            let inputDomain = try domain.resolve(metadata: graph.metadata, channels: graph.inputChannels, file: teacher)?.domain
            let data: Tensor
            let source: String
            if let calibration {
                data = try CalibrationSet.load(calibration)
                source = calibration
            } else {
                var options = SynthesisOptions(count: syntheticCount, iterations: syntheticIterations, seed: seed)
                options.batch = min(options.batch, max(2, syntheticCount))
                options.inputDomain = inputDomain
                data = try Synthesis.run(graph, options: options, teacher: teacher).images
                source = "genie synthesis (\(syntheticCount) images, \(syntheticIterations) iterations, seed \(seed))"
                if let saveCalibration { try NPY.write(data, to: saveCalibration) }
            }
            // Synthesized images are bounded and have no outliers to clip: their extremes are signal.
            let chosen = range ?? (calibration == nil ? "minmax" : "percentile")
            let method: RangeMethod = chosen == "minmax" ? .minmax : chosen == "mse" ? .mse : .percentile(percentile)
            let start = Date()
            if usesDistiller {
                try runDistiller(graph, data, inputDomain: inputDomain, source: source, start: start)
                return
            }
            var result: QuantizationResult
            do {
                result = try Quantizer.quantize(graph, calibration: data, options: QuantizeOptions(range: method, inputDomain: inputDomain))
            } catch let error as QuantizeError {
                throw DataFileError(file: teacher, error.message)
            }
            warnIfAssumed(result.inputRange)
            result.student.metadata = studentMetadata(graph: graph, method: method, calibration: source, count: data.shape[0],
                                                      inputRange: result.inputRange)
            try AtomicFile.write(Data(try KilnFile.encode(result.student)), to: output)
            if let onnxOut {
                try AtomicFile.write(try QDQExporter.export(result.student), to: onnxOut)
            }
            let summary = QuantizeSummary(teacher: teacher, student: output, onnx: onnxOut, calibration: source,
                                          calibrationImages: data.shape[0], range: method.description,
                                          foldedBatchNorms: result.foldedBatchNorms, seconds: Date().timeIntervalSince(start),
                                          layers: result.report)
            if json {
                try printJSON(summary)
            } else {
                print(summary.text)
            }
        }
    }

    /// Quantization with block reconstruction, checkpointed after each block; Ctrl-C stops cleanly.
    func runDistiller(_ graph: Graph, _ data: Tensor, inputDomain: InputDomain?, source: String, start: Date) throws {
        var options = DistillOptions(bits: BitWidths(bits)!, distill: (distill ?? "genie") == "genie",
                                     iterationsPerBlock: iterationsPerBlock)
        options.allLayers = allLayers
        options.seed = seed
        options.inputDomain = inputDomain
        let distiller: Distiller
        let inputRange: InputRange
        do {
            distiller = try Distiller(teacher: graph, options: options)
            inputRange = try distiller.inputRange(data)
        } catch let error as QuantizeError {
            throw DataFileError(file: teacher, error.message)
        }
        warnIfAssumed(inputRange)
        let checkpointPath = output + ".checkpoint.json"
        let signature = "\(URL(fileURLWithPath: teacher).lastPathComponent) \(options.bits) distill=\(options.distill) iterations=\(iterationsPerBlock) all-layers=\(allLayers) images=\(data.shape[0]) seed=\(seed)"
        var resumed: DistillState?
        if resume {
            guard let bytes = FileManager.default.contents(atPath: checkpointPath) else {
                throw DataFileError(file: checkpointPath, "no checkpoint to resume from")
            }
            let saved: Checkpoint
            do {
                saved = try JSONDecoder().decode(Checkpoint.self, from: bytes)
            } catch {
                throw DataFileError(file: checkpointPath, "not a Kiln checkpoint: \(error)")
            }
            guard saved.signature == signature else {
                throw DataFileError(file: checkpointPath, "was made by another run (\(saved.signature)); this one is \(signature)")
            }
            resumed = saved.state
        }
        installInterruptHandler()
        let bar = Progress(label: "distill", total: distiller.blockCount * iterationsPerBlock)
        let result: (student: StudentModel, state: DistillState)
        do {
            result = try distiller.run(calibration: data, resume: resumed, progress: { p in
                bar.update(p.block * p.iterations + p.iteration + 1,
                           detail: String(format: "block %d/%d loss %.4g", p.block + 1, p.blocks, p.loss))
            }, checkpoint: { state in
                try AtomicFile.write(try JSONEncoder().encode(Checkpoint(signature: signature, state: state)), to: checkpointPath)
                // One line per finished block (kept in logs; the bar redraws below it on a terminal).
                if let report = state.reports.last {
                    let done = state.completedBlocks, total = distiller.blockCount
                    let elapsed = Date().timeIntervalSince(start)
                    let fresh = done - (resumed?.completedBlocks ?? 0)
                    let eta = fresh > 0 ? elapsed / Double(fresh) * Double(total - done) : 0
                    bar.finish()
                    let outcome = report.keptInitialization
                        ? String(format: "loss %.4g kept (reconstruction reached %.4g)", report.lossBefore, report.lossReconstructed)
                        : String(format: "loss %.4g → %.4g", report.lossBefore, report.lossAfter)
                    FileHandle.standardError.write(Data(String(format: "block %d/%d %@: %@ in %.1f s, ETA %.0f s\n",
                                                               done, total, report.block, outcome, report.seconds, eta).utf8))
                }
            }, shouldStop: { interruptRequested.load(ordering: .relaxed) })
        } catch is DistillationInterrupted {
            bar.finish()
            FileHandle.standardError.write(Data("kiln: interrupted; finished blocks are saved in \(checkpointPath) — continue with --resume\n".utf8))
            throw ExitCode(130)
        } catch let error as QuantizeError {
            throw DataFileError(file: teacher, error.message)
        }
        bar.finish()
        var student = result.student
        student.metadata = studentMetadata(graph: graph, method: .mse, calibration: source, count: data.shape[0], inputRange: inputRange)
        student.metadata["kiln.scheme"] = "\(options.bits)\(allLayers ? " (all layers)" : ", first and last layers 8-bit"): per-channel symmetric weights, asymmetric activations, int32 bias"
        student.metadata["kiln.distill"] = options.distill ? "genie block reconstruction, \(iterationsPerBlock) iterations per block" : "none"
        try AtomicFile.write(Data(try KilnFile.encode(student)), to: output)
        if let onnxOut { try AtomicFile.write(try QDQExporter.export(student), to: onnxOut) }
        try? FileManager.default.removeItem(atPath: checkpointPath)
        let summary = DistillSummary(teacher: teacher, student: output, calibration: source, calibrationImages: data.shape[0],
                                     bits: options.bits.description, distill: options.distill, seconds: Date().timeIntervalSince(start),
                                     blocks: result.state.reports)
        if json { try printJSON(summary) } else { print(summary.text) }
    }

    /// Metadata carried into the student: provenance and the input domain it was quantized for.
    func studentMetadata(graph: Graph, method: RangeMethod, calibration: String, count: Int, inputRange: InputRange) -> [String: String] {
        var metadata = graph.metadata.filter { $0.key == "kiln.dataset" || $0.key == "kiln.exported_batch" }
        if let domain = inputRange.domain { metadata = domain.written(into: metadata) }
        metadata["kiln.input_quantized_range"] = "\(inputRange.range.lowerBound),\(inputRange.range.upperBound)"
        if let assumption = inputRange.assumption { metadata["kiln.input_domain_assumed"] = assumption }
        metadata["kiln.teacher"] = URL(fileURLWithPath: teacher).lastPathComponent
        metadata["kiln.calibration"] = "\(calibration) (\(count) images)"
        metadata["kiln.range"] = method.description
        metadata["kiln.scheme"] = "w8a8: int8 per-channel symmetric weights, uint8 asymmetric activations, int32 bias"
        return metadata
    }
}

/// Prints the one warning of a quantization whose input domain was not known.
func warnIfAssumed(_ inputRange: InputRange) {
    guard let assumption = inputRange.assumption else { return }
    let range = String(format: "[%.3g, %.3g]", inputRange.range.lowerBound, inputRange.range.upperBound)
    FileHandle.standardError.write(Data("""
        kiln: warning: the input's domain is unknown (no --preprocess, --input-mean/--input-std or --input-range, and \
        no kiln.input_* metadata in the teacher): the input quantizer covers \(range), \(assumption); real inputs \
        outside it are clipped. State the preprocessing, e.g. --preprocess imagenet|unit|signed-unit|pixels or \
        --input-mean 0.485,0.456,0.406 --input-std 0.229,0.224,0.225

        """.utf8))
}

/// Calibration data on disk: one float32 `.npy` or a folder of them, joined along the first dimension.
enum CalibrationSet {
    static func load(_ path: String) throws -> Tensor {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw DataFileError(file: path, "no such file or folder")
        }
        guard isDirectory.boolValue else { return try NPY.readTensor(path) }
        let files = try FileManager.default.contentsOfDirectory(atPath: path).filter { $0.hasSuffix(".npy") }.sorted()
        guard !files.isEmpty else { throw DataFileError(file: path, "the folder holds no .npy files") }
        let parts = try files.map { try NPY.readTensor("\(path)/\($0)") }
        for (file, part) in zip(files, parts) where Array(part.shape.dropFirst()) != Array(parts[0].shape.dropFirst()) {
            throw DataFileError(file: "\(path)/\(file)", "shape \(part.shape.shapeDescription) does not match \(parts[0].shape.shapeDescription) of \(files[0])")
        }
        return Tensor(shape: [parts.reduce(0) { $0 + $1.shape[0] }] + parts[0].shape.dropFirst(),
                      scalars: parts.flatMap(\.scalars))
    }
}

/// The name column of a table: as wide as the longest name (5 to 40 characters); longer names keep their end.
struct NameColumn {
    let width: Int

    init(_ names: [String]) { width = min(max(names.map(\.count).max() ?? 5, 5), 40) }

    /// `name` cut to the width (with a leading "…") and padded to it.
    func cell(_ name: String) -> String {
        let fitted = name.count > width ? "…" + name.suffix(width - 1) : name
        return fitted.padding(toLength: width, withPad: " ", startingAt: 0)
    }
}

/// What `kiln quantize` reports.
struct QuantizeSummary: Encodable {
    var teacher: String
    var student: String
    var onnx: String?
    var calibration: String
    var calibrationImages: Int
    var range: String
    var foldedBatchNorms: Int
    var seconds: Double
    var layers: [LayerReport]

    var text: String {
        func scale(_ v: Float?) -> String { v.map { String(format: "%.3g", $0) } ?? "-" }
        let names = NameColumn(layers.map(\.layer))
        // String(format:) ignores field widths for %@ on Linux, so the text columns are padded here.
        func row(_ name: String, _ op: String, _ weights: String, _ activation: String, _ sqnr: String) -> String {
            names.cell(name) + "  " + [(op, 14), (weights, 19), (activation, 16)].map { text, width in
                text.padding(toLength: max(width, text.count), withPad: " ", startingAt: 0)
            }.joined(separator: " ") + " " + String(repeating: " ", count: max(0, 8 - sqnr.count)) + sqnr
        }
        var lines = [row("layer", "op", "weight scale", "act scale (zp)", "SQNR dB")]
        for layer in layers {
            let weights = layer.weightScaleMin.map { "\(scale($0))–\(scale(layer.weightScaleMax))" } ?? "-"
            lines.append(row(layer.layer, layer.op, weights, "\(scale(layer.activationScale)) (\(layer.zeroPoint))",
                             layer.sqnr.map { String(format: "%.1f", $0) } ?? "-"))
        }
        lines.append("")
        lines.append("calibration: \(calibrationImages) images from \(calibration), range \(range); \(foldedBatchNorms) BatchNorms folded")
        lines.append("wrote \(student)" + (onnx.map { " and \($0)" } ?? "") + String(format: " in %.1f s", seconds))
        return lines.joined(separator: "\n")
    }
}

/// What a reconstruction checkpoint holds: the run it belongs to and the learned state of its finished blocks.
struct Checkpoint: Codable {
    var signature: String
    var state: DistillState
}

/// Set by SIGINT; long runs poll it and stop cleanly.
let interruptRequested = Atomic<Bool>(false)

/// Makes Ctrl-C request a clean stop instead of killing the process (a second Ctrl-C kills it).
/// SIGINT is also unblocked: a parent (a test runner, a service supervisor) may have blocked it for its children.
func installInterruptHandler() {
    var interrupt = sigset_t()
    sigemptyset(&interrupt)
    sigaddset(&interrupt, SIGINT)
    pthread_sigmask(SIG_UNBLOCK, &interrupt, nil)
    signal(SIGINT) { _ in
        if interruptRequested.load(ordering: .relaxed) { _exit(130) }
        interruptRequested.store(true, ordering: .relaxed)
    }
}

/// What `kiln quantize` reports after block reconstruction.
struct DistillSummary: Encodable {
    var teacher: String
    var student: String
    var calibration: String
    var calibrationImages: Int
    var bits: String
    var distill: Bool
    var seconds: Double
    var blocks: [BlockReport]

    var text: String {
        let names = NameColumn(blocks.map(\.block))
        var lines = [names.cell("block") + "  nodes  loss before   loss after   seconds"]
        for b in blocks {
            lines.append(names.cell(b.block)
                         + String(format: "  %5d  %11.5g  %11.5g  %8.1f", b.nodes, b.lossBefore, b.lossAfter, b.seconds)
                         + (b.keptInitialization ? String(format: "  kept initialisation (reconstructed: %.5g)", b.lossReconstructed) : ""))
        }
        lines.append("")
        let kept = blocks.filter(\.keptInitialization).count
        if kept > 0 { lines.append("\(kept) of \(blocks.count) blocks kept their initialisation: reconstruction did not lower their loss") }
        lines.append("\(bits)\(distill ? ", block reconstruction" : ", no reconstruction"): \(calibrationImages) calibration images from \(calibration)")
        lines.append("wrote \(student)" + String(format: " in %.1f s", seconds))
        return lines.joined(separator: "\n")
    }
}
