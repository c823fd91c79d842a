import Foundation
import KilnGraph
import KilnONNX
import KilnRuntime
import KilnTensor

/// A model the CLI can run: an ONNX teacher on the fp32 interpreter, or an int8 `.kiln` student on KilnRuntime.
struct LoadedModel {
    enum Backend {
        case teacher(ONNXModel, Graph, Interpreter)
        case student(KilnModel)
    }

    /// Path as given.
    let path: String
    let backend: Backend

    /// Loads a model file; `.kiln` files are recognised by their magic bytes, everything else is read as ONNX.
    init(path: String) throws {
        guard FileManager.default.fileExists(atPath: path) else {
            throw DataFileError(file: path, "no such file")
        }
        self.path = path
        let head = (try? FileHandle(forReadingFrom: URL(fileURLWithPath: path)).read(upToCount: 8)) ?? Data()
        if head.elementsEqual(KilnFile.magic) {
            backend = .student(try KilnModel(contentsOf: URL(fileURLWithPath: path),
                                             options: KilnModel.Options(threads: Parallel.threadCount, kernels: try requestedKernels())))
        } else {
            let onnx = try ONNXModel(contentsOf: path)
            let graph = try importTeacher(onnx)
            backend = .teacher(onnx, graph, try Interpreter(graph))
        }
    }

    /// The imported graph of an ONNX teacher.
    var graph: Graph? {
        if case .teacher(_, let graph, _) = backend { return graph }
        return nil
    }

    /// Number of inputs and outputs.
    var signature: (inputs: Int, outputs: Int) {
        switch backend {
        case .teacher(_, let graph, _): return (graph.inputs.count, graph.outputs.count)
        case .student(let model): return (model.inputs.count, model.outputs.count)
        }
    }

    /// The names of the model's outputs, in order.
    var outputNames: [String] {
        switch backend {
        case .teacher(_, let graph, _): return graph.outputs.map { graph[$0].name }
        case .student(let model): return model.outputs.map(\.name)
        }
    }

    /// Runs a single-input, single-output model on one batch.
    func predict(_ x: Tensor) throws -> Tensor { try predictOutputs(x)[0] }

    /// Runs a single-input model on one batch; every output, in the model's order.
    func predictOutputs(_ x: Tensor) throws -> [Tensor] {
        switch backend {
        case .teacher(_, _, let interpreter):
            return try interpreter.run([x])
        case .student(let model):
            let spec = model.inputs[0]
            guard x.rank == spec.shape.count, Array(x.shape.dropFirst()) == Array(spec.shape.dropFirst()) else {
                throw KilnRuntimeError(message: "input '\(spec.name)' expects \(spec.shape.shapeDescription), got \(x.shape.shapeDescription)")
            }
            return try zip(model.predictOutputs(x.scalars), model.outputs).map { values, output in
                Tensor(shape: [x.shape[0]] + output.shape.dropFirst(), scalars: values)
            }
        }
    }

    /// The shape of the model's first input (batch dimension first).
    var inputShape: [Int] {
        switch backend {
        case .teacher(_, let graph, _): return graph.inputs.first.map { graph[$0].shape } ?? []
        case .student(let model): return model.inputs.first?.shape ?? []
        }
    }

    /// The model's metadata (an ONNX teacher's or a student's).
    var metadata: [String: String] {
        switch backend {
        case .teacher(_, let graph, _): return graph.metadata
        case .student(let model): return model.student.metadata
        }
    }
}

/// The student kernels `KILN_ISA` forces (to compare tiers on one machine), else the best this CPU runs.
func requestedKernels() throws -> KernelChoice {
    try KernelChoice.requested(ProcessInfo.processInfo.environment["KILN_ISA"])
}

/// Imports an ONNX teacher; a model exported at a fixed batch size runs at any batch size once it is checked
/// that its samples do not mix.
func importTeacher(_ onnx: ONNXModel) throws -> Graph {
    let graph = try onnx.importGraph()
    if graph.metadata["kiln.exported_batch"] != nil {
        do {
            try Interpreter(graph).checkBatchIndependence()
        } catch let error as InterpreterError {
            throw DataFileError(file: onnx.file, "exported with a fixed batch of \(graph.metadata["kiln.exported_batch"]!): \(error.message)")
        }
    }
    return graph
}
