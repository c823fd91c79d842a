import ArgumentParser
import Foundation
import KilnGraph

/// `kiln inspect MODEL`: inputs, outputs, ops, size, MACs and warnings.
struct InspectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect", abstract: "Show a model's inputs, outputs, op histogram, parameters, MACs and warnings.")

    @Argument(help: "The model (.onnx).")
    var model: String

    @Flag(help: "Print one JSON object instead of text.")
    var json = false

    func run() throws {
        try reportingErrors {
            let loaded = try LoadedModel(path: model)
            let report = InspectReport(loaded)
            if json {
                try printJSON(report)
            } else {
                print(report.text)
            }
        }
    }
}

/// Name and static shape of a graph input or output ("N" is the batch dimension).
struct TensorInfo: Encodable {
    var name: String
    var shape: [String]

    init(_ graph: Graph, _ id: ValueID) {
        name = graph[id].name
        shape = graph[id].shape.map { $0 == batchDimension ? "N" : String($0) }
    }
}

/// What `kiln inspect` reports.
struct InspectReport: Encodable {
    var file: String
    var format = "onnx"
    var producer: String
    var irVersion: Int
    var opset: Int
    var inputs: [TensorInfo]
    var outputs: [TensorInfo]
    var onnxOps: [String: Int]
    var ops: [String: Int]
    var parameters: Int
    var macs: Int
    var batchNorms: Int
    var metadata: [String: String]
    var warnings: [String]

    init(_ model: LoadedModel) {
        let graph = model.graph
        file = model.path
        producer = model.onnx.producer
        irVersion = model.onnx.irVersion
        opset = model.onnx.opset
        inputs = graph.inputs.map { TensorInfo(graph, $0) }
        outputs = graph.outputs.map { TensorInfo(graph, $0) }
        onnxOps = model.onnx.opHistogram
        ops = graph.opHistogram
        parameters = graph.parameterCount
        macs = graph.macsPerSample
        batchNorms = graph.batchNormCount
        metadata = graph.metadata
        warnings = []
        if batchNorms == 0 {
            warnings.append("no BatchNormalization nodes: zero-shot synthesis needs them (export with training=TrainingMode.PRESERVE and do_constant_folding=False); calibration with real data still works")
        }
        if !graph.inputs.contains(where: { graph[$0].shape.first == batchDimension }) {
            warnings.append("the batch dimension is fixed; the model runs only at batch size \(graph.inputs.first.map { graph[$0].shape.first ?? 1 } ?? 1)")
        }
    }

    var text: String {
        func list(_ values: [TensorInfo]) -> String {
            values.map { "  \($0.name) [\($0.shape.joined(separator: ", "))]" }.joined(separator: "\n")
        }
        func histogram(_ h: [String: Int]) -> String {
            h.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }
                .map { "  \($0.key.padding(toLength: 22, withPad: " ", startingAt: 0)) \($0.value)" }
                .joined(separator: "\n")
        }
        var lines = [
            "file:        \(file)",
            "producer:    \(producer.isEmpty ? "(unknown)" : producer)",
            "ONNX:        IR version \(irVersion), opset \(opset)",
            "inputs:\n\(list(inputs))",
            "outputs:\n\(list(outputs))",
            "parameters:  \(parameters.formatted())",
            "MACs:        \(macs.formatted()) per sample",
            "BatchNorm:   \(batchNorms)",
            "ONNX ops (\(onnxOps.values.reduce(0, +)) nodes):\n\(histogram(onnxOps))",
            "Kiln IR ops (\(ops.values.reduce(0, +)) nodes):\n\(histogram(ops))",
        ]
        if !metadata.isEmpty {
            lines.append("metadata:\n" + metadata.sorted { $0.key < $1.key }.map { "  \($0.key) = \($0.value)" }.joined(separator: "\n"))
        }
        lines += warnings.map { "warning: \($0)" }
        return lines.joined(separator: "\n")
    }
}
