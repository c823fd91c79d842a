import Foundation
import KilnRuntime
import KilnTensor
import KilnTestSupport
import Testing

@Suite("C API (include/kiln.h, libkilnrt.so)")
struct CAPITests {
    @Test("a C program built with gcc runs the committed student exactly as the Swift API does")
    func cProgramMatchesSwift() throws {
        let buildFolder = CLI.executable.deletingLastPathComponent()
        let library = buildFolder.appendingPathComponent("libkilnrt.so")
        try #require(FileManager.default.fileExists(atPath: library.path), "build the library product first (swift build --product kilnrt)")
        let program = CLI.temporary("kiln_predict")
        let input = CLI.temporary("c-input.f32"), output = CLI.temporary("c-output.f32")
        defer { for path in [program, input, output] { try? FileManager.default.removeItem(atPath: path) } }
        let compile = try Processes.run("/usr/bin/env", [
            "gcc", "-std=c11", "-Wall", "-Wextra", "-Werror", "-I", CLI.root.appendingPathComponent("include").path,
            CLI.root.appendingPathComponent("Examples/c/kiln_predict.c").path, "-L", buildFolder.path, "-lkilnrt",
            "-Wl,-rpath," + buildFolder.path, "-o", program])
        try #require(compile.status == 0, "gcc failed: \(compile.stderr)")

        // 16 normalized Fashion-MNIST test images.
        let student = CLI.root.appendingPathComponent("models/students/resnet20-w8a8.kiln")
        let model = try KilnModel(contentsOf: student, options: KilnModel.Options(threads: 1))
        let data = try FashionMNIST(split: .test)
        let mean = Float(model.student.metadata["kiln.input_mean"]!)!, std = Float(model.student.metadata["kiln.input_std"]!)!
        let images = data.tensor(0..<16, mean: mean, std: std).scalars
        try images.withUnsafeBufferPointer { Data(buffer: $0) }.write(to: URL(fileURLWithPath: input))
        let run = try Processes.run(program, [student.path, input, output, "16"])
        #expect(run.status == 0, "\(run.stdout)\(run.stderr)")
        #expect(run.stdout.contains("input input [-1, 1, 28, 28]"), "\(run.stdout)")
        #expect(run.stdout.contains("corrupt buffer refused: memory buffer:"), "\(run.stdout)")
        let bytes = try Data(contentsOf: URL(fileURLWithPath: output))
        let fromC = bytes.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
        let fromSwift = try model.predict(images)
        #expect(fromC.count == fromSwift.count)
        #expect(fromC == fromSwift, "the C API must give bit-identical outputs")

        // KILN_ISA forces the portable kernels (same outputs) and refuses a name it does not know.
        let scalar = try Processes.run(program, [student.path, input, output, "16"], environment: ["KILN_ISA": "scalar"])
        #expect(scalar.status == 0, "\(scalar.stdout)\(scalar.stderr)")
        let scalarBytes = try Data(contentsOf: URL(fileURLWithPath: output))
        #expect(scalarBytes.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) } == fromSwift)
        let refused = try Processes.run(program, [student.path, input, output, "16"], environment: ["KILN_ISA": "avx9000"])
        #expect(refused.status != 0 && (refused.stdout + refused.stderr).contains("KILN_ISA=avx9000 names no kernel variant"),
                "\(refused.stdout)\(refused.stderr)")
    }
}
