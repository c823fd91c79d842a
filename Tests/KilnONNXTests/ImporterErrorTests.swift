import Foundation
import KilnGraph
@testable import KilnONNX
import KilnTestSupport
import Testing

/// Builds small ONNX models in memory for importer tests.
enum ModelBuilder {
    static func node(_ op: String, _ inputs: [String], _ outputs: [String], name: String = "",
                     ints: [String: [Int64]] = [:]) -> Onnx_NodeProto {
        var node = Onnx_NodeProto()
        node.opType = op
        node.input = inputs
        node.output = outputs
        node.name = name
        for (key, values) in ints {
            var attribute = Onnx_AttributeProto()
            attribute.name = key
            attribute.type = .ints
            attribute.ints = values
            node.attribute.append(attribute)
        }
        return node
    }

    static func valueInfo(_ name: String, _ dims: [Int64?]) -> Onnx_ValueInfoProto {
        var info = Onnx_ValueInfoProto()
        info.name = name
        var type = Onnx_TypeProto.Tensor()
        type.elemType = 1
        var shape = Onnx_TensorShapeProto()
        shape.dim = dims.map { d in
            var dim = Onnx_TensorShapeProto.Dimension()
            if let d { dim.dimValue = d } else { dim.dimParam = "N" }
            return dim
        }
        type.shape = shape
        info.type.tensorType = type
        return info
    }

    static func initializer(_ name: String, _ dims: [Int64], _ values: [Float]) -> Onnx_TensorProto {
        var tensor = Onnx_TensorProto()
        tensor.name = name
        tensor.dims = dims
        tensor.dataType = 1
        tensor.floatData = values
        return tensor
    }

    static func model(nodes: [Onnx_NodeProto], initializers: [Onnx_TensorProto] = [], opset: Int64 = 13,
                      input: Onnx_ValueInfoProto = valueInfo("x", [nil, 1, 4, 4]), output: String = "y") -> Data {
        var graph = Onnx_GraphProto()
        graph.name = "test"
        graph.node = nodes
        graph.initializer = initializers
        graph.input = [input]
        graph.output = [valueInfo(output, [])]
        var model = Onnx_ModelProto()
        model.irVersion = 8
        var set = Onnx_OperatorSetIdProto()
        set.version = opset
        model.opsetImport = [set]
        model.graph = graph
        return try! model.serializedData()
    }

    /// x [N,1,4,4] → Conv(w 2×1×3×3, pad 1) → Relu → y.
    static var valid: Data {
        model(nodes: [node("Conv", ["x", "w"], ["c"], name: "conv", ints: ["pads": [1, 1, 1, 1]]),
                      node("Relu", ["c"], ["y"], name: "relu")],
              initializers: [initializer("w", [2, 1, 3, 3], (0..<18).map { Float($0) / 10 })])
    }
}

@Suite("importer errors")
struct ImporterErrorTests {
    func message(_ data: Data) -> String? {
        do {
            _ = try ONNXModel(data: data, file: "model.onnx").importGraph()
            return nil
        } catch let error as ONNXError {
            return error.description
        } catch {
            return "unexpected error type: \(error)"
        }
    }

    @Test("a valid small model imports")
    func valid() throws {
        let graph = try ONNXModel(data: ModelBuilder.valid, file: "model.onnx").importGraph()
        #expect(graph.opHistogram == ["Conv": 1, "Relu": 1])
        #expect(graph[graph.inputs[0]].shape == [batchDimension, 1, 4, 4])
    }

    @Test("an empty file")
    func empty() {
        #expect(message(Data()) == "model.onnx: file is empty")
    }

    @Test("truncated files never crash and name the file", arguments: [1, 7, 20, 50, 100, 200])
    func truncated(_ length: Int) {
        let data = ModelBuilder.valid
        let text = message(data.prefix(min(length, data.count - 1)))
        #expect(text?.hasPrefix("model.onnx: ") == true)
    }

    @Test("random bytes are refused with a clear error", arguments: 0..<20)
    func randomBytes(_ seed: Int) {
        var state = UInt64(seed) &* 0x9E37_79B9_7F4A_7C15 &+ 1
        let bytes = (0..<(64 + seed * 37)).map { _ -> UInt8 in
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return UInt8(truncatingIfNeeded: state >> 33)
        }
        let text = message(Data(bytes))
        #expect(text?.hasPrefix("model.onnx: ") == true)
    }

    @Test("a missing initializer names the node and the value")
    func missingInitializer() {
        let data = ModelBuilder.model(nodes: [ModelBuilder.node("Conv", ["x", "w"], ["y"], name: "conv1")])
        #expect(message(data) == "model.onnx: node 'conv1' (Conv): reads 'w', which is not a graph input, an initializer or an earlier node's output")
    }

    @Test("every unsupported op type is listed in one error, with its nodes")
    func unsupportedOps() {
        let data = ModelBuilder.model(nodes: [
            ModelBuilder.node("Relu", ["x"], ["a"], name: "r"),
            ModelBuilder.node("Hardmax", ["a"], ["b"], name: "hardmax1"),
            ModelBuilder.node("LSTM", ["b"], ["c"], name: "lstm"),
            ModelBuilder.node("Hardmax", ["c"], ["y"], name: "hardmax2"),
        ])
        #expect(message(data) == "model.onnx: unsupported op types: Hardmax (2 nodes: 'hardmax1', 'hardmax2'); LSTM (1 node: 'lstm')")
    }

    @Test("an initializer whose data disagrees with its shape")
    func badInitializer() {
        let data = ModelBuilder.model(nodes: [ModelBuilder.node("Conv", ["x", "w"], ["y"])],
                                      initializers: [ModelBuilder.initializer("w", [2, 1, 3, 3], [1, 2, 3])])
        #expect(message(data) == "model.onnx: initializer 'w': tensor 'w' declares shape [2, 1, 3, 3] (18 elements) but its float_data holds 3")
    }

    @Test("an opset outside the supported range")
    func badOpset() {
        let data = ModelBuilder.model(nodes: [ModelBuilder.node("Relu", ["x"], ["y"])], opset: 99)
        #expect(message(data) == "model.onnx: opset 99 is not supported (Kiln reads opsets 1–21)")
    }

    @Test("shapes that do not fit an op name the node")
    func shapeMismatch() {
        let data = ModelBuilder.model(nodes: [ModelBuilder.node("Conv", ["x", "w"], ["y"], name: "conv")],
                                      initializers: [ModelBuilder.initializer("w", [2, 3, 3, 3], [Float](repeating: 0, count: 54))])
        #expect(message(data)?.contains("node 'conv' (Conv): input has 1 channels but weight [2, 3, 3, 3]") == true)
    }

    @Test("every truncation of a real teacher is an error or a valid model, never a trap")
    func truncatedTeacher() throws {
        let data = try Data(contentsOf: URL(fileURLWithPath: Repository.path("models/efficientnet_lite0.onnx")))
        for length in stride(from: 0, to: 200_000, by: 4_999) {
            _ = message(data.prefix(length))
        }
    }
}

/// Inputs that once crashed a fuzz target (Fuzz/regressions, kept as found): each must now give a graph or an
/// error naming the problem.
@Suite("fuzzing regressions")
struct FuzzRegressionTests {
    @Test("every ONNX input found by fuzzing imports or fails cleanly")
    func onnxFindings() throws {
        let folder = Repository.root.appendingPathComponent("Fuzz/regressions")
        let files = try FileManager.default.contentsOfDirectory(atPath: folder.path).filter { $0.hasPrefix("onnx-") }.sorted()
        #expect(!files.isEmpty)
        for file in files {
            let data = try Data(contentsOf: folder.appendingPathComponent(file))
            do {
                _ = try ONNXModel(data: data, file: file).importGraph()
            } catch {
                #expect("\(error)".contains(file), "errors name the file: \(error)")
                print("\(file): \(error)")
            }
        }
    }
}
