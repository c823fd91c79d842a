import Foundation
import KilnGraph
import KilnONNX
import KilnTensor

/// A model the CLI can run: an ONNX teacher executed by the fp32 interpreter.
struct LoadedModel {
    /// Path as given.
    let path: String
    /// The imported graph.
    let graph: Graph
    /// The ONNX file as parsed.
    let onnx: ONNXModel
    private let interpreter: Interpreter

    /// Loads and imports a model file.
    init(path: String) throws {
        guard FileManager.default.fileExists(atPath: path) else {
            throw ONNXError(file: path, "no such file")
        }
        self.path = path
        onnx = try ONNXModel(contentsOf: path)
        graph = try onnx.importGraph()
        interpreter = try Interpreter(graph)
    }

    /// Name and static shape of the single input.
    var input: (name: String, shape: [Int]) {
        (graph[graph.inputs[0]].name, graph[graph.inputs[0]].shape)
    }

    /// Runs the model on one batch.
    func predict(_ inputs: [Tensor]) throws -> [Tensor] {
        try interpreter.run(inputs)
    }

    /// Input normalization stored in the model's metadata (`kiln.input_mean`, `kiln.input_std`), if any.
    var normalization: (mean: Float, std: Float)? {
        guard let mean = graph.metadata["kiln.input_mean"].flatMap(Float.init),
              let std = graph.metadata["kiln.input_std"].flatMap(Float.init) else { return nil }
        return (mean, std)
    }
}
