extension Graph {
    /// Checks that every value is defined once before use, recorded shapes match inference and the outputs exist;
    /// throws a `GraphError` naming the first node at fault.
    public func verify() throws {
        var defined = Set<ValueID>()
        func define(_ id: ValueID, _ what: String) throws {
            guard id.index >= 0, id.index < values.count else {
                throw GraphError.invalidGraph(message: "\(what) refers to unknown value \(id)")
            }
            guard defined.insert(id).inserted else {
                throw GraphError.invalidGraph(message: "value '\(self[id].name)' is defined twice (\(what))")
            }
        }
        for id in inputs { try define(id, "graph input") }
        for (id, tensor) in constants {
            try define(id, "constant")
            guard tensor.shape == self[id].shape else {
                throw GraphError.invalidGraph(message: "constant '\(self[id].name)' holds \(tensor.shape.shapeDescription) but is recorded as \(self[id].shape.shapeDescription)")
            }
        }
        for id in intConstants.keys { try define(id, "int64 constant") }
        for node in nodes {
            for input in node.inputs {
                guard defined.contains(input) else {
                    throw GraphError.invalidNode(node: node.name, op: node.op.name,
                                                 message: "input \(input.index < values.count ? "'\(self[input].name)'" : "\(input)") is not defined before use")
                }
                guard intConstants[input] == nil else {
                    throw GraphError.invalidNode(node: node.name, op: node.op.name,
                                                 message: "input '\(self[input].name)' is int64; only float32 flows between nodes")
                }
            }
            let inferred: [Int]
            do {
                inferred = try node.op.outputShape(inputShapes: node.inputs.map { self[$0].shape })
            } catch let error as ShapeError {
                throw GraphError.invalidNode(node: node.name, op: node.op.name, message: error.message)
            }
            try define(node.output, "output of node '\(node.name)'")
            guard inferred == self[node.output].shape else {
                throw GraphError.invalidNode(node: node.name, op: node.op.name,
                                             message: "output recorded as \(self[node.output].shape.shapeDescription) but inferred \(inferred.shapeDescription)")
            }
        }
        for id in outputs where !defined.contains(id) {
            throw GraphError.invalidGraph(message: "graph output \(id.index < values.count ? "'\(self[id].name)'" : "\(id)") is never defined")
        }
        guard !outputs.isEmpty else { throw GraphError.invalidGraph(message: "graph has no outputs") }
    }
}
