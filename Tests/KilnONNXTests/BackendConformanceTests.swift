import Foundation
import KilnGraph
import KilnONNX
import KilnTensor
import Testing

/// The ONNX backend test cases (Debian package libonnx-testdata) run through importer and fp32 interpreter.
///
/// `backend-manifest.txt` lists every case whose ops Kiln supports, each either `pass` or `exclude: reason`.
enum BackendSuite {
    static let root = "/usr/share/libonnx-testdata/data"
    static let suites = ["node", "pytorch-converted", "pytorch-operator", "simple"]

    /// Verdicts by case ("node/test_add").
    static let manifest: [String: String] = {
        guard let url = Bundle.module.url(forResource: "backend-manifest", withExtension: "txt"),
              let text = try? String(contentsOf: url, encoding: .utf8) else { return [:] }
        var result: [String: String] = [:]
        for line in text.split(separator: "\n") where !line.hasPrefix("#") && !line.trimmingCharacters(in: .whitespaces).isEmpty {
            let parts = line.split(separator: " ", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            result[parts[0]] = parts.count > 1 ? parts[1] : ""
        }
        return result
    }()

    /// Cases the manifest says must pass.
    static var passing: [String] { manifest.filter { $0.value == "pass" }.map(\.key).sorted() }

    /// Every case folder present on this machine.
    static func allCases() -> [String] {
        suites.flatMap { suite in
            ((try? FileManager.default.contentsOfDirectory(atPath: "\(root)/\(suite)")) ?? [])
                .filter { FileManager.default.fileExists(atPath: "\(root)/\(suite)/\($0)/model.onnx") }
                .map { "\(suite)/\($0)" }
        }.sorted()
    }

    /// ONNX op types a case's model uses, or nil if the model does not even parse.
    static func opTypes(_ name: String) -> Set<String>? {
        (try? ONNXModel(contentsOf: "\(root)/\(name)/model.onnx")).map { Set($0.opHistogram.keys) }
    }

    /// The graph input an import error says must be known at import, if that is the error.
    static func neededAtImport(_ message: String) -> String? {
        guard let range = message.range(of: #"\('([^']+)'\) must be known at import"#, options: .regularExpression) else { return nil }
        let quoted = message[range].split(separator: "'")
        return quoted.count > 1 ? String(quoted[1]) : nil
    }

    /// Runs every data set of a case; returns a description of each mismatch (empty when it passes).
    static func run(_ name: String) throws -> [String] {
        let folder = "\(root)/\(name)"
        let model = try ONNXModel(contentsOf: "\(folder)/model.onnx")
        let sets = try FileManager.default.contentsOfDirectory(atPath: folder).filter { $0.hasPrefix("test_data_set_") }.sorted()
        var problems: [String] = []
        for set in sets {
            func tensors(_ prefix: String) throws -> [ImportedTensor] {
                var result: [ImportedTensor] = []
                while FileManager.default.fileExists(atPath: "\(folder)/\(set)/\(prefix)_\(result.count).pb") {
                    result.append(try ONNXTensorFile.read("\(folder)/\(set)/\(prefix)_\(result.count).pb").value)
                }
                return result
            }
            let inputs = try tensors("input"), expected = try tensors("output")
            var bound: [String: ImportedTensor] = [:]
            var floats: [String: Tensor] = [:]
            for (name, value) in zip(model.inputNames, inputs) {
                switch value {
                case .int: bound[name] = value
                case .float(let t): floats[name] = t
                }
            }
            // Inputs Kiln needs at import (Clip bounds, pad values, shapes) are bound to the test's values.
            var graph: Graph
            while true {
                do {
                    graph = try model.importGraph(ImportOptions(boundInputs: bound, generalizeFixedBatch: false))
                    break
                } catch let error as ONNXError {
                    guard let name = neededAtImport(error.message), let value = floats.removeValue(forKey: name) else { throw error }
                    bound[name] = .float(value)
                }
            }
            let interpreter = try Interpreter(graph)
            let outputs = try interpreter.run(graph.inputs.map { floats[graph[$0].name]! })
            guard outputs.count == expected.count else {
                problems.append("\(set): \(outputs.count) outputs, expected \(expected.count)")
                continue
            }
            for (index, (want, have)) in zip(expected, outputs).enumerated() {
                switch want {
                case .int(let w):
                    let folded = graph.intConstants[graph.outputs[index]]
                    if folded != w { problems.append("\(set) output \(index): int64 \(String(describing: folded)) ≠ \(w)") }
                case .float(let w):
                    guard w.shape == have.shape else {
                        problems.append("\(set) output \(index): shape \(have.shape) ≠ \(w.shape)")
                        continue
                    }
                    let worst = zip(w.scalars, have.scalars).map { abs($0 - $1) - (1e-5 + 1e-3 * abs($0)) }.max() ?? 0
                    let nanMismatch = zip(w.scalars, have.scalars).contains { $0.isNaN != $1.isNaN }
                    if worst > 0 || nanMismatch {
                        problems.append("\(set) output \(index): exceeds rtol 1e-3 / atol 1e-5 by \(worst)")
                    }
                }
            }
        }
        return problems
    }
}

@Suite("ONNX backend conformance")
struct BackendConformanceTests {
    @Test("the test data is installed (Debian libonnx-testdata)")
    func dataIsInstalled() {
        #expect(FileManager.default.fileExists(atPath: "\(BackendSuite.root)/node"),
                "install Debian's libonnx-testdata: the conformance cases live in \(BackendSuite.root)")
    }

    @Test("the manifest lists every case of a supported op, with a reason for each exclusion")
    func manifestCoversSupportedCases() {
        let supported = ONNXModel.supportedOpTypes
        let present = BackendSuite.allCases()
        var missing: [String] = []
        for name in present where BackendSuite.manifest[name] == nil {
            if let ops = BackendSuite.opTypes(name), !ops.isEmpty, ops.isSubset(of: supported) { missing.append(name) }
        }
        #expect(missing.isEmpty, "cases of supported ops missing from backend-manifest.txt:\n\(missing.joined(separator: "\n"))")
        let unknown = BackendSuite.manifest.keys.filter { !present.contains($0) }
        #expect(unknown.isEmpty, "manifest names cases that do not exist: \(unknown.sorted())")
        for (name, verdict) in BackendSuite.manifest where verdict != "pass" {
            #expect(verdict.hasPrefix("exclude: ") && verdict.count > 12, "\(name): exclusion needs a reason, got '\(verdict)'")
        }
    }

    @Test("listed cases pass", arguments: BackendSuite.passing)
    func casePasses(_ name: String) throws {
        let problems = try BackendSuite.run(name)
        #expect(problems.isEmpty, "\(name): \(problems.joined(separator: "; "))")
    }

    @Test("every supported op has at least one passing case")
    func everyOpCovered() {
        var counts: [String: Int] = [:]
        for name in BackendSuite.passing {
            for op in BackendSuite.opTypes(name) ?? [] { counts[op, default: 0] += 1 }
        }
        let report = ONNXModel.supportedOpTypes.sorted().map { "\($0): \(counts[$0] ?? 0)" }.joined(separator: ", ")
        print("backend cases passed per op: \(report)")
        // Ops whose every backend case needs an input type Kiln models do not take, and the test that covers them.
        let coveredElsewhere = [
            "CastLike": "all its cases cast to or from float64, float16, bfloat16 or strings; PyTorch's exporter emits it on constants, covered by UserExportTests (models/zoo)",
            "SplitToSequence": "its only backend case takes float64 inputs; PyTorch's exporter writes chunk() this way, covered by EdgeZooTests (models/edge: shufflenet_v2, tiny_yolo)",
            "SequenceAt": "as SplitToSequence",
            "Gelu": "an opset-20 op with no case in libonnx-testdata 1.12; its definition is checked by the gradient and lookup-table tests and against PyTorch on models/edge",
        ]
        for op in ONNXModel.supportedOpTypes where coveredElsewhere[op] == nil {
            #expect((counts[op] ?? 0) >= 1, "no passing backend case uses \(op)")
        }
        for (op, reason) in coveredElsewhere {
            #expect((counts[op] ?? 0) == 0, "\(op) now has a passing backend case; drop it from coveredElsewhere (\(reason))")
        }
    }
}
