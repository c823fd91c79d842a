import Foundation
import KilnGraph
import KilnRuntime
import KilnTensor
import KilnTestSupport
import Testing

/// Runs the built `kiln` executable and captures what it prints.
enum CLI {
    static let root = Repository.root
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")
    static let teacher = root.appendingPathComponent("models/resnet20.onnx").path

    /// The `kiln` binary next to the test bundle.
    static var executable: URL {
        let candidates = [Bundle.main.bundleURL, URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()]
        for directory in candidates {
            var url = directory
            for _ in 0..<3 {
                let binary = url.appendingPathComponent("kiln")
                if FileManager.default.isExecutableFile(atPath: binary.path) { return binary }
                url = url.deletingLastPathComponent()
            }
        }
        return candidates[0].appendingPathComponent("kiln")
    }

    typealias Result = Processes.Result

    static func run(_ arguments: [String], environment: [String: String] = [:]) throws -> Result {
        try Processes.run(executable.path, arguments, environment: environment)
    }

    static func temporary(_ name: String) -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("kiln-cli-\(getpid())-\(name)").path
    }

    /// Checks a failure: non-zero exit (not a signal), one line on stderr containing each fragment.
    static func expectFailure(_ arguments: [String], _ fragments: [String], sourceLocation: SourceLocation = #_sourceLocation) throws {
        let result = try run(arguments)
        #expect(result.status == 1, "exit status \(result.status); stderr: \(result.stderr)", sourceLocation: sourceLocation)
        let lines = result.stderr.split(separator: "\n")
        #expect(lines.count == 1, "expected one line on stderr, got: \(result.stderr)", sourceLocation: sourceLocation)
        for fragment in fragments {
            #expect(result.stderr.contains(fragment), "'\(fragment)' not in: \(result.stderr)", sourceLocation: sourceLocation)
        }
    }
}

@Suite("kiln command line")
struct CLITests {
    @Test("eval --json prints exactly one JSON object with top1, and agreement with --reference")
    func evalJSON() throws {
        let result = try CLI.run(["eval", CLI.teacher, "--dataset", "fashion-mnist", "--limit", "300", "--json",
                                  "--reference", CLI.teacher])
        #expect(result.status == 0, "\(result.stderr)")
        let object = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any]
        #expect(object?["count"] as? Int == 300)
        #expect((object?["top1"] as? Double ?? 0) > 0.8)
        #expect(object?["agreement"] as? Double == 1.0)
        #expect(abs((object?["meanCosine"] as? Double ?? 0) - 1) < 1e-9)
    }

    @Test("eval --reference without labels compares every output of a two-output detector; --min-sqnr and --min-cosine gate")
    func evalOutputsWithoutLabels() throws {
        let teacher = CLI.root.appendingPathComponent("models/edge/tiny_yolo.onnx").path
        let calibration = CLI.temporary("yolo-calibration.npy"), x = CLI.temporary("yolo-x.npy"), student = CLI.temporary("yolo.kiln")
        defer { for file in [calibration, x, student] { try? FileManager.default.removeItem(atPath: file) } }
        var random = SeededGenerator(seed: 7)
        func images(_ n: Int) -> Tensor {
            Tensor(shape: [n, 3, 64, 64], scalars: (0..<(n * 3 * 64 * 64)).map { _ in Float.random(in: -2...2, using: &random) })
        }
        try NPY.write(images(16), to: calibration)
        try NPY.write(images(6), to: x)
        let quantize = try CLI.run(["quantize", teacher, "--calibration", calibration, "-o", student, "--json"])
        #expect(quantize.status == 0, "\(quantize.stderr)")
        let result = try CLI.run(["eval", student, "--inputs", x, "--reference", teacher, "--json", "--min-cosine", "0.9"])
        #expect(result.status == 0, "\(result.stderr)")
        let object = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any]
        #expect(object?["count"] as? Int == 6)
        #expect(object?["top1"] == nil)
        let outputs = object?["outputs"] as? [[String: Any]] ?? []
        #expect(outputs.count == 2)
        for output in outputs {
            let (sqnr, mean, worst) = (output["sqnr"] as? Double ?? 0, output["meanCosine"] as? Double ?? 0, output["minCosine"] as? Double ?? 2)
            #expect(sqnr > 10 && sqnr < 80, "\(output)")
            #expect(mean > 0.9 && mean < 1 && worst <= mean, "\(output)")
        }
        // A bar it cannot meet: exit status 2, the output named.
        let gated = try CLI.run(["eval", student, "--inputs", x, "--reference", teacher, "--min-sqnr", "200"])
        #expect(gated.status == 2)
        #expect(gated.stderr.contains("SQNR") && gated.stderr.contains("--min-sqnr"), "\(gated.stderr)")
        #expect(gated.stdout.contains("mean cosine"), "\(gated.stdout)")
        // Labels-only bars need labels.
        let unlabelled = try CLI.run(["eval", student, "--inputs", x, "--reference", teacher, "--min-top1", "50"])
        #expect(unlabelled.status != 0 && unlabelled.stderr.contains("need labels"), "\(unlabelled.stderr)")
    }

    @Test("eval reads inputs and int labels from .npy files")
    func evalNPY() throws {
        let data = try FashionMNIST(split: .test)
        let x = CLI.temporary("x.npy"), y = CLI.temporary("y.npy")
        defer { try? FileManager.default.removeItem(atPath: x); try? FileManager.default.removeItem(atPath: y) }
        try NPY.write(data.tensor(0..<64, mean: 0.2860, std: 0.3530), to: x)
        // uint8 labels, written by hand.
        var header = "{'descr': '|u1', 'fortran_order': False, 'shape': (64,), }"
        header += String(repeating: " ", count: (64 - (10 + header.utf8.count + 1) % 64) % 64) + "\n"
        var bytes = Data([0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, 1, 0, UInt8(header.utf8.count), 0]) + Data(header.utf8)
        bytes.append(contentsOf: data.labels.prefix(64).map { UInt8($0) })
        try bytes.write(to: URL(fileURLWithPath: y))
        let npy = try CLI.run(["eval", CLI.teacher, "--inputs", x, "--labels", y, "--json"])
        let dataset = try CLI.run(["eval", CLI.teacher, "--dataset", "fashion-mnist", "--limit", "64", "--json"])
        #expect(npy.status == 0 && dataset.status == 0, "\(npy.stderr) \(dataset.stderr)")
        let a = try JSONSerialization.jsonObject(with: Data(npy.stdout.utf8)) as? [String: Any]
        let b = try JSONSerialization.jsonObject(with: Data(dataset.stdout.utf8)) as? [String: Any]
        #expect(a?["correct"] as? Int == b?["correct"] as? Int)
    }

    @Test("run writes the logits as .npy")
    func runWritesOutput() throws {
        let x = CLI.temporary("run-x.npy"), y = CLI.temporary("run-y.npy")
        defer { try? FileManager.default.removeItem(atPath: x); try? FileManager.default.removeItem(atPath: y) }
        try NPY.write(Tensor(shape: [3, 1, 28, 28], repeating: 0.5), to: x)
        let result = try CLI.run(["run", CLI.teacher, "--input", x, "-o", y])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(try NPY.readTensor(y).shape == [3, 10])
    }

    @Test("inspect reports BatchNorm count and MACs; warns when there is no BatchNorm")
    func inspect() throws {
        let result = try CLI.run(["inspect", CLI.teacher, "--json"])
        #expect(result.status == 0, "\(result.stderr)")
        let object = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any]
        #expect((object?["batchNorms"] as? Int ?? 0) >= 19)
        #expect((object?["macs"] as? Int ?? 0) > 10_000_000)
        let plain = try CLI.run(["inspect", CLI.fixtures.appendingPathComponent("no_batchnorm.onnx").path])
        #expect(plain.status == 0)
        #expect(plain.stdout.contains("warning: no BatchNormalization nodes: zero-shot synthesis needs them"))
    }

    @Test("bench --profile reports every layer of a student; a teacher cannot be profiled")
    func benchProfile() throws {
        let student = CLI.root.appendingPathComponent("models/students/resnet20-w8a8.kiln").path
        let result = try CLI.run(["bench", student, "--runs", "5", "--threads", "1", "--profile", "--json"])
        #expect(result.status == 0, "\(result.stderr)")
        let object = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any]
        let layers = object?["layers"] as? [[String: Any]] ?? []
        #expect(layers.count > 20, "one entry per layer")
        #expect(layers.contains { ($0["op"] as? String) == "Conv" && ($0["macs"] as? Int ?? 0) > 0 })
        #expect(layers.reduce(0) { $0 + ($1["ms"] as? Double ?? 0) } > 0)
        let text = try CLI.run(["bench", student, "--runs", "5", "--threads", "1", "--profile"])
        #expect(text.status == 0 && text.stdout.contains("GMAC/s") && text.stdout.contains("GlobalAveragePool"))
        try CLI.expectFailure(["bench", CLI.teacher, "--runs", "3", "--profile"], ["--profile needs a .kiln student"])
    }

    @Test("bench names the CPU and the kernels; KILN_ISA forces a lower tier and refuses one this CPU lacks")
    func benchKernelTier() throws {
        let student = CLI.root.appendingPathComponent("models/students/resnet20-w8a8.kiln").path
        let best = try CLI.run(["bench", student, "--runs", "3", "--json"])
        #expect(best.status == 0, "\(best.stderr)")
        let object = try JSONSerialization.jsonObject(with: Data(best.stdout.utf8)) as? [String: Any]
        #expect(object?["kernels"] as? String == KernelChoice.best.description)
        #expect((object?["cpu"] as? String ?? "").isEmpty == false)
        let forced = try CLI.run(["bench", student, "--runs", "3"], environment: ["KILN_ISA": "scalar"])
        #expect(forced.status == 0 && forced.stdout.contains("kernels: scalar"), "\(forced.stdout) \(forced.stderr)")
        let reference = try CLI.run(["bench", student, "--runs", "3", "--json"], environment: ["KILN_ISA": "reference"])
        #expect(reference.status == 0 && reference.stdout.contains("\"reference\""), "\(reference.stderr)")
        let unknown = try CLI.run(["bench", student, "--runs", "3"], environment: ["KILN_ISA": "avx9000"])
        #expect(unknown.status == 1 && unknown.stderr.contains("KILN_ISA=avx9000 names no kernel variant"), "\(unknown.stderr)")
        if let lacking = KernelChoice.all.first(where: { !$0.isSupported }) {
            let refused = try CLI.run(["bench", student, "--runs", "3"], environment: ["KILN_ISA": lacking.description])
            #expect(refused.status == 1 && refused.stderr.contains("cannot run the \(lacking) kernels"), "\(refused.stderr)")
        }
    }

    @Test("bad model files: one line naming the file and the problem, exit status 1")
    func badModels() throws {
        let empty = CLI.temporary("empty.onnx"), random = CLI.temporary("random.onnx"), truncated = CLI.temporary("truncated.onnx")
        defer { for f in [empty, random, truncated] { try? FileManager.default.removeItem(atPath: f) } }
        try Data().write(to: URL(fileURLWithPath: empty))
        try Data((0..<4096).map { UInt8(truncatingIfNeeded: $0 &* 2_654_435_761 >> 7) }).write(to: URL(fileURLWithPath: random))
        try Data(contentsOf: URL(fileURLWithPath: CLI.teacher)).prefix(5000).write(to: URL(fileURLWithPath: truncated))
        try CLI.expectFailure(["inspect", empty], [empty, "file is empty"])
        try CLI.expectFailure(["inspect", random], [random, "not an ONNX model"])
        try CLI.expectFailure(["eval", truncated, "--dataset", "fashion-mnist"], [truncated])
        try CLI.expectFailure(["inspect", CLI.temporary("does-not-exist.onnx")], ["no such file"])
        let missing = CLI.fixtures.appendingPathComponent("missing_initializer.onnx").path
        try CLI.expectFailure(["inspect", missing], [missing, "node 'conv1' (Conv): reads 'w'"])
        let unsupported = CLI.fixtures.appendingPathComponent("unsupported_ops.onnx").path
        try CLI.expectFailure(["inspect", unsupported], ["unsupported op types: Hardmax (2 nodes: 'hardmax1', 'hardmax2'); LSTM (1 node: 'lstm')"])
    }

    @Test("bad .npy inputs: wrong shape, wrong dtype, broken header")
    func badInputs() throws {
        let shape = CLI.temporary("shape.npy"), dtype = CLI.temporary("dtype.npy"), header = CLI.temporary("header.npy")
        let out = CLI.temporary("out.npy")
        defer { for f in [shape, dtype, header, out] { try? FileManager.default.removeItem(atPath: f) } }
        try NPY.write(Tensor(shape: [2, 3, 28, 28], repeating: 0), to: shape)
        var float64 = NPY.encode(Tensor(shape: [1, 1, 28, 14], repeating: 0))
        float64.replaceSubrange(float64.firstRange(of: Data("<f4".utf8))!, with: Data("<f8".utf8))
        float64.replaceSubrange(float64.firstRange(of: Data("(1, 1, 28, 14)".utf8))!, with: Data("(1, 1, 28, 7) ".utf8))
        try float64.write(to: URL(fileURLWithPath: dtype))
        try Data("\u{93}NUMPY garbage".utf8).write(to: URL(fileURLWithPath: header))
        try CLI.expectFailure(["run", CLI.teacher, "--input", shape, "-o", out], [shape, "expects [N, 1, 28, 28], got [2, 3, 28, 28]"])
        try CLI.expectFailure(["run", CLI.teacher, "--input", dtype, "-o", out], [dtype, "'<f8' is not float32"])
        try CLI.expectFailure(["run", CLI.teacher, "--input", header, "-o", out], [header])
        #expect(!FileManager.default.fileExists(atPath: out), "a failed run must not leave an output file")
    }

    @Test("quantize writes a student and prints a per-layer table; eval --max-drop gates on it")
    func quantizeAndGate() throws {
        let student = CLI.temporary("student.kiln"), qdq = CLI.temporary("student.qdq.onnx")
        defer { try? FileManager.default.removeItem(atPath: student); try? FileManager.default.removeItem(atPath: qdq) }
        let calibration = CLI.root.appendingPathComponent("calibration/fashion-mnist-real-512.npy").path
        let result = try CLI.run(["quantize", CLI.teacher, "-o", student, "--calibration", calibration, "--range", "mse",
                                  "--onnx-out", qdq, "--json"])
        #expect(result.status == 0, "\(result.stderr)")
        let summary = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any]
        let layers = summary?["layers"] as? [[String: Any]] ?? []
        #expect(layers.count > 20)
        #expect(layers.allSatisfy { ($0["sqnr"] as? Double ?? 0) > 15 }, "every layer should keep > 15 dB SQNR")
        #expect(FileManager.default.fileExists(atPath: qdq))
        let inspect = try CLI.run(["inspect", student, "--json"])
        let info = try JSONSerialization.jsonObject(with: Data(inspect.stdout.utf8)) as? [String: Any]
        #expect((info?["format"] as? String)?.hasPrefix("kiln") == true)
        #expect((info?["metadata"] as? [String: String])?["kiln.input_mean"] != nil)
        let pass = try CLI.run(["eval", student, "--dataset", "fashion-mnist", "--limit", "500", "--reference", CLI.teacher,
                                "--max-drop", "2", "--min-agreement", "97"])
        #expect(pass.status == 0, "\(pass.stderr)")
        let fail = try CLI.run(["eval", student, "--dataset", "fashion-mnist", "--limit", "500", "--min-top1", "99.9"])
        #expect(fail.status == 2)
        #expect(fail.stderr.contains("below --min-top1 99.90%"))
    }

    @Test("a failed quantize reports the problem and leaves no output file")
    func quantizeFailure() throws {
        let student = CLI.temporary("never.kiln"), calibration = CLI.temporary("wrong-calibration.npy")
        defer { try? FileManager.default.removeItem(atPath: calibration) }
        try NPY.write(Tensor(shape: [4, 3, 28, 28], repeating: 0), to: calibration)
        try CLI.expectFailure(["quantize", CLI.teacher, "-o", student, "--calibration", calibration],
                              ["calibration data [4, 3, 28, 28] does not match the model input [N, 1, 28, 28]"])
        try CLI.expectFailure(["quantize", CLI.teacher, "-o", student, "--calibration", calibration, "--bits", "w4a4"],
                              [CLI.teacher, "calibration data [4, 3, 28, 28] does not match the model input [N, 1, 28, 28]"])
        #expect(!FileManager.default.fileExists(atPath: student))
    }

    @Test("a corrupt student is refused with the byte offset or section at fault")
    func corruptStudent() throws {
        let student = CLI.temporary("to-corrupt.kiln")
        defer { try? FileManager.default.removeItem(atPath: student) }
        let calibration = CLI.root.appendingPathComponent("calibration/fashion-mnist-real-512.npy").path
        let made = try CLI.run(["quantize", CLI.teacher, "-o", student, "--calibration", calibration, "--range", "minmax", "--json"])
        #expect(made.status == 0, "\(made.stderr)")
        var bytes = try Data(contentsOf: URL(fileURLWithPath: student))
        bytes[bytes.count / 2] ^= 0x5A
        try bytes.write(to: URL(fileURLWithPath: student))
        try CLI.expectFailure(["inspect", student], [student, "checksum mismatch"])
        try bytes.prefix(100).write(to: URL(fileURLWithPath: student))
        try CLI.expectFailure(["eval", student, "--dataset", "fashion-mnist"], [student])
    }
}

@Suite("kiln quantize with block reconstruction")
struct DistillCLITests {
    @Test("Ctrl-C stops after a checkpoint, leaves no student; --resume finishes the remaining blocks")
    func interruptAndResume() throws {
        let student = CLI.temporary("distilled.kiln"), checkpoint = student + ".checkpoint.json"
        defer { for path in [student, checkpoint] { try? FileManager.default.removeItem(atPath: path) } }
        let calibration = CLI.root.appendingPathComponent("calibration/genie-resnet20-128.npy").path
        let arguments = ["quantize", CLI.teacher, "-o", student, "--calibration", calibration, "--bits", "w4a4",
                         "--iterations-per-block", "40", "--json"]
        let process = Process()
        process.executableURL = CLI.executable
        process.arguments = arguments
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        // Interrupt as soon as the first block's checkpoint exists.
        let deadline = Date().addingTimeInterval(120)
        while !FileManager.default.fileExists(atPath: checkpoint), Date() < deadline { usleep(5_000) }
        #expect(FileManager.default.fileExists(atPath: checkpoint), "no checkpoint after the first block")
        kill(process.processIdentifier, SIGINT)
        let stderr = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        _ = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        #expect(process.terminationReason == .exit && process.terminationStatus == 130, "\(process.terminationStatus): \(stderr)")
        #expect(stderr.contains("--resume"))
        #expect(FileManager.default.fileExists(atPath: checkpoint))
        #expect(!FileManager.default.fileExists(atPath: student))

        // A checkpoint from another configuration is refused.
        try CLI.expectFailure(Array(arguments.dropLast(3)) + ["--iterations-per-block", "41", "--resume"],
                              [checkpoint, "was made by another run"])
        let resumed = try CLI.run(arguments + ["--resume"])
        #expect(resumed.status == 0, "\(resumed.stderr)")
        let summary = try JSONSerialization.jsonObject(with: Data(resumed.stdout.utf8)) as? [String: Any]
        let blocks = summary?["blocks"] as? [[String: Any]] ?? []
        #expect(blocks.count == 11, "stem, nine residual blocks and the head")
        #expect(FileManager.default.fileExists(atPath: student))
        #expect(!FileManager.default.fileExists(atPath: checkpoint), "a finished run removes its checkpoint")
        let eval = try CLI.run(["eval", student, "--dataset", "fashion-mnist", "--limit", "1000", "--min-top1", "85"])
        #expect(eval.status == 0, "\(eval.stderr)")
    }

    @Test("--resume without a checkpoint and bad --bits are clear errors")
    func badDistillArguments() throws {
        let student = CLI.temporary("no-checkpoint.kiln")
        let calibration = CLI.root.appendingPathComponent("calibration/genie-resnet20-128.npy").path
        try CLI.expectFailure(["quantize", CLI.teacher, "-o", student, "--calibration", calibration, "--bits", "w4a4", "--resume"],
                              ["no checkpoint to resume from"])
        let bad = try CLI.run(["quantize", CLI.teacher, "-o", student, "--calibration", calibration, "--bits", "w1a4"])
        #expect(bad.status != 0 && bad.stderr.contains("--bits"))
        #expect(!FileManager.default.fileExists(atPath: student))
    }
}

@Suite("input domain on the command line")
struct InputDomainCLITests {
    /// A zoo teacher as users export it: no Kiln metadata, a fixed batch of 1, weights in vgg.onnx.data.
    static let userTeacher = CLI.root.appendingPathComponent("models/zoo/vgg.onnx").path

    @Test("an unknown domain: one warning naming what was assumed and the flags; the student covers real inputs")
    func unknownDomain() throws {
        let student = CLI.temporary("unknown-domain.kiln")
        defer { try? FileManager.default.removeItem(atPath: student) }
        let made = try CLI.run(["quantize", Self.userTeacher, "-o", student, "--synthetic-count", "8", "--synthetic-iterations", "3", "--json"])
        #expect(made.status == 0, "\(made.stderr)")
        let warnings = made.stderr.components(separatedBy: "warning:").count - 1
        #expect(warnings == 1, "\(made.stderr)")
        #expect(made.stderr.contains("the input's domain is unknown") && made.stderr.contains("first BatchNorm")
                && made.stderr.contains("--preprocess") && made.stderr.contains("--input-mean"), "\(made.stderr)")
        let inspect = try CLI.run(["inspect", student, "--json"])
        let report = try JSONSerialization.jsonObject(with: Data(inspect.stdout.utf8)) as? [String: Any]
        let metadata = report?["metadata"] as? [String: String] ?? [:]
        let bounds = (metadata["kiln.input_quantized_range"] ?? "").split(separator: ",").compactMap { Float($0) }
        try #require(bounds.count == 2, "\(metadata)")
        // This teacher's real inputs span (0 − 0.286)/0.353 … (1 − 0.286)/0.353.
        #expect(bounds[0] <= -0.81 && bounds[1] >= 2.02, "\(bounds)")
        #expect(metadata["kiln.input_domain_assumed"] != nil)
        #expect((report?["inputDomain"] as? String ?? "").hasPrefix("unknown"))
        // The student runs any batch size although the teacher was exported with batch 1.
        let eval = try CLI.run(["eval", student, "--dataset", "fashion-mnist", "--limit", "500", "--batch", "100",
                                "--input-mean", "0.286", "--input-std", "0.353", "--reference", Self.userTeacher, "--json"])
        #expect(eval.status == 0, "\(eval.stderr)")
    }

    @Test("a stated domain: no warning, recorded in the student and shown by inspect")
    func statedDomain() throws {
        let student = CLI.temporary("stated-domain.kiln")
        defer { try? FileManager.default.removeItem(atPath: student) }
        let made = try CLI.run(["quantize", Self.userTeacher, "-o", student, "--synthetic-count", "8", "--synthetic-iterations", "3",
                                "--input-mean", "0.286", "--input-std", "0.353"])
        #expect(made.status == 0 && !made.stderr.contains("warning"), "\(made.stderr)")
        let inspect = try CLI.run(["inspect", student])
        #expect(inspect.stdout.contains("input domain: (x/255 - 0.286) / 0.353, input quantized over"), "\(inspect.stdout)")
        // eval reads the student's own domain when no flag is given.
        let eval = try CLI.run(["eval", student, "--dataset", "fashion-mnist", "--limit", "200"])
        #expect(eval.status == 0 && eval.stdout.contains("normalization: (x/255 - 0.286) / 0.353 (model metadata)"), "\(eval.stdout)")
    }

    @Test("malformed domain flags are one-line errors")
    func badDomains() throws {
        let student = CLI.temporary("bad-domain.kiln")
        try CLI.expectFailure(["quantize", Self.userTeacher, "-o", student, "--input-mean", "0.4,0.5", "--input-std", "0.2,0.3"],
                              [Self.userTeacher, "2 values but the model's input has 1 channels"])
        for (flags, fragment) in [(["--preprocess", "cifar"], "unknown --preprocess 'cifar'"),
                                  (["--input-range", "1,0"], "low < high"),
                                  (["--input-mean", "0.5"], "--input-mean and --input-std go together"),
                                  (["--preprocess", "unit", "--input-range", "0,1"], "give one of")] {
            let result = try CLI.run(["quantize", Self.userTeacher, "-o", student] + flags)
            #expect(result.status != 0 && result.stderr.contains(fragment), "\(flags): \(result.stderr)")
        }
        #expect(!FileManager.default.fileExists(atPath: student))
    }
}
