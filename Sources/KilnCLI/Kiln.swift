import ArgumentParser
import Foundation
import Glibc
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

/// Keeps the large, short-lived tensors of the fp32 engine in malloc's heap instead of fresh mmap'd pages: each
/// op allocates its output, and returning those pages to the kernel only to fault them in again cost about a
/// quarter of a training step (measured on ResNet-20, batch 64).
func keepLargeAllocationsInHeap() {
    // glibc's mallopt is not in Swift's Glibc module; look it up and call it with the C convention.
    typealias Mallopt = @convention(c) (Int32, Int32) -> Int32
    guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "mallopt") else { return }
    let mallopt = unsafeBitCast(symbol, to: Mallopt.self)
    let trimThreshold: Int32 = -1, mmapThreshold: Int32 = -3  // M_TRIM_THRESHOLD, M_MMAP_THRESHOLD (<malloc.h>)
    _ = mallopt(mmapThreshold, 256 << 20)
    _ = mallopt(trimThreshold, 1 << 30)
}
