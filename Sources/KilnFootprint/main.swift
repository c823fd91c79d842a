// kiln-footprint: the smallest embedding of KilnRuntime (no other Kiln module, no OpenBLAS, no protobuf): loads a
// student, runs it repeatedly on one context and reports load time, latency and the process's peak RSS, and the
// resident set after the first 1% of the runs and at the end (a soak: it should not grow).
//
//     kiln-footprint STUDENT.kiln [--runs 100] [--threads N]
import FoundationEssentials
import KilnRuntime
#if canImport(Glibc)
import Glibc
#endif

/// A memory figure of /proc/self/status in megabytes: "VmHWM:" (peak resident set) or "VmRSS:" (current).
func statusMegabytes(_ field: String) -> Double {
    guard let file = fopen("/proc/self/status", "r") else { return 0 }
    defer { fclose(file) }
    var line = [CChar](repeating: 0, count: 256)
    while fgets(&line, 256, file) != nil {
        let text = String(cString: line)
        if text.hasPrefix(field) {
            let digits = text.split(separator: " ").dropFirst().first ?? ""
            return (Double(digits) ?? 0) / 1024
        }
    }
    return 0
}

/// Monotonic seconds taken by `body`.
func seconds(_ body: () throws -> Void) rethrows -> Double {
    var start = timespec(), end = timespec()
    clock_gettime(CLOCK_MONOTONIC, &start)
    try body()
    clock_gettime(CLOCK_MONOTONIC, &end)
    return Double(end.tv_sec - start.tv_sec) + Double(end.tv_nsec - start.tv_nsec) / 1e9
}

/// Writes a line to standard error.
func complain(_ text: String) {
    let line = text + "\n"
    _ = line.withCString { write(2, $0, strlen($0)) }
}

@main
struct Footprint {
    static func main() {
        var arguments = Array(CommandLine.arguments.dropFirst())
        func option(_ name: String, _ fallback: Int) -> Int {
            guard let index = arguments.firstIndex(of: name), index + 1 < arguments.count,
                  let value = Int(arguments[index + 1]) else { return fallback }
            arguments.removeSubrange(index...(index + 1))
            return value
        }
        let runs = option("--runs", 100), threads = option("--threads", 1)
        guard let path = arguments.first else {
            complain("usage: kiln-footprint STUDENT.kiln [--runs 100] [--threads N]")
            exit(1)
        }
        do {
            var loaded: KilnModel?
            let load = try seconds {
                loaded = try KilnModel(contentsOf: URL(fileURLWithPath: path), options: .init(threads: threads))
            }
            let model = loaded!
            let context = model.makeContext()
            // Inputs vary from run to run (a ramp shifted each time) so every kernel path sees changing data.
            let size = model.inputs[0].sampleCount
            var input = [Float](repeating: 0, count: size)
            var output = [Float](repeating: 0, count: model.outputs[0].sampleCount)
            let warmup = max(1, runs / 100)
            var settled = 0.0
            let run = try seconds {
                for r in 0..<runs {
                    if r == warmup { settled = statusMegabytes("VmRSS:") }
                    let shift = Float(r % 97) / 97
                    for i in 0..<size { input[i] = Float(i % 29) / 29 * 3 - 0.8 + shift }
                    try input.withUnsafeBufferPointer { x in
                        try output.withUnsafeMutableBufferPointer { y in
                            try context.run(inputs: [x], outputs: [y], batch: 1)
                        }
                    }
                }
            }
            let milliseconds = run / Double(max(runs, 1)) * 1000
            print("\(path): load \(Int(load * 1000)) ms, \(runs) runs at batch 1 on \(threads) thread(s): "
                  + "\(Double(Int(milliseconds * 1000)) / 1000) ms each, peak RSS \(Double(Int(statusMegabytes("VmHWM:") * 10)) / 10) MB")
            if runs > warmup {
                let end = statusMegabytes("VmRSS:")
                print("RSS after \(warmup) runs: \(Double(Int(settled * 100)) / 100) MB, after \(runs): \(Double(Int(end * 100)) / 100) MB, "
                      + "growth \(Double(Int((end - settled) * 1000)) / 1000) MB")
            }
        } catch {
            complain("kiln-footprint: error: \(error)")
            exit(1)
        }
    }
}
