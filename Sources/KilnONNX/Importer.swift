import KilnGraph

/// Converts one ONNX graph into the Kiln IR, node by node, folding shape arithmetic as it goes.
///
/// Values known at import are kept as `Folded` pairs evaluated with two unusual probe batch sizes: where an entry
/// equals the probe in both, it is the batch size N; where both agree, it is a constant. This lets exporters'
/// `Shape → Gather → Unsqueeze → Concat → Reshape` chains on a dynamic batch dimension fold to static IR attributes.
struct Importer {
    /// Probe batch sizes for the two evaluations of batch-dependent folded values.
    static let probes = (7919, 7927)

    /// What an ONNX value name stands for during import.
    enum Value {
        /// A float tensor computed when the graph runs.
        case runtime(ValueID)
        /// A value known at import.
        case folded(Folded)
        /// An ONNX sequence of runtime tensors (SplitToSequence's output, read by SequenceAt).
        case sequence([ValueID])
        /// A runtime tensor of a fixed-batch export reshaped whole, batch included, to one dimension: only a Gather of
        /// its elements in order (PyTorch's `as_strided` of a contiguous view) can read it.
        case flattened(ValueID)
    }

    /// A value known at import, evaluated for both probe batch sizes (the same if it does not depend on N).
    struct Folded {
        var small: ImportedTensor
        var large: ImportedTensor
        var dependsOnBatch: Bool

        init(_ value: ImportedTensor) {
            small = value
            large = value
            dependsOnBatch = false
        }

        init(small: ImportedTensor, large: ImportedTensor) {
            self.small = small
            self.large = large
            dependsOnBatch = true
        }
    }

    let model: ONNXModel
    let options: ImportOptions
    var graph: Graph
    var values: [String: Value] = [:]
    /// Folded float values already turned into graph constants, by ONNX name.
    var materialized: [String: ValueID] = [:]
    /// ONNX value names that some node or graph output reads.
    let usedNames: Set<String>
    /// The fixed batch size the model was exported with, when the import turned it into a batch dimension.
    var exportedBatch: Int?

    init(model: ONNXModel, options: ImportOptions) {
        self.model = model
        self.options = options
        let name = model.proto.graph.name
        graph = Graph(name: name.isEmpty ? "model" : name)
        graph.metadata = model.metadata
        usedNames = Set(model.proto.graph.node.flatMap(\.input) + model.proto.graph.output.map(\.name))
    }

    var opset: Int { model.opset }

    mutating func run() throws -> Graph {
        let proto = model.proto.graph
        try checkSupported(proto.node)
        for tensor in proto.initializer {
            do {
                values[tensor.name] = .folded(Folded(try tensor.decode()))
            } catch let failure as ImportFailure {
                throw ONNXError(file: model.file, "initializer '\(tensor.name)': \(failure.message)")
            }
        }
        for input in proto.input where values[input.name] == nil {
            if let bound = options.boundInputs[input.name] {
                values[input.name] = .folded(Folded(bound))
                continue
            }
            var shape = try inputShape(input)
            // An image input (rank ≥ 3) with a fixed first dimension was exported at a fixed batch size.
            if options.generalizeFixedBatch, shape.count >= 3, shape[0] != batchDimension,
               shape[0] >= 1, exportedBatch == nil || exportedBatch == shape[0] {
                exportedBatch = shape[0]
                shape[0] = batchDimension
            }
            values[input.name] = .runtime(graph.addInput(name: input.name, shape: shape))
        }
        if let exportedBatch { graph.metadata["kiln.exported_batch"] = String(exportedBatch) }
        for (index, node) in proto.node.enumerated() {
            let label = node.name.isEmpty ? (node.output.first.map { "#\(index) → \($0)" } ?? "#\(index)") : node.name
            do {
                try importNode(node, label: label)
            } catch let failure as ImportFailure {
                throw ONNXError(file: model.file, "node '\(label)' (\(node.opType)): \(failure.message)")
            } catch let error as GraphError {
                throw ONNXError(file: model.file, error.description)
            }
        }
        for output in proto.output {
            guard let value = values[output.name] else {
                throw ONNXError(file: model.file, "graph output '\(output.name)' is never computed")
            }
            switch value {
            case .runtime(let id):
                if graph[id].name != output.name, !graph.inputs.contains(id), !graph.outputs.contains(id),
                   graph.value(named: output.name) == nil {
                    graph.rename(id, to: output.name)
                }
                graph.outputs.append(id)
            case .sequence:
                throw ONNXError(file: model.file, "graph output '\(output.name)' is a sequence; only tensor outputs are supported")
            case .flattened:
                throw ONNXError(file: model.file, "graph output '\(output.name)' flattens the batch dimension with the others")
            case .folded(let folded):
                guard !folded.dependsOnBatch else {
                    throw ONNXError(file: model.file, "graph output '\(output.name)' is a constant that depends on the batch size")
                }
                switch folded.small {
                case .float(let t): graph.outputs.append(graph.addConstant(name: output.name, t))
                case .int(let t): graph.outputs.append(graph.addIntConstant(name: output.name, t))
                }
            }
        }
        graph.eliminateDeadCode()
        graph.recognizeActivations()
        do {
            try graph.verify()
        } catch let error as GraphError {
            throw ONNXError(file: model.file, "imported graph is invalid: \(error.description)")
        }
        return graph
    }

    /// Throws one error listing every unsupported op type and the nodes that use it.
    func checkSupported(_ nodes: [Onnx_NodeProto]) throws {
        var unsupported: [String: [String]] = [:]
        for (index, node) in nodes.enumerated() {
            var type = node.qualifiedOpType
            let known = node.domain.isEmpty || node.domain == "ai.onnx"
            if let minimum = Importer.minimumOpset[node.opType], opset < minimum {
                type += " before opset \(minimum)"
            } else if known && (Importer.handlers[node.opType] != nil || ONNXModel.supportedOpTypes.contains(node.opType)) {
                continue
            }
            unsupported[type, default: []].append(node.name.isEmpty ? "#\(index)" : node.name)
        }
        guard !unsupported.isEmpty else { return }
        let list = unsupported.keys.sorted().map { type in
            let nodes = unsupported[type]!
            let shown = nodes.prefix(5).map { "'\($0)'" }.joined(separator: ", ")
            return "\(type) (\(nodes.count) node\(nodes.count == 1 ? "" : "s"): \(shown)\(nodes.count > 5 ? ", …" : ""))"
        }
        throw ONNXError(file: model.file, "unsupported op type\(unsupported.count == 1 ? "" : "s"): " + list.joined(separator: "; "))
    }

    /// Static shape of a graph input; a symbolic or missing first dimension is the batch size.
    func inputShape(_ input: Onnx_ValueInfoProto) throws -> [Int] {
        guard case .tensorType(let type)? = input.type.value else {
            throw ONNXError(file: model.file, "graph input '\(input.name)' is not a tensor")
        }
        guard type.elemType == 1 else {
            throw ONNXError(file: model.file, "graph input '\(input.name)' has element type \(Onnx_TensorProto.DataType(rawValue: Int(type.elemType)).map { "\($0)" } ?? "\(type.elemType)"); Kiln models take float32 inputs")
        }
        guard type.hasShape else {
            throw ONNXError(file: model.file, "graph input '\(input.name)' has no shape; Kiln needs static sizes except the batch dimension")
        }
        return try type.shape.dim.enumerated().map { axis, dim in
            if case .dimValue(let v)? = dim.value, v >= 0, v <= Int64(maximumElementCount) { return Int(v) }
            if axis == 0 { return batchDimension }
            throw ONNXError(file: model.file, "dimension \(axis) of graph input '\(input.name)' is not fixed; only the first (batch) dimension may be symbolic")
        }
    }

    mutating func importNode(_ node: Onnx_NodeProto, label: String) throws {
        for name in node.input where !name.isEmpty && values[name] == nil {
            throw ImportFailure("reads '\(name)', which is not a graph input, an initializer or an earlier node's output")
        }
        guard !node.output.isEmpty else { throw ImportFailure("has no outputs") }
        let inputs = node.input.map { $0.isEmpty ? nil : values[$0] }
        if node.opType == "Shape", case .runtime(let id)? = inputs.first {
            let shape = graph[id].shape
            let (start, end) = try Folding.shapeRange(Attributes(node), rank: shape.count)
            let dims = start < end ? Array(shape[start..<end]) : []
            func probe(_ n: Int) -> ImportedTensor {
                .int(IntTensor(shape: [dims.count], values: dims.substitutingBatch(n).map { Int64($0) }))
            }
            values[node.output[0]] = .folded(dims.hasBatchDimension
                ? Folded(small: probe(Importer.probes.0), large: probe(Importer.probes.1)) : Folded(probe(0)))
            return
        }
        let allFolded = inputs.allSatisfy { value in
            switch value {
            case .runtime?, .sequence?, .flattened?: return false
            case .folded?, nil: return true
            }
        }
        if Folding.ops.contains(node.opType) && allFolded {
            let folded = inputs.map { value -> Folded? in
                if case .folded(let f)? = value { return f } else { return nil }
            }
            let small = try Folding.evaluate(node, folded.map { $0?.small }, opset: opset)
            if folded.contains(where: { $0?.dependsOnBatch == true }) {
                let large = try Folding.evaluate(node, folded.map { $0?.large }, opset: opset)
                values[node.output[0]] = .folded(Folded(small: small, large: large))
            } else {
                values[node.output[0]] = .folded(Folded(small))
            }
            return
        }
        guard let handler = Importer.handlers[node.opType] else {
            throw ImportFailure("needs its inputs known at import, but some are computed at run time")
        }
        try handler(&self, NodeContext(proto: node, label: label, attributes: Attributes(node)))
    }
}

/// One ONNX node being imported: its proto, display label and attributes.
struct NodeContext {
    let proto: Onnx_NodeProto
    let label: String
    let attributes: Attributes

    /// Whether input `i` is given (present and non-empty).
    func has(_ i: Int) -> Bool { i < proto.input.count && !proto.input[i].isEmpty }
}

extension Importer {
    /// Input `i` as an IR value: runtime values as they are, known float values as graph constants.
    mutating func tensor(_ node: NodeContext, _ i: Int) throws -> ValueID {
        guard node.has(i), let value = values[node.proto.input[i]] else { throw ImportFailure("input \(i) is missing") }
        switch value {
        case .runtime(let id): return id
        case .sequence: throw ImportFailure("input \(i) ('\(node.proto.input[i])') is a sequence; this op takes a tensor")
        case .flattened: throw ImportFailure("input \(i) ('\(node.proto.input[i])') flattens the batch dimension with the others")
        case .folded(let folded):
            let name = node.proto.input[i]
            if let id = materialized[name] { return id }
            guard !folded.dependsOnBatch else {
                throw ImportFailure("input \(i) ('\(name)') is a constant that depends on the batch size")
            }
            guard case .float(let t) = folded.small else {
                throw ImportFailure("input \(i) ('\(name)') is an integer tensor; this op takes float data")
            }
            let id = graph.addConstant(name: name, t)
            materialized[name] = id
            return id
        }
    }

    /// Input `i` as a value known at import (nil if absent); throws if it is computed at run time.
    func known(_ node: NodeContext, _ i: Int) throws -> Folded? {
        guard node.has(i) else { return nil }
        guard case .folded(let folded)? = values[node.proto.input[i]] else {
            throw ImportFailure("input \(i) ('\(node.proto.input[i])') must be known at import, but it is computed at run time")
        }
        return folded
    }

    /// Input `i` as integers; nil entries stand for the batch size N.
    func staticInts(_ node: NodeContext, _ i: Int) throws -> [Int?]? {
        guard let folded = try known(node, i) else { return nil }
        guard case .int(let small) = folded.small, case .int(let large) = folded.large else {
            throw ImportFailure("input \(i) must be an integer tensor")
        }
        return try zip(small.values, large.values).map { a, b in
            if a == b { return Int(clamping: a) }
            if a == Int64(Importer.probes.0) && b == Int64(Importer.probes.1) { return nil }
            throw ImportFailure("input \(i) depends on the batch size in a way Kiln cannot represent (e.g. N × C)")
        }
    }

    /// Input `i` as integers that must not involve the batch size.
    func constantInts(_ node: NodeContext, _ i: Int) throws -> [Int]? {
        guard let ints = try staticInts(node, i) else { return nil }
        return try ints.map { v in
            guard let v else { throw ImportFailure("input \(i) depends on the batch size") }
            return v
        }
    }

    /// Input `i` as floats known at import (integers are converted).
    func constantFloats(_ node: NodeContext, _ i: Int) throws -> [Float]? {
        guard let folded = try known(node, i) else { return nil }
        guard !folded.dependsOnBatch else { throw ImportFailure("input \(i) depends on the batch size") }
        switch folded.small {
        case .float(let t): return t.scalars
        case .int(let t): return t.values.map { Float($0) }
        }
    }

    /// Static shape of an IR value.
    func shape(_ id: ValueID) -> [Int] { graph[id].shape }

    /// Appends an IR node for output `index` of the ONNX node (or an internal step when `step` names one).
    @discardableResult
    mutating func emit(_ node: NodeContext, _ op: Op, _ inputs: [ValueID], step: String? = nil) throws -> ValueID {
        let name = step.map { "\(node.label)/\($0)" } ?? node.label
        let id = try graph.addNode(name: name, op: op, inputs: inputs, outputName: step == nil ? node.proto.output[0] : name)
        if step == nil { values[node.proto.output[0]] = .runtime(id) }
        return id
    }

    /// Appends an IR node for output `index` of an ONNX node with several outputs (Split).
    @discardableResult
    mutating func emit(_ node: NodeContext, _ op: Op, _ inputs: [ValueID], output index: Int) throws -> ValueID {
        let name = node.proto.output[index]
        let id = try graph.addNode(name: "\(node.label)/\(index)", op: op, inputs: inputs, outputName: name)
        values[name] = .runtime(id)
        return id
    }

    /// Makes output 0 of the ONNX node another name for `id` (Identity, Dropout, float Cast).
    mutating func alias(_ node: NodeContext, to id: ValueID) {
        values[node.proto.output[0]] = .runtime(id)
    }

    /// Throws unless only output 0 of the node is used.
    func requireSingleOutput(_ node: NodeContext, _ what: String) throws {
        if node.proto.output.dropFirst().contains(where: { usedNames.contains($0) }) {
            throw ImportFailure("the \(what) output is not supported (only inference outputs are)")
        }
    }
}
