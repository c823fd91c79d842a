// kiln-kernel-bench: every kernel of the one kernel list that this CPU runs, timed on shapes of real layers, with
// its speed against the portable kernel of its family (same run) and against its tier's arithmetic limit on this core
// (the multiply instruction of its inner loop, measured in the same run). `--repeats N` (default 5, best kept).
import CKilnKernelChecks
import CKilnKernels
import Foundation
import KilnRuntime

var repeats = 5
var arguments = CommandLine.arguments.dropFirst()
while let argument = arguments.popFirst() {
    if argument == "--repeats", let value = arguments.popFirst().flatMap(Int.init), value >= 1 {
        repeats = value
    } else {
        print("usage: kiln-kernel-bench [--repeats N]")
        exit(argument == "--help" || argument == "-h" ? 0 : 1)
    }
}
print("CPU \(KernelChoice.cpuModel); best tier \(KernelChoice.best); best of \(repeats) runs of ≥ 20 ms")
print("kernel".padding(toLength: 42, withPad: " ", startingAt: 0) + "shape".padding(toLength: 36, withPad: " ", startingAt: 0)
      + "      µs   G/s  × scalar  of limit")
var scalarSeconds: [String: Double] = [:]
for kernel in KernelInfo.all {
    guard kernel.isa.isSupported else {
        print(kernel.name.padding(toLength: 42, withPad: " ", startingAt: 0) + "skipped: this CPU lacks \(kernel.isa)")
        continue
    }
    let info = kiln_kernel_at(Int32(kernel.index))
    for shape in 0..<Int(kiln_bench_shape_count(info)) {
        var macs = 0.0
        var label = [CChar](repeating: 0, count: 128)
        let seconds = kiln_bench_kernel(info, Int32(shape), Int32(repeats), &macs, &label, label.count)
        let key = "\(kernel.family)#\(shape)"
        if kernel.isa == .scalar { scalarSeconds[key] = seconds }
        let text = String(decoding: label.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let ratio = scalarSeconds[key].map { $0 / seconds } ?? 1
        let name = kernel.name.padding(toLength: 42, withPad: " ", startingAt: 0)
        let figures = String(format: "%8.1f %5.1f %8.1f", seconds * 1e6, macs / seconds / 1e9, ratio)
        var instruction: UnsafePointer<CChar>?
        let limit = kiln_kernel_limit(info, &instruction)
        let share = limit > 0 ? String(format: "  %5.1f%%", 100 * macs / seconds / limit) : ""
        print(name + text.padding(toLength: 36, withPad: " ", startingAt: 0) + figures + share)
    }
}
print("\nlimits: multiply-adds per second of each tier's multiply instruction on this core (independent chains, no memory)")
var printed = Set<String>()
for kernel in KernelInfo.all where kernel.isa.isSupported {
    var instruction: UnsafePointer<CChar>?
    let limit = kiln_kernel_limit(kiln_kernel_at(Int32(kernel.index)), &instruction)
    guard limit > 0, let instruction, printed.insert(String(cString: instruction)).inserted else { continue }
    print(String(cString: instruction).padding(toLength: 16, withPad: " ", startingAt: 0) + String(format: "%7.1f G/s", limit / 1e9))
}
