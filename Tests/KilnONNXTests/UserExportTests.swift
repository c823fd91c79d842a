import Foundation
import KilnGraph
@testable import KilnONNX
import KilnTensor
import KilnTestSupport
import Testing

/// Models exported the way users export them (models/zoo: PyTorch's default exporter, a fixed batch of 1, weights in
/// an external `.onnx.data` file, no Kiln metadata).
enum Zoo {
    static let names = Repository.zoo.keys.sorted()

    static func path(_ name: String) -> String { Repository.path("models/zoo/\(Repository.zoo[name]!.file)") }
}

@Suite("models as users export them")
struct UserExportTests {
    @Test("every zoo teacher imports with a batch dimension and reaches the top-1 PyTorch measured", arguments: Zoo.names)
    func zooTeacher(_ name: String) throws {
        let teacher = Repository.zoo[name]!
        let graph = try ONNXModel(contentsOf: Zoo.path(name)).importGraph()
        #expect(graph[graph.inputs[0]].shape == [batchDimension, 1, 28, 28])
        #expect(graph.metadata["kiln.exported_batch"] == "1")
        #expect(graph.metadata.keys.allSatisfy { !$0.hasPrefix("kiln.input") }, "zoo teachers carry no input metadata")
        #expect(graph.batchNormCount > 0)
        let interpreter = try Interpreter(graph)
        try interpreter.checkBatchIndependence()
        let data = try FashionMNIST(split: .test)
        var correct = 0
        for start in stride(from: 0, to: data.count, by: 1000) {
            let logits = try interpreter.run([data.tensor(start..<(start + 1000), mean: teacher.input_mean, std: teacher.input_std)])[0]
            for row in 0..<1000 {
                let values = logits.scalars[(row * 10)..<((row + 1) * 10)]
                if values.indices.max(by: { values[$0] < values[$1] })! - row * 10 == data.labels[start + row] { correct += 1 }
            }
        }
        print("\(name) (\(teacher.exporter)): Kiln fp32 top-1 \(Double(correct) / 100)%, PyTorch \(teacher.top1 * 100)%")
        #expect(abs(Double(correct) / 10_000 - teacher.top1) <= 0.0002)
    }

    @Test("external data: a missing, truncated or escaping data file is a clear error")
    func externalDataErrors() throws {
        let name = try #require(Zoo.names.first { FileManager.default.fileExists(atPath: Zoo.path($0) + ".data") })
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("kiln-external-\(getpid())")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let model = folder.appendingPathComponent("model.onnx").path
        var proto = try Onnx_ModelProto(serializedBytes: try Data(contentsOf: URL(fileURLWithPath: Zoo.path(name))))
        func write(location: String) throws {
            for i in proto.graph.initializer.indices {
                for j in proto.graph.initializer[i].externalData.indices where proto.graph.initializer[i].externalData[j].key == "location" {
                    proto.graph.initializer[i].externalData[j].value = location
                }
            }
            try proto.serializedData().write(to: URL(fileURLWithPath: model))
        }
        func expectError(_ fragments: [String]) {
            do {
                _ = try ONNXModel(contentsOf: model)
                Issue.record("expected an error containing \(fragments)")
            } catch let error as ONNXError {
                for fragment in fragments { #expect(error.description.contains(fragment), "\(error.description)") }
            } catch {
                Issue.record("unexpected \(error)")
            }
        }
        try write(location: "weights.bin")
        expectError(["model.onnx", "weights.bin", "next to the model"])
        let bytes = try Data(contentsOf: URL(fileURLWithPath: Zoo.path(name) + ".data"))
        try bytes.prefix(bytes.count / 2).write(to: folder.appendingPathComponent("weights.bin"))
        expectError(["weights.bin", "beyond the file's \(bytes.count / 2) bytes"])
        try write(location: "../weights.bin")
        expectError(["must be a relative path inside the model's folder"])
        try bytes.write(to: folder.appendingPathComponent("weights.bin"))
        try write(location: "weights.bin")
        let graph = try ONNXModel(contentsOf: model).importGraph()
        #expect(graph.parameterCount == (try ONNXModel(contentsOf: Zoo.path(name)).importGraph()).parameterCount)
        // Read from memory, the model has no folder to find its data in.
        do {
            _ = try ONNXModel(data: try Data(contentsOf: URL(fileURLWithPath: model)), file: "memory")
            Issue.record("external data without a folder must fail")
        } catch let error as ONNXError {
            #expect(error.message.contains("no folder"))
        }
    }

    @Test("a fixed-batch export runs at any batch size: the batch-1 Reshape target keeps the batch")
    func fixedBatchGeneralized() throws {
        let vgg = try ONNXModel(contentsOf: Zoo.path("vgg"))
        let graph = try vgg.importGraph()
        let asExported = try vgg.importGraph(ImportOptions(generalizeFixedBatch: false))
        #expect(asExported[asExported.inputs[0]].shape == [1, 1, 28, 28])
        #expect(asExported.metadata["kiln.exported_batch"] == nil)
        let data = try FashionMNIST(split: .test)
        let x = data.tensor(0..<5, mean: 0.286, std: 0.353)
        let together = try Interpreter(graph).run([x])[0]
        let exported = try Interpreter(asExported)
        for i in 0..<5 {
            let alone = try exported.run([data.tensor(i..<(i + 1), mean: 0.286, std: 0.353)])[0]
            let part = Array(together.scalars[(i * 10)..<((i + 1) * 10)])
            #expect(zip(part, alone.scalars).allSatisfy { abs($0 - $1) <= 1e-5 * (1 + abs($1)) })
        }
    }
}
