import ArgumentParser
import Foundation
import KilnGraph
import KilnRuntime
import KilnTensor

/// `kiln bench MODEL`: inference latency on a fixed input.
struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench", abstract: "Time inference of a model on a fixed input: min, median and p90 latency.")

    @Argument(help: "The model (.kiln student or .onnx teacher).")
    var model: String

    @Option(help: "Timed runs (after 10% warm-up runs, at least 3).")
    var runs: Int = 200

    @Option(help: "Batch size.")
    var batch: Int = 1

    @Flag(help: "Time forward + backward with the gradient taken with respect to the input (teachers only), as data synthesis does.")
    var backward = false

    @Flag(help: "After timing, run --runs more times measuring each layer (a student) or each kind of op forward and backward (a teacher with --backward), and print where the time goes.")
    var profile = false

    @Flag(help: "Print one JSON object instead of text.")
    var json = false

    @OptionGroup var compute: ComputeOptions

    func validate() throws {
        guard runs >= 1, batch >= 1 else { throw ValidationError("--runs and --batch must be at least 1") }
    }

    func run() throws {
        try reportingErrors {
            try compute.apply()
            let loaded = try LoadedModel(path: model)
            let shape: [Int]
            switch loaded.backend {
            case .teacher(_, let graph, _): shape = graph[graph.inputs[0]].shape
            case .student(let student): shape = student.inputs[0].shape
            }
            let concrete = shape.substitutingBatch(batch)
            let x = Tensor(shape: concrete, scalars: (0..<concrete.elementCount).map { Float($0 % 255) / 127 - 1 })
            if profile, case .teacher = loaded.backend, !backward {
                throw ValidationError("--profile needs a .kiln student, or a teacher with --backward")
            }
            var predict: () throws -> Void = { _ = try loaded.predictOutputs(x) }
            var profilePass: (() throws -> [LayerTime])?
            var opsPass: (() throws -> [OpTime])?
            var outputBuffers: [UnsafeMutableBufferPointer<Float>] = []
            defer { outputBuffers.forEach { $0.deallocate() } }
            if backward {
                guard case .teacher(_, let graph, _) = loaded.backend else {
                    throw ValidationError("--backward needs an ONNX teacher")
                }
                func pass(_ profile: TapeProfile?) throws {
                    let tape = Tape()
                    tape.profile = profile
                    let input = tape.leaf(x)
                    let output = try tape.run(graph, inputs: [input])[0]
                    _ = tape.gradients(of: output, withRespectTo: [input])
                }
                predict = { try pass(nil) }
                opsPass = { [runs] in
                    let profile = TapeProfile()
                    for _ in 0..<runs { try pass(profile) }
                    return OpTime.table(profile, runs: runs)
                }
            } else if case .student(let student) = loaded.backend {
                // The allocation-free path: one context, caller-owned buffers.
                let context = student.makeContext()
                // One buffer per output (a detector has several), kept for the whole benchmark.
                let outputs = student.outputs.map { UnsafeMutableBufferPointer<Float>.allocate(capacity: batch * $0.sampleCount) }
                outputBuffers = outputs
                predict = {
                    try x.scalars.withUnsafeBufferPointer { input in
                        try context.run(inputs: [input], outputs: outputs, batch: batch)
                    }
                }
                profilePass = { [runs, batch] in
                    var layers = LayerProfile(layers: student.student.layers.count)
                    try x.scalars.withUnsafeBufferPointer { input in
                        for _ in 0..<runs { try context.run(inputs: [input], outputs: outputs, batch: batch, profile: &layers) }
                    }
                    return student.student.layers.indices.map { index in
                        let layer = student.student.layers[index]
                        let ms = Double(layers.nanoseconds[index]) / Double(layers.runs) / 1e6
                        let macs = student.layerMACs[index] * batch
                        return LayerTime(name: layer.name, op: layer.op.displayName,
                                         outputShape: student.student.activations[layer.output].shape.substitutingBatch(batch),
                                         macs: macs, ms: ms, gmacPerSecond: ms > 0 ? Double(macs) / (ms * 1e6) : 0)
                    }
                }
            }
            for _ in 0..<max(3, runs / 10) { try predict() }
            var times: [Double] = []
            for _ in 0..<runs {
                let start = DispatchTime.now().uptimeNanoseconds
                try predict()
                times.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6)
            }
            times.sort()
            let macs: Int, kernels: String
            switch loaded.backend {
            case .teacher(_, let graph, _): (macs, kernels) = (graph.macsPerSample, "fp32 interpreter (OpenBLAS)")
            case .student(let student): (macs, kernels) = (student.macsPerSample, student.options.kernels.description)
            }
            let result = BenchResult(model: model, cpu: KernelChoice.cpuModel, kernels: kernels,
                                     mode: backward ? "forward+backward" : "forward", batch: batch, runs: runs,
                                     threads: Parallel.threadCount, peakRSSMegabytes: peakResidentMegabytes(),
                                     minMs: times[0], medianMs: times[times.count / 2],
                                     p90Ms: times[min(times.count - 1, times.count * 9 / 10)],
                                     gmacPerSecond: Double(macs * batch) / (times[times.count / 2] * 1e6),
                                     layers: profile ? try profilePass?() : nil, ops: profile ? try opsPass?() : nil)
            if json {
                try printJSON(result)
            } else {
                print("\(result.cpu), kernels: \(result.kernels)")
                print(String(format: "%@ (%@): batch %d, %d threads, %d runs: min %.3f ms, median %.3f ms, p90 %.3f ms, %.2f GMAC/s, peak RSS %.1f MB",
                             model, result.mode, batch, result.threads, runs, result.minMs, result.medianMs, result.p90Ms,
                             result.gmacPerSecond, result.peakRSSMegabytes))
                if let layers = result.layers { print(profileTable(layers), terminator: "") }
                if let ops = result.ops { print(OpTime.text(ops), terminator: "") }
            }
        }
    }
}

/// What `kiln bench` reports.
struct BenchResult: Encodable {
    var model: String
    /// The CPU's model name and the kernels that ran (a student's ISA variant, or the fp32 interpreter).
    var cpu: String
    var kernels: String
    var mode: String
    var batch: Int
    var runs: Int
    var threads: Int
    var peakRSSMegabytes: Double
    var minMs: Double
    var medianMs: Double
    var p90Ms: Double
    var gmacPerSecond: Double
    /// With --profile: mean wall time of each layer (a student) or of each kind of op (a teacher with --backward).
    var layers: [LayerTime]?
    var ops: [OpTime]?
}

/// One kind of op's share of a teacher's forward + backward pass (`kiln bench TEACHER --backward --profile`).
struct OpTime: Encodable {
    var op: String
    /// Ops of this kind per pass, and their mean forward and backward milliseconds per pass.
    var count: Int
    var forwardMs: Double
    var backwardMs: Double

    /// The profile's entries per pass, slowest first.
    static func table(_ profile: TapeProfile, runs: Int) -> [OpTime] {
        profile.entries.map { label, entry in
            OpTime(op: label, count: entry.count / runs, forwardMs: entry.forwardSeconds * 1e3 / Double(runs),
                   backwardMs: entry.backwardSeconds * 1e3 / Double(runs))
        }.sorted { $0.forwardMs + $0.backwardMs > $1.forwardMs + $1.backwardMs }
    }

    /// The table as text, each kind with its share of the timed total.
    static func text(_ ops: [OpTime]) -> String {
        let total = max(ops.reduce(0) { $0 + $1.forwardMs + $1.backwardMs }, 1e-12)
        var text = "\n\("op".padding(toLength: 28, withPad: " ", startingAt: 0))  ops  forward ms  backward ms      %\n"
        for op in ops {
            text += op.op.padding(toLength: 28, withPad: " ", startingAt: 0)
                + String(format: " %4d %11.3f %12.3f %6.1f\n", op.count, op.forwardMs, op.backwardMs,
                         100 * (op.forwardMs + op.backwardMs) / total)
        }
        return text
    }
}

/// One layer's share of an inference (`kiln bench --profile`).
struct LayerTime: Encodable {
    var name: String
    var op: String
    var outputShape: [Int]
    var macs: Int
    var ms: Double
    var gmacPerSecond: Double
}

/// The per-layer table and a summary per op kind, each with its share of the summed layer time.
func profileTable(_ layers: [LayerTime]) -> String {
    let total = max(layers.reduce(0) { $0 + $1.ms }, 1e-12)
    let names = NameColumn(layers.map(\.name))
    var text = "\n\(names.cell("layer"))  \("op".padding(toLength: 18, withPad: " ", startingAt: 0)) \("output".padding(toLength: 18, withPad: " ", startingAt: 0))       MMAC        ms  GMAC/s      %\n"
    for layer in layers {
        let shape = layer.outputShape.map(String.init).joined(separator: "×")
        text += names.cell(layer.name) + "  " + layer.op.padding(toLength: 18, withPad: " ", startingAt: 0) + " "
            + shape.padding(toLength: 18, withPad: " ", startingAt: 0)
            + String(format: " %10.1f %9.4f %7.1f %6.1f\n", Double(layer.macs) / 1e6, layer.ms, layer.gmacPerSecond, 100 * layer.ms / total)
    }
    text += "\n\("op".padding(toLength: 18, withPad: " ", startingAt: 0)) layers       MMAC        ms  GMAC/s      %\n"
    var order: [String] = []
    var sums: [String: (count: Int, macs: Int, ms: Double)] = [:]
    for layer in layers {
        if sums[layer.op] == nil { order.append(layer.op) }
        let old = sums[layer.op] ?? (0, 0, 0)
        sums[layer.op] = (old.count + 1, old.macs + layer.macs, old.ms + layer.ms)
    }
    for op in order.sorted(by: { sums[$0]!.ms > sums[$1]!.ms }) {
        let sum = sums[op]!
        text += op.padding(toLength: 18, withPad: " ", startingAt: 0)
            + String(format: " %6d %10.1f %9.4f %7.1f %6.1f\n", sum.count, Double(sum.macs) / 1e6, sum.ms,
                     sum.ms > 0 ? Double(sum.macs) / (sum.ms * 1e6) : 0, 100 * sum.ms / total)
    }
    return text
}

/// The process's peak resident set size (VmHWM in /proc/self/status), in megabytes.
func peakResidentMegabytes() -> Double {
    guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
          let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
          let kilobytes = Double(line.split(separator: " ").dropFirst().first ?? "") else { return 0 }
    return kilobytes / 1024
}
