import CKilnKernelChecks
import CKilnKernels
import Foundation
import KilnRuntime
import KilnTestSupport
import Testing

/// Runs the C checks of one kernel (CKilnKernelChecks): its shape list against the portable kernel of its family.
func checkKernel(_ kernel: KernelInfo) -> (shapes: Int, message: String) {
    var message = [CChar](repeating: 0, count: 512)
    let shapes = Int(kiln_check_kernel(kiln_kernel_at(Int32(kernel.index)), &message, message.count))
    return (shapes, String(decoding: message.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
}

/// Checks every kernel of the list that needs `isa` (the test is skipped where the CPU lacks it).
func checkKernels(of isa: KernelChoice) {
    let kernels = isa.kernels
    #expect(!kernels.isEmpty || isa == .neonDot, "the kernel list has no \(isa) kernel for this architecture")
    for kernel in kernels {
        let (shapes, message) = checkKernel(kernel)
        print("\(kernel.family) \(kernel.name): \(shapes < 0 ? "FAILED \(message)" : "passed \(shapes) shapes")")
        #expect(shapes > 0, "\(kernel.name): \(message)")
    }
}

@Suite("every kernel of the list against the portable kernel of its family")
struct KernelListTests {
    @Test("scalar kernels") func scalar() { checkKernels(of: .scalar) }
    @Test("AVX2 kernels", .enabled(if: KernelChoice.avx2.isSupported, "this CPU lacks AVX2")) func avx2() { checkKernels(of: .avx2) }
    @Test("AVX-VNNI kernels", .enabled(if: KernelChoice.avxVNNI.isSupported, "this CPU lacks AVX-VNNI")) func avxVNNI() { checkKernels(of: .avxVNNI) }
    @Test("AVX-512 (without VNNI) kernels", .enabled(if: KernelChoice.avx512BW.isSupported, "this CPU lacks AVX-512BW"))
    func avx512BW() { checkKernels(of: .avx512BW) }
    @Test("AVX-512 VNNI kernels", .enabled(if: KernelChoice.avx512VNNI.isSupported, "this CPU lacks AVX-512 VNNI"))
    func avx512VNNI() { checkKernels(of: .avx512VNNI) }
    @Test("arm64 dot-product kernels", .enabled(if: KernelChoice.neonDot.isSupported, "this CPU is not an arm64 with the dot-product extension"))
    func neonDot() { checkKernels(of: .neonDot) }

    /// The arm64 kernels, compiled here with clang for aarch64-linux-gnu (Debian's cross toolchain provides libc)
    /// and run under qemu-aarch64 with every kernel checked against the portable one, as on a Graviton or a
    /// Raspberry Pi 5.
    @Test("arm64 kernels, cross-compiled and run under qemu-aarch64")
    func arm64UnderEmulation() throws {
        #if arch(x86_64)
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("kiln-arm64-\(getpid())")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let sources = Repository.root.appendingPathComponent("Sources")
        let kernels = try FileManager.default.contentsOfDirectory(atPath: sources.appendingPathComponent("CKilnKernels").path)
            .filter { $0.hasSuffix(".c") }.sorted().map { sources.appendingPathComponent("CKilnKernels/\($0)").path }
        let binary = folder.appendingPathComponent("kernel-checks").path
        let compile = try Processes.run(command: "clang", [
            "--target=aarch64-linux-gnu", "--gcc-toolchain=/usr", "-O2", "-DKILN_KERNEL_CHECKS_MAIN",
            "-I", sources.appendingPathComponent("CKilnKernels/include").path,
            "-I", sources.appendingPathComponent("CKilnKernelChecks/include").path,
        ] + kernels + [sources.appendingPathComponent("CKilnKernelChecks/checks.c").path, "-o", binary, "-lm", "-lpthread"])
        try #require(compile.status == 0, """
            cross-compiling the arm64 kernels failed (install Debian's gcc-aarch64-linux-gnu and qemu-user; \
            scripts/install-deps.sh does): \(compile.stderr)
            """)
        // -cpu max: an arm64 core with the dot-product extension.
        let run = try Processes.run(command: "qemu-aarch64", ["-cpu", "max", "-L", "/usr/aarch64-linux-gnu", binary])
        print(run.stdout, terminator: "")
        #expect(run.status == 0, "\(run.stdout)\(run.stderr)")
        // The arm64 kernels of the one kernel list.
        let list = try String(contentsOfFile: sources.appendingPathComponent("CKilnKernels/kiln_kernel_list.inc").path, encoding: .utf8)
        let arm64Kernels = list.split(separator: "\n").filter { $0.hasPrefix("KILN_KERNEL_ARM64(") }
            .map { $0.split(separator: ",")[1].trimmingCharacters(in: .whitespaces) }
        #expect(!arm64Kernels.isEmpty)
        for name in arm64Kernels {
            #expect(run.stdout.contains("\(name) passed"), "\(name) did not pass under qemu: \(run.stdout)")
        }
        #expect(!run.stdout.contains("FAILED") && !run.stdout.contains("skipped"))
        #endif
    }

    @Test("the dispatch takes the best listed kernel each ISA includes")
    func dispatch() {
        #expect(kiln_isa_includes(Int32(KILN_ISA_AVX512VNNI.rawValue), Int32(KILN_ISA_AVX2.rawValue)) == 1)
        #expect(kiln_isa_includes(Int32(KILN_ISA_AVX2.rawValue), Int32(KILN_ISA_AVXVNNI.rawValue)) == 0)
        #expect(kiln_isa_includes(Int32(KILN_ISA_NEONDOT.rawValue), Int32(KILN_ISA_AVX2.rawValue)) == 0)
        #expect(kiln_isa_includes(Int32(KILN_ISA_AVX512VNNI.rawValue), Int32(KILN_ISA_AVX512BW.rawValue)) == 1)
        #expect(kiln_isa_includes(Int32(KILN_ISA_AVX512BW.rawValue), Int32(KILN_ISA_AVX512VNNI.rawValue)) == 0)
        #expect(kiln_isa_includes(Int32(KILN_ISA_AVXVNNI.rawValue), Int32(KILN_ISA_AVX512BW.rawValue)) == 0)
        for isa in KernelChoice.all {
            for family in Set(KernelInfo.all.map(\.family)) {
                let eligible = KernelInfo.all.filter { $0.family == family && kiln_isa_includes(isa.isa, $0.isa.isa) != 0 }
                let expected = eligible.last!
                let chosen: UnsafeRawPointer?
                switch family {
                case "qu8s8_igemm": chosen = unsafeBitCast(kiln_qu8s8_igemm_for(isa.isa), to: UnsafeRawPointer?.self)
                case "qu8s8_igemm_narrow": chosen = unsafeBitCast(kiln_qu8s8_igemm_narrow_for(isa.isa), to: UnsafeRawPointer?.self)
                case "qu8s8_dwconv3x3": chosen = unsafeBitCast(kiln_qu8s8_dwconv3x3_for(isa.isa), to: UnsafeRawPointer?.self)
                case "qu8_quantize_nchw": chosen = unsafeBitCast(kiln_qu8_quantize_nchw_for(isa.isa), to: UnsafeRawPointer?.self)
                case "qu8s8_dwconv": chosen = unsafeBitCast(kiln_qu8s8_dwconv_for(isa.isa), to: UnsafeRawPointer?.self)
                case "qu8_lookup": chosen = unsafeBitCast(kiln_qu8_lookup_for(isa.isa), to: UnsafeRawPointer?.self)
                default:
                    Issue.record("the dispatch test does not know family \(family)")
                    continue
                }
                #expect(chosen == unsafeBitCast(expected.function, to: UnsafeRawPointer?.self), "\(family) for \(isa)")
            }
        }
    }
}
