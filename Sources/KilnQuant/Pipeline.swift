import Foundation
import KilnGraph
import KilnStudent
import KilnTensor

/// Where a quantization run's calibration images come from.
public enum CalibrationSource: Sendable {
    /// Given images, [count, ...] in the teacher's input layout, with a description for the student's provenance
    /// (e.g. the file they came from).
    case images(Tensor, description: String)
    /// Synthesized from the teacher's BatchNorm statistics (zero-shot).
    case synthesized(SynthesisOptions)
}

/// Everything one quantization run needs: the teacher, the calibration source, the bit widths and the choices
/// that have defaults.
public struct QuantizationJob: Sendable {
    /// The fp32 teacher as imported (BatchNorm kept).
    public var teacher: Graph
    /// The teacher's name (file name) for provenance and errors.
    public var teacherName: String
    /// Where calibration images come from.
    public var calibration: CalibrationSource
    /// Bit widths of the student.
    public var bits: BitWidths = .w8a8
    /// Activation range method of the plain quantizer; nil: percentile(99.99) for given images and minmax for
    /// synthesized ones, whose extremes are signal, not outliers. (Block reconstruction initialises every range by
    /// its own MSE search.)
    public var range: RangeMethod?
    /// Whether to reconstruct blocks; nil: below W8A8 (or with `distill.allLayers`) yes, at W8A8 no.
    public var reconstruct: Bool?
    /// Reconstruction and low-bit choices (bit widths and `distill` are taken from `bits` and `reconstruct`).
    public var distill = DistillOptions()
    /// What real inputs look like; nil: what the teacher's metadata states, if anything (see `InputRange`).
    public var inputDomain: InputDomain?
    /// How images become inputs (resize, crop, color), recorded in the student for `kiln eval --images` and the
    /// runtime's pixel input; nil for inputs that are not images.
    public var imagePreprocessing: ImagePreprocessing?
    /// The classes' names by output index, recorded in the student (`ClassNames`); empty: none.
    public var classNames: [String] = []
    /// Seconds the whole run may take (nil: no limit). Synthesis must end by `synthesisShare` of it (by 85% without
    /// reconstruction) and reconstruction by 90%; the rest is for calibration and the report.
    public var timeLimit: Double?
    /// The part of `timeLimit` synthesis gets when blocks are reconstructed.
    public static let synthesisShare = 0.35

    /// A job with the defaults.
    public init(teacher: Graph, teacherName: String, calibration: CalibrationSource, bits: BitWidths = .w8a8) {
        self.teacher = teacher
        self.teacherName = teacherName
        self.calibration = calibration
        self.bits = bits
    }

    /// Whether the run reconstructs blocks (or at least takes the low-bit path of the distiller).
    public var usesDistiller: Bool { bits != .w8a8 || reconstruct == true || distill.allLayers }

    /// The range method of the plain quantizer after defaults.
    public var rangeMethod: RangeMethod {
        if let range { return range }
        if case .synthesized = calibration { return .minmax }
        return .percentile(99.99)
    }
}

/// What a run reports as it goes, and how it is stopped and resumed.
public struct QuantizationHooks {
    /// Synthesis progress, after every iteration.
    public var synthesis: ((SynthesisProgress) -> Void)?
    /// The input quantizer's range, once chosen and before the long work (e.g. to warn about an assumed domain).
    public var inputRange: ((InputRange) -> Void)?
    /// Reconstruction progress, after every iteration.
    public var distillation: ((DistillProgress) -> Void)?
    /// A finished block: its report, the number finished and the total.
    public var blockFinished: ((BlockReport, Int, Int) -> Void)?
    /// Polled between iterations; true stops the run with `DistillationInterrupted` after saving the checkpoint.
    public var shouldStop: (() -> Bool)?
    /// Where reconstruction saves its state after each block (JSON); nil: nowhere.
    public var checkpointPath: String?
    /// Continue from the checkpoint at `checkpointPath`, which must have been made by the same job.
    public var resume = false

    /// No hooks.
    public init() {}
}

/// The student and everything measured while making it.
public struct QuantizationOutcome: Sendable {
    /// The student, validated, with provenance metadata.
    public var student: StudentModel
    /// The calibration images used (given or synthesized) and their description.
    public var calibration: Tensor
    public var calibrationDescription: String
    /// Synthesis result when the images were synthesized.
    public var synthesis: SynthesisResult?
    /// Each layer's SQNR on the calibration set (every student, reconstructed or not).
    public var layers: [LayerReport]
    /// Per-block reconstruction losses (empty without reconstruction).
    public var blocks: [BlockReport]
    /// The input quantizer's range and why.
    public var inputRange: InputRange
    /// The activation range method ("mse" for the distiller's search).
    public var rangeDescription: String
    /// BatchNorm nodes folded into convolutions.
    public var foldedBatchNorms: Int
    /// Seconds of synthesis (0 for given images) and of quantization.
    public var synthesisSeconds: Double
    public var quantizationSeconds: Double
}

/// A checkpoint of a reconstruction run: the job it belongs to and the learned state of its finished blocks.
struct Checkpoint: Codable {
    var signature: String
    var state: DistillState
}

/// The one quantization pipeline: calibration images (given or synthesized), then plain calibration or block
/// reconstruction, then the student with its report. The CLI and the tests call it; errors name the teacher.
public enum QuantizationPipeline {
    /// Runs `job`. Errors in the teacher or the data are `DataFileError`s naming `job.teacherName`; a stop
    /// requested through `hooks.shouldStop` throws `DistillationInterrupted`.
    public static func run(_ job: QuantizationJob, hooks: QuantizationHooks = QuantizationHooks()) throws -> QuantizationOutcome {
        do {
            return try execute(job, hooks)
        } catch let error as QuantizeError {
            throw DataFileError(file: job.teacherName, error.message)
        }
    }

    static func execute(_ job: QuantizationJob, _ hooks: QuantizationHooks) throws -> QuantizationOutcome {
        // A graph that cannot become a student fails now, not after minutes of synthesis.
        try Quantizer.checkLowering(job.teacher, islands: !job.usesDistiller)
        let clock = ContinuousClock(), runStart = clock.now
        var synthesis: SynthesisResult?
        let images: Tensor, description: String
        var synthesisSeconds = 0.0
        switch job.calibration {
        case .images(let given, let text):
            (images, description) = (given, text)
        case .synthesized(var options):
            options.inputDomain = options.inputDomain ?? job.inputDomain
            if let limit = job.timeLimit {
                options.deadline = Deadline(secondsFromNow: limit * (job.usesDistiller ? QuantizationJob.synthesisShare : 0.85))
            }
            let start = clock.now
            let result = try Synthesizer.synthesize(job.teacher, options: options, progress: hooks.synthesis)
            synthesisSeconds = (clock.now - start).seconds
            synthesis = result
            images = result.images
            description = "\(options.method.rawValue) synthesis (\(options.count) images, \(result.iterationsDescription(of: options)), seed \(options.seed))"
        }
        let start = clock.now
        var job = job
        if let limit = job.timeLimit {
            job.distill.deadline = Deadline(secondsFromNow: limit * 0.9 - (clock.now - runStart).seconds)
        }
        var outcome = job.usesDistiller
            ? try distill(job, images, hooks)
            : try quantize(job, images, hooks)
        outcome.quantizationSeconds = (clock.now - start).seconds
        outcome.synthesisSeconds = synthesisSeconds
        outcome.synthesis = synthesis
        outcome.calibration = images
        outcome.calibrationDescription = description
        outcome.student.metadata = try metadata(job, outcome, count: images.shape[0])
        return outcome
    }

    /// Plain calibration at W8A8.
    static func quantize(_ job: QuantizationJob, _ images: Tensor, _ hooks: QuantizationHooks) throws -> QuantizationOutcome {
        let options = QuantizeOptions(range: job.rangeMethod, inputDomain: job.inputDomain)
        let result = try Quantizer.quantize(job.teacher, calibration: images, options: options, inputRangeChosen: hooks.inputRange)
        return QuantizationOutcome(student: result.student, calibration: images, calibrationDescription: "", layers: result.report,
                                   blocks: [], inputRange: result.inputRange, rangeDescription: job.rangeMethod.description,
                                   foldedBatchNorms: result.foldedBatchNorms, synthesisSeconds: 0, quantizationSeconds: 0)
    }

    /// Low bit widths and block reconstruction, checkpointed after each block.
    static func distill(_ job: QuantizationJob, _ images: Tensor, _ hooks: QuantizationHooks) throws -> QuantizationOutcome {
        var options = job.distill
        options.bits = job.bits
        options.distill = job.reconstruct ?? true
        options.inputDomain = job.inputDomain
        let distiller = try Distiller(teacher: job.teacher, options: options)
        let inputRange = try distiller.inputRange(images)
        hooks.inputRange?(inputRange)
        let signature = "\(URL(fileURLWithPath: job.teacherName).lastPathComponent) \(options.bits) "
            + "distill=\(options.distill) iterations=\(options.iterationsPerBlock) all-layers=\(options.allLayers) "
            + "images=\(images.shape[0]) seed=\(options.seed)"
        var resumed: DistillState?
        if hooks.resume {
            guard let path = hooks.checkpointPath, let bytes = FileManager.default.contents(atPath: path) else {
                throw DataFileError(file: hooks.checkpointPath ?? job.teacherName, "no checkpoint to resume from")
            }
            let saved: Checkpoint
            do {
                saved = try JSONDecoder().decode(Checkpoint.self, from: bytes)
            } catch {
                throw DataFileError(file: path, "not a Kiln checkpoint: \(error)")
            }
            guard saved.signature == signature else {
                throw DataFileError(file: path, "was made by another run (\(saved.signature)); this one is \(signature)")
            }
            resumed = saved.state
        }
        let result = try distiller.run(calibration: images, resume: resumed, progress: hooks.distillation, checkpoint: { state in
            if let path = hooks.checkpointPath {
                try AtomicFile.write(try JSONEncoder().encode(Checkpoint(signature: signature, state: state)), to: path)
            }
            if let report = state.reports.last { hooks.blockFinished?(report, state.completedBlocks, distiller.blockCount) }
        }, shouldStop: hooks.shouldStop)
        return QuantizationOutcome(student: result.student, calibration: images, calibrationDescription: "", layers: result.layers,
                                   blocks: result.state.reports, inputRange: inputRange, rangeDescription: RangeMethod.mse.description,
                                   foldedBatchNorms: distiller.foldedBatchNorms, synthesisSeconds: 0, quantizationSeconds: 0)
    }

    /// Provenance and the input domain the student was quantized for.
    static func metadata(_ job: QuantizationJob, _ outcome: QuantizationOutcome, count: Int) throws -> [String: String] {
        var metadata = job.teacher.metadata.filter { $0.key == "kiln.dataset" || $0.key == "kiln.exported_batch" }
        if let domain = outcome.inputRange.domain { metadata = domain.written(into: metadata) }
        if let preprocessing = job.imagePreprocessing { metadata = preprocessing.written(into: metadata) }
        if !job.classNames.isEmpty { metadata = try ClassNames.written(job.classNames, into: metadata) }
        metadata["kiln.input_quantized_range"] = "\(outcome.inputRange.range.lowerBound),\(outcome.inputRange.range.upperBound)"
        if let assumption = outcome.inputRange.assumption { metadata["kiln.input_domain_assumed"] = assumption }
        metadata["kiln.teacher"] = URL(fileURLWithPath: job.teacherName).lastPathComponent
        metadata["kiln.calibration"] = "\(outcome.calibrationDescription) (\(count) images)"
        metadata["kiln.range"] = outcome.rangeDescription
        if job.usesDistiller {
            let reconstruct = job.reconstruct ?? true
            metadata["kiln.scheme"] = "\(job.bits)\(job.distill.allLayers ? " (all layers)" : ", first and last layers 8-bit"): per-channel symmetric weights, asymmetric activations, int32 bias"
            metadata["kiln.distill"] = reconstruct ? "genie block reconstruction, \(job.distill.iterationsPerBlock) iterations per block" : "none"
        } else {
            metadata["kiln.scheme"] = "w8a8: int8 per-channel symmetric weights, uint8 asymmetric activations, int32 bias"
        }
        return metadata
    }
}
