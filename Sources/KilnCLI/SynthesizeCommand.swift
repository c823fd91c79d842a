import ArgumentParser
import Foundation
import KilnGraph
import KilnONNX
import KilnQuant
import KilnStudent
import KilnTensor

/// `kiln synthesize TEACHER.onnx -o calib.npy`.
struct SynthesizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "synthesize",
        abstract: "Make calibration images without real data, from the teacher's BatchNorm statistics.",
        discussion: """
            genie (default): for each batch a fresh generator and learnable latents are optimised with Adam so that \
            the batch's per-channel mean and std at every BatchNorm input match the running statistics (plus each \
            image's channels toward mean 0, std 1), with swing convolution (reflect-pad, random crop) before strided \
            convolutions. zeroq optimises the pixels directly; gaussian draws N(0, 1) noise. The same seed gives the \
            same images on the same machine. The output is written atomically.
            """)

    @Argument(help: "The fp32 teacher (.onnx) with BatchNormalization nodes.")
    var teacher: String

    @Option(name: .shortAndLong, help: "Where to write the images (float32 .npy).")
    var output: String

    @Option(help: "Number of images.")
    var count: Int = SynthesisOptions().count

    @Option(help: "genie, zeroq or gaussian.")
    var method: String = "genie"

    @Option(help: "Optimisation steps per batch.")
    var iterations: Int = SynthesisOptions().iterations

    @Option(help: "Images per batch.")
    var batch: Int = SynthesisOptions().batch

    @Option(help: "Random seed.")
    var seed: UInt64 = 0

    @Flag(help: "Print one JSON object instead of text.")
    var json = false

    @OptionGroup(title: "Input domain (what real inputs look like)") var domain: InputDomainOptions

    @OptionGroup var compute: ComputeOptions

    func validate() throws {
        _ = try domain.stated()
        guard SynthesisMethod(rawValue: method) != nil else { throw ValidationError("--method must be genie, zeroq or gaussian") }
        guard count >= 1, iterations >= 1, batch >= 2 else { throw ValidationError("--count and --iterations must be ≥ 1, --batch ≥ 2") }
    }

    func run() throws {
        try reportingErrors {
            try compute.apply()
            let graph = try importTeacher(try ONNXModel(contentsOf: teacher))
            var options = SynthesisOptions(method: SynthesisMethod(rawValue: method)!, count: count, iterations: iterations,
                                           batch: batch, seed: seed)
            options.count = count
            options.inputDomain = try domain.resolve(metadata: graph.metadata, channels: graph.inputChannels, file: teacher)?.domain
            let result = try Synthesis.run(graph, options: options, teacher: teacher)
            try NPY.write(result.images, to: output)
            let summary = SynthesisSummary(teacher: teacher, output: output, method: method, count: count,
                                           iterations: options.method == .gaussian ? 0 : iterations, batch: batch, seed: seed,
                                           initialLoss: result.initialLosses, finalLoss: result.finalLosses,
                                           secondsPer100Iterations: result.secondsPer100Iterations)
            if json {
                try printJSON(summary)
            } else {
                print(summary.text)
            }
        }
    }
}

/// Synthesis with a progress bar on stderr, shared by `synthesize` and `quantize`.
enum Synthesis {
    static func run(_ graph: Graph, options: SynthesisOptions, teacher: String) throws -> SynthesisResult {
        let batches = (options.count + options.batch - 1) / options.batch
        let bar = Progress(label: "synthesize", total: batches * options.iterations)
        defer { bar.finish() }
        do {
            return try Synthesizer.synthesize(graph, options: options) { p in
                bar.update(p.batch * p.iterations + p.iteration + 1,
                           detail: String(format: "batch %d/%d iteration %d loss %.4g", p.batch + 1, p.batches, p.iteration + 1, p.loss))
            }
        } catch let error as QuantizeError {
            throw DataFileError(file: teacher, error.message)
        }
    }
}

/// What `kiln synthesize` reports.
struct SynthesisSummary: Encodable {
    var teacher: String
    var output: String
    var method: String
    var count: Int
    var iterations: Int
    var batch: Int
    var seed: UInt64
    var initialLoss: [Float]
    var finalLoss: [Float]
    var secondsPer100Iterations: Double?

    var text: String {
        var lines = ["\(method): \(count) images from \(teacher) → \(output) (seed \(seed))"]
        if !finalLoss.isEmpty {
            let first = initialLoss.reduce(0, +) / Float(initialLoss.count), last = finalLoss.reduce(0, +) / Float(finalLoss.count)
            lines.append(String(format: "BatchNorm-statistics loss: %.4g → %.4g (%.0f× lower), mean over %d batches", first, last,
                                first / max(last, 1e-12), finalLoss.count))
        }
        if let secondsPer100Iterations {
            lines.append(String(format: "%.1f s per 100 iterations at batch %d", secondsPer100Iterations, batch))
        }
        return lines.joined(separator: "\n")
    }
}
