import ArgumentParser
import Foundation
import KilnGraph
import KilnQuant
import KilnRuntime

/// `kiln inspect MODEL`: inputs, outputs, ops, size, MACs and warnings.
struct InspectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect", abstract: "Show a model's inputs, outputs, op histogram, parameters, MACs and warnings.")

    @Argument(help: "The model (.onnx teacher or .kiln student).")
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

/// Name and static shape of a model input or output ("N" is the batch dimension).
struct TensorInfo: Encodable {
    var name: String
    var shape: [String]

    init(name: String, shape: [Int]) {
        self.name = name
        self.shape = shape.map { $0 == batchDimension ? "N" : String($0) }
    }
}

/// What `kiln inspect` reports.
struct InspectReport: Encodable {
    var file: String
    var format: String
    var producer: String?
    var irVersion: Int?
    var opset: Int?
    var inputs: [TensorInfo]
    var outputs: [TensorInfo]
    var onnxOps: [String: Int]?
    var ops: [String: Int]
    var parameters: Int
    var macs: Int
    /// A teacher's activation elements per sample (`Graph.activationsPerSample`).
    var activations: Int?
    var batchNorms: Int?
    var metadata: [String: String]
    /// What real inputs look like, as the metadata states it ("unknown" when it does not).
    var inputDomain: String
    /// How image files become inputs, when the metadata records it (`ImagePreprocessing`).
    var imagePreprocessing: String?
    /// A teacher's real-input statistics as its first BatchNorm gives them (`InputStatistics`).
    var estimatedInputMean: [Float]?
    var estimatedInputStd: Float?
    /// A teacher's int8 lowering: "full", or the nodes that would not lower and why.
    var lowering: String?
    var unloweredNodes: [UnloweredNode]?
    /// Nodes without an int8 kernel that would run as fp32 islands, and why.
    var islandNodes: [UnloweredNode]?
    /// A student's kernels on this CPU (KILN_ISA may force a lower tier).
    var kernels: String?
    var warnings: [String] = []

    init(_ model: LoadedModel) {
        file = model.path
        do {
            imagePreprocessing = try ImagePreprocessing(metadata: model.metadata)?.description
        } catch {
            warnings.append("\(error)")
        }
        switch model.backend {
        case .teacher(let onnx, let graph, _):
            format = "onnx"
            producer = onnx.producer
            irVersion = onnx.irVersion
            opset = onnx.opset
            inputs = graph.inputs.map { TensorInfo(name: graph[$0].name, shape: graph[$0].shape) }
            outputs = graph.outputs.map { TensorInfo(name: graph[$0].name, shape: graph[$0].shape) }
            onnxOps = onnx.opHistogram
            ops = graph.opHistogram
            parameters = graph.parameterCount
            macs = graph.macsPerSample
            activations = graph.activationsPerSample
            batchNorms = graph.batchNormCount
            metadata = graph.metadata
            if graph.batchNormCount == 0 {
                warnings.append("no BatchNormalization nodes: zero-shot synthesis needs them. \(Synthesizer.batchNormExportAdvice); calibration with real data still works")
            }
            if !graph.inputs.contains(where: { graph[$0].shape.first == batchDimension }) {
                warnings.append("the batch dimension is fixed; the model runs only at that batch size")
            }
            inputDomain = InspectReport.describeDomain(graph.metadata, &warnings)
            do {
                let (unlowered, islands) = (try Quantizer.unloweredNodes(graph), try Quantizer.islandNodes(graph))
                (unloweredNodes, islandNodes) = (unlowered, islands)
                if !unlowered.isEmpty {
                    lowering = "not possible: \(unlowered.count) node(s) cannot run in a student — " + unlowered.map(\.reason).joined(separator: "; ")
                } else if islands.isEmpty {
                    lowering = "full: every node has an int8 kernel"
                } else {
                    let ops = Dictionary(grouping: islands, by: \.op).map { "\($0.value.count) \($0.key)" }.sorted().joined(separator: ", ")
                    lowering = "\(islands.count) node(s) run as fp32 islands (\(ops)), the rest in int8 — "
                        + islands.prefix(5).map(\.reason).joined(separator: "; ") + (islands.count > 5 ? "; …" : "")
                }
            } catch {
                lowering = "not possible: \(error)"
            }
            if let estimate = InputStatistics.estimate(graph) {
                (estimatedInputMean, estimatedInputStd) = (estimate.mean, estimate.std)
            }
        case .student(let kiln):
            let student = kiln.student
            inputDomain = InspectReport.describeDomain(student.metadata, &warnings)
            kernels = "\(kiln.options.kernels) on \(KernelChoice.cpuModel)"
            format = "kiln v\(KilnFile.version) (int8 student)"
            inputs = kiln.inputs.map { TensorInfo(name: $0.name, shape: $0.shape) }
            outputs = kiln.outputs.map { TensorInfo(name: $0.name, shape: $0.shape) }
            ops = student.layers.reduce(into: [:]) { $0[$1.op.displayName, default: 0] += 1 }
            parameters = kiln.parameterCount
            macs = kiln.macsPerSample
            metadata = student.metadata
        }
    }

    /// The input domain a model's metadata states, for the report.
    static func describeDomain(_ metadata: [String: String], _ warnings: inout [String]) -> String {
        do {
            if let domain = try InputDomain(metadata: metadata) {
                let quantized = metadata["kiln.input_quantized_range"].map { ", input quantized over [\($0.replacingOccurrences(of: ",", with: ", "))]" } ?? ""
                return "\(domain)\(quantized)"
            }
        } catch {
            warnings.append("the input domain metadata is malformed: \(error)")
            return "malformed metadata"
        }
        if let assumed = metadata["kiln.input_domain_assumed"], let range = metadata["kiln.input_quantized_range"] {
            return "unknown; input quantized over [\(range.replacingOccurrences(of: ",", with: ", "))], \(assumed)"
        }
        return "unknown (state it with --preprocess, --input-mean/--input-std or --input-range when quantizing)"
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
        var lines = ["file:        \(file)", "format:      \(format)"]
        if let producer { lines.append("producer:    \(producer.isEmpty ? "(unknown)" : producer)") }
        if let irVersion, let opset { lines.append("ONNX:        IR version \(irVersion), opset \(opset)") }
        lines += [
            "inputs:\n\(list(inputs))",
            "input domain: \(inputDomain)",
        ]
        if let imagePreprocessing { lines.append("images:      \(imagePreprocessing)") }
        if let estimatedInputMean, let estimatedInputStd {
            lines.append("estimated from the first BatchNorm: input mean " + estimatedInputMean.map { String(format: "%.3f", $0) }.joined(separator: ",")
                         + String(format: ", std %.3f", estimatedInputStd))
        }
        lines += [
            "outputs:\n\(list(outputs))",
            "parameters:  \(parameters.formatted())",
        ]
        if let kernels { lines.append("kernels:     \(kernels)") }
        lines += [
            "MACs:        \(macs.formatted()) per sample",
        ]
        if let activations { lines.append("activations: \(activations.formatted()) floats per sample") }
        if let batchNorms { lines.append("BatchNorm:   \(batchNorms)") }
        if let lowering { lines.append("int8 lowering: \(lowering)") }
        if let onnxOps { lines.append("ONNX ops (\(onnxOps.values.reduce(0, +)) nodes):\n\(histogram(onnxOps))") }
        lines.append("\(onnxOps == nil ? "layers" : "Kiln IR ops") (\(ops.values.reduce(0, +))):\n\(histogram(ops))")
        if !metadata.isEmpty {
            lines.append("metadata:\n" + metadata.sorted { $0.key < $1.key }.map { "  \($0.key) = \($0.value)" }.joined(separator: "\n"))
        }
        lines += warnings.map { "warning: \($0)" }
        return lines.joined(separator: "\n")
    }
}
