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
            calibration set from the teacher's BatchNorm statistics (Genie; see `kiln synthesize --help`); --budget sets \
            how much work that and reconstruction take: the default is up to 128 images, 200 iterations per batch of \
            \(SynthesisOptions().batch) and 500 reconstruction iterations per block, with fewer images and iterations for \
            teachers that cost more per image (a ResNet-18 at 224×224 gets 16 images), and each batch stops once its \
            loss stops falling; --time-limit caps the wall time instead. --save-calibration keeps the images. With --bits below w8a8 (or --distill genie) the student is distilled block by block on the calibration \
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

    @Option(help: "Real calibration images: a float32 .npy [N, ...], a folder of .npy files, or a folder of PNG/JPEG images (subfolders included; preprocessed as the image flags say) (default: synthesize them).")
    var calibration: String?

    @Option(help: "Also write a self-contained HTML report (per-layer SQNR and ranges as charts, bit widths, fp32 islands, per-block losses, timings) to this file.")
    var report: String?

    @Option(name: .customLong("class-names"), help: "A text file of class names, one per line in output order, recorded in the student (default: the subfolders of an ImageFolder --calibration).")
    var classNames: String?

    @Option(name: .customLong("save-calibration"), help: "Write the synthesized calibration images to this .npy.")
    var saveCalibration: String?

    @Option(name: .customLong("synthetic-count"), help: "Synthesized images (without --calibration; default: from --budget).")
    var syntheticCount: Int?

    @Option(name: .customLong("synthetic-iterations"), help: "Synthesis iterations per batch at most (without --calibration; default: from --budget).")
    var syntheticIterations: Int?

    @OptionGroup(title: "Budget (how much work zero-shot quantization takes)") var budget: BudgetOptions

    @Option(help: "Seed of the synthesis (without --calibration).")
    var seed: UInt64 = 0

    @Option(help: "Activation range method: minmax, percentile or mse (default: percentile with --calibration, minmax for synthesized data).")
    var range: String?

    @Option(help: "Percentile kept at each end with --range percentile.")
    var percentile: Double = 99.99

    @Option(name: .customLong("onnx-out"), help: "Also write the student as standard QDQ ONNX (runs in onnxruntime).")
    var onnxOut: String?

    @Option(help: "Bit widths: w8a8, w7a8, w4a8, w4a4 or w2a4 (first and last layers stay 8-bit unless --all-layers; w7a8's ±63 weights run exactly on vpmaddubsw on CPUs without VNNI).")
    var bits: String = "w8a8"

    @Option(help: "Block reconstruction: genie (AdaRound + learned steps + QDrop per block) or none (default: none for w8a8, genie otherwise).")
    var distill: String?

    @Option(name: .customLong("iterations-per-block"), help: "Reconstruction steps per block (default: from --budget).")
    var iterationsPerBlock: Int?

    @Flag(name: .customLong("all-layers"), help: "Quantize the first and last layers to --bits too.")
    var allLayers = false

    @Flag(help: "Continue an interrupted reconstruction from OUTPUT.checkpoint.json.")
    var resume = false

    @Flag(help: "Print one JSON object instead of the table.")
    var json = false

    @OptionGroup(title: "Input domain (what real inputs look like)") var domain: InputDomainOptions

    @OptionGroup(title: "Images (how image files become inputs; recorded in the student)") var image: ImageOptions

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
        guard (syntheticCount ?? 1) >= 1, (syntheticIterations ?? 1) >= 1 else { throw ValidationError("--synthetic-count and --synthetic-iterations must be ≥ 1") }
        guard BitWidths(bits) != nil else { throw ValidationError("--bits must look like w8a8, w7a8, w4a8, w4a4, w2a4 (2–8 bits each)") }
        guard distill.map({ ["genie", "none"].contains($0) }) ?? true else { throw ValidationError("--distill must be genie or none") }
        guard (iterationsPerBlock ?? 1) >= 1 else { throw ValidationError("--iterations-per-block must be at least 1") }
    }

    /// The pipeline's job for these arguments.
    func job(_ graph: Graph, inputDomain: InputDomain?) throws -> QuantizationJob {
        let source: CalibrationSource
        let plan = budget.plan(for: graph)
        let shape = graph.inputs.first.map { graph[$0].shape } ?? []
        // Image inputs ([N, 1 or 3, H, W]) record their preprocessing; other inputs only if image flags ask.
        let imageLike = shape.count == 4 && [1, 3].contains(shape[1])
        let preprocessing = imageLike || image.given
            ? try image.resolve(inputShape: shape, metadata: graph.metadata, preset: domain.preprocess, file: teacher) : nil
        var inputDomain = inputDomain
        var folderClasses: [String] = []
        if let calibration, let folder = try CalibrationSet.imageFolder(calibration) {
            guard let preprocessing else {
                throw DataFileError(file: calibration, "holds images but the teacher's input \(shape.shapeDescription) is not [N, 1 or 3, H, W]")
            }
            if inputDomain == nil {
                inputDomain = .normalized(mean: [0], std: [1])
                FileHandle.standardError.write(Data("kiln: warning: no input domain stated (--preprocess, --input-mean/--input-std or --input-range) or recorded in the teacher; the images of \(calibration) are scaled to x/255\n".utf8))
            }
            source = .images(try folder.batch(0..<folder.count, preprocessing: preprocessing, domain: inputDomain!),
                             description: calibration)
            folderClasses = folder.classes
        } else if let calibration {
            source = .images(try CalibrationSet.load(calibration), description: calibration)
        } else {
            let count = syntheticCount ?? plan.images
            var options = SynthesisOptions(count: count, iterations: syntheticIterations ?? plan.iterations, seed: seed)
            options.batch = min(options.batch, max(2, count))
            options.plateau = budget.plateau
            source = .synthesized(options)
        }
        var job = QuantizationJob(teacher: graph, teacherName: teacher, calibration: source, bits: BitWidths(bits)!)
        job.range = range.map { $0 == "minmax" ? .minmax : $0 == "mse" ? .mse : .percentile(percentile) }
        job.reconstruct = distill.map { $0 == "genie" }
        job.distill.iterationsPerBlock = iterationsPerBlock ?? plan.iterationsPerBlock
        job.timeLimit = budget.timeLimit
        job.distill.allLayers = allLayers
        job.distill.seed = seed
        job.inputDomain = inputDomain
        job.imagePreprocessing = preprocessing
        if let classNames {
            guard let text = try? String(contentsOfFile: classNames, encoding: .utf8) else {
                throw DataFileError(file: classNames, "cannot be read as UTF-8 text")
            }
            job.classNames = text.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            guard !job.classNames.isEmpty else { throw DataFileError(file: classNames, "holds no class names") }
        } else {
            job.classNames = folderClasses
        }
        return job
    }

    func run() throws {
        try reportingErrors {
            try compute.apply()
            let graph = try importTeacher(try ONNXModel(contentsOf: teacher))
            let inputDomain = try domain.resolve(metadata: graph.metadata, channels: graph.inputChannels, file: teacher)?.domain
            let job = try job(graph, inputDomain: inputDomain)
            if calibration == nil { budget.report(for: graph) }
            let checkpointPath = output + ".checkpoint.json"
            var hooks = QuantizationHooks()
            var bars: [Progress] = []
            let start = Date()
            var resumedBlocks = 0
            if case .synthesized(let options) = job.calibration {
                let bar = Progress(label: "synthesize", total: (options.count + options.batch - 1) / options.batch * options.iterations)
                bars.append(bar)
                hooks.synthesis = { p in
                    bar.update(p.batch * p.iterations + p.iteration + 1,
                               detail: String(format: "batch %d/%d iteration %d loss %.4g", p.batch + 1, p.batches, p.iteration + 1, p.loss))
                    if p.batch + 1 == p.batches && p.iteration + 1 == p.iterations { bar.finish() }
                }
            }
            hooks.inputRange = { warnIfAssumed($0) }
            if job.usesDistiller {
                hooks.checkpointPath = checkpointPath
                hooks.resume = resume
                if resume, let bytes = FileManager.default.contents(atPath: checkpointPath),
                   let object = try? JSONSerialization.jsonObject(with: bytes) as? [String: Any],
                   let state = object["state"] as? [String: Any] {
                    resumedBlocks = state["completedBlocks"] as? Int ?? 0
                }
                let bar = Progress(label: "distill", total: 1)
                bars.append(bar)
                hooks.distillation = { p in
                    bar.total = p.blocks * p.iterations
                    bar.update(p.block * p.iterations + p.iteration + 1, detail: String(format: "block %d/%d loss %.4g", p.block + 1, p.blocks, p.loss))
                }
                let distillStart = Date()
                hooks.blockFinished = { report, done, total in
                    // One line per finished block (kept in logs; the bar redraws below it on a terminal).
                    let fresh = done - resumedBlocks
                    let elapsed = Date().timeIntervalSince(distillStart)
                    let eta = fresh > 0 ? elapsed / Double(fresh) * Double(total - done) : 0
                    bar.finish()
                    let outcome = report.keptInitialization
                        ? String(format: "loss %.4g kept (reconstruction reached %.4g)", report.lossBefore, report.lossReconstructed)
                        : String(format: "loss %.4g → %.4g", report.lossBefore, report.lossAfter)
                    FileHandle.standardError.write(Data(String(format: "block %d/%d %@: %@ in %.1f s, ETA %.0f s\n",
                                                               done, total, report.block, outcome, report.seconds, eta).utf8))
                }
                hooks.shouldStop = { interruptRequested.load(ordering: .relaxed) }
                installInterruptHandler()
            }
            let outcome: QuantizationOutcome
            do {
                outcome = try QuantizationPipeline.run(job, hooks: hooks)
            } catch is DistillationInterrupted {
                for bar in bars { bar.finish() }
                FileHandle.standardError.write(Data("kiln: interrupted; finished blocks are saved in \(checkpointPath) — continue with --resume\n".utf8))
                throw ExitCode(130)
            }
            for bar in bars { bar.finish() }
            if let saveCalibration, outcome.synthesis != nil { try NPY.write(outcome.calibration, to: saveCalibration) }
            try AtomicFile.write(Data(try KilnFile.encode(outcome.student)), to: output)
            if let onnxOut { try AtomicFile.write(try QDQExporter.export(outcome.student), to: onnxOut) }
            if job.usesDistiller { try? FileManager.default.removeItem(atPath: checkpointPath) }
            let summary = QuantizeSummary(outcome, job: job, teacher: teacher, student: output, onnx: onnxOut,
                                          seconds: Date().timeIntervalSince(start))
            if let report {
                var facts: [(String, String)] = []
                if let preprocessing = job.imagePreprocessing { facts.append(("images", preprocessing.description)) }
                if let domain = outcome.inputRange.domain { facts.append(("input domain", domain.description)) }
                if !job.classNames.isEmpty { facts.append(("classes", job.classNames.joined(separator: ", "))) }
                facts.append(("machine", "\(KernelChoice.cpuModel), kernels \(try requestedKernels())"))
                try AtomicFile.write(Data(HTMLReport(summary: summary, facts: facts).page.utf8), to: report)
            }
            if json { try printJSON(summary) } else { print(summary.text) }
        }
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

/// What `kiln quantize` reports: every student's per-layer table, and the per-block table after reconstruction.
struct QuantizeSummary: Encodable {
    var teacher: String
    var student: String
    var onnx: String?
    var calibration: String
    var calibrationImages: Int
    var bits: String
    var range: String
    var reconstruction: Bool
    var foldedBatchNorms: Int
    var inputRange: [Float]
    var inputDomainAssumed: String?
    var synthesisSeconds: Double
    var seconds: Double
    var layers: [LayerReport]
    var blocks: [BlockReport]

    init(_ outcome: QuantizationOutcome, job: QuantizationJob, teacher: String, student: String, onnx: String?, seconds: Double) {
        self.teacher = teacher
        self.student = student
        self.onnx = onnx
        calibration = outcome.calibrationDescription
        calibrationImages = outcome.calibration.shape[0]
        bits = job.bits.description
        range = outcome.rangeDescription
        reconstruction = job.usesDistiller && (job.reconstruct ?? true)
        foldedBatchNorms = outcome.foldedBatchNorms
        inputRange = [outcome.inputRange.range.lowerBound, outcome.inputRange.range.upperBound]
        inputDomainAssumed = outcome.inputRange.assumption
        synthesisSeconds = outcome.synthesisSeconds
        self.seconds = seconds
        layers = outcome.layers
        blocks = outcome.blocks
    }

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
            lines.append(row(layer.layer, layer.op, weights, layer.activationScale == 0 ? "fp32 island" : "\(scale(layer.activationScale)) (\(layer.zeroPoint))",
                             layer.sqnr.map { String(format: "%.1f", $0) } ?? "-"))
        }
        if !blocks.isEmpty {
            let blockNames = NameColumn(blocks.map(\.block))
            lines.append("")
            lines.append(blockNames.cell("block") + "  nodes  loss before   loss after   seconds")
            for b in blocks {
                lines.append(blockNames.cell(b.block)
                             + String(format: "  %5d  %11.5g  %11.5g  %8.1f", b.nodes, b.lossBefore, b.lossAfter, b.seconds)
                             + (b.keptInitialization ? String(format: "  kept initialisation (reconstructed: %.5g)", b.lossReconstructed) : ""))
            }
            let kept = blocks.filter(\.keptInitialization).count
            if kept > 0 { lines.append("\(kept) of \(blocks.count) blocks kept their initialisation: reconstruction did not lower their loss") }
        }
        lines.append("")
        lines.append("\(bits)\(reconstruction ? ", block reconstruction" : ""): \(calibrationImages) calibration images from \(calibration), range \(range); \(foldedBatchNorms) BatchNorms folded")
        lines.append("wrote \(student)" + (onnx.map { " and \($0)" } ?? "") + String(format: " in %.1f s", seconds))
        return lines.joined(separator: "\n")
    }
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
