import ArgumentParser
import Foundation
import Glibc
import KilnGraph
import KilnQuant
import KilnTensor

/// The `kiln` command: inspect, evaluate, quantize and run ONNX teachers and int8 students.
@main
struct Kiln: ParsableCommand {
    static func main() {
        keepLargeAllocationsInHeap()
        // Kiln parallelises around OpenBLAS; its own idle threads would only compete with Kiln's.
        BLAS.useSingleThread()
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch {
            exit(withError: error)
        }
    }

    static let configuration = CommandConfiguration(
        commandName: "kiln",
        abstract: "Zero-shot int8 quantization and inference for ONNX CNNs.",
        subcommands: [InspectCommand.self, EvalCommand.self, RunCommand.self, SynthesizeCommand.self, QuantizeCommand.self, BenchCommand.self])
}

/// Runs a command body, turning any error into one line on stderr and exit status 1.
func reportingErrors(_ body: () throws -> Void) throws {
    do {
        try body()
    } catch let exit as ExitCode {
        throw exit
    } catch {
        FileHandle.standardError.write(Data("kiln: error: \(error)\n".utf8))
        throw ExitCode.failure
    }
}

/// Writes one JSON object on stdout.
func printJSON<T: Encodable>(_ value: T) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
    FileHandle.standardOutput.write(try encoder.encode(value))
    FileHandle.standardOutput.write(Data("\n".utf8))
}

/// Options shared by commands that compute.
struct ComputeOptions: ParsableArguments {
    @Option(help: "Worker threads (default: all cores).")
    var threads: Int?

    func apply() throws {
        if let threads {
            guard threads >= 1 else { throw ValidationError("--threads must be at least 1") }
            Parallel.threadCount = threads
        }
    }
}

/// `--budget` and `--time-limit` of the zero-shot commands.
struct BudgetOptions: ParsableArguments {
    @Option(help: "How much work synthesis and reconstruction take: fast, default or thorough (scaled down for teachers that cost more per image).")
    var budget: String = QuantizationBudget.default.rawValue

    @Option(name: .customLong("time-limit"), help: "Seconds the run may take at most; batches and blocks share what is left (the result then depends on the machine's speed).")
    var timeLimit: Double?

    @Flag(name: .customLong("no-plateau"), help: "Run every synthesis iteration instead of stopping a batch once its loss stops falling.")
    var noPlateau = false

    /// The plateau rule synthesis stops batches by (nil with --no-plateau).
    var plateau: PlateauStop? { noPlateau ? nil : SynthesisOptions.defaultPlateau }

    func validate() throws {
        guard QuantizationBudget(rawValue: budget) != nil else { throw ValidationError("--budget must be fast, default or thorough") }
        guard (timeLimit ?? 1) > 0 else { throw ValidationError("--time-limit must be a positive number of seconds") }
    }

    /// The preset's plan for `teacher`.
    func plan(for teacher: Graph) -> QuantizationBudget.Plan {
        QuantizationBudget(rawValue: budget)!.plan(for: teacher)
    }

    /// Tells on standard error what the budget gives this teacher when the cap cut it.
    func report(for teacher: Graph) {
        let plan = plan(for: teacher)
        guard plan.scaledDown else { return }
        let gmacs = String(format: "%.2f", Double(teacher.macsPerSample) / 1e9)
        FileHandle.standardError.write(Data("""
            kiln: budget \(budget): \(gmacs) GMAC per image, so \(plan.images) images × up to \(plan.iterations) iterations \
            (--budget thorough, --synthetic-count and --synthetic-iterations spend more)

            """.utf8))
    }
}

/// Keeps the large, short-lived tensors of the fp32 engine in malloc's heap instead of fresh mmap'd pages: each
/// op allocates its output, and returning those pages to the kernel only to fault them in (and have it zero them)
/// again cost about a quarter of a training step on ResNet-20 at batch 64, and a third of a synthesis step at
/// 224×224, where activations and Genie's generator weights (400 MB) are past any mmap threshold.
func keepLargeAllocationsInHeap() {
    // glibc's mallopt is not in Swift's Glibc module; look it up and call it with the C convention.
    typealias Mallopt = @convention(c) (Int32, Int32) -> Int32
    guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "mallopt") else { return }
    let mallopt = unsafeBitCast(symbol, to: Mallopt.self)
    let trimThreshold: Int32 = -1, mmapMax: Int32 = -4  // M_TRIM_THRESHOLD, M_MMAP_MAX (<malloc.h>)
    _ = mallopt(mmapMax, 0)  // no allocation of any size gets its own mapping
    _ = mallopt(trimThreshold, 1 << 30)
}
