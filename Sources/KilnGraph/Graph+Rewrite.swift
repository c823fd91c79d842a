extension Graph {
    /// Removes nodes and constants that no graph output depends on.
    public mutating func eliminateDeadCode() {
        var live = Set(outputs)
        var kept: [Node] = []
        for node in nodes.reversed() where live.contains(node.output) {
            kept.append(node)
            live.formUnion(node.inputs)
        }
        nodes = kept.reversed()
        constants = constants.filter { live.contains($0.key) }
        intConstants = intConstants.filter { live.contains($0.key) }
    }

    /// Replaces every node whose inputs are all constants by the constant it computes.
    ///
    /// `evaluate` runs one node on constant inputs; the fp32 interpreter provides it, so folding and execution share
    /// one definition of every op.
    public mutating func foldConstants(evaluate: (Node, [Tensor]) throws -> Tensor) rethrows {
        var remaining: [Node] = []
        for node in nodes {
            let operands = node.inputs.compactMap { constants[$0] }
            if operands.count == node.inputs.count {
                constants[node.output] = try evaluate(node, operands)
            } else {
                remaining.append(node)
            }
        }
        nodes = remaining
        eliminateDeadCode()
    }

    /// Replaces every use of `old` (by nodes and as graph output) with `new`.
    public mutating func replaceUses(of old: ValueID, with new: ValueID) {
        for index in nodes.indices {
            nodes[index].inputs = nodes[index].inputs.map { $0 == old ? new : $0 }
        }
        outputs = outputs.map { $0 == old ? new : $0 }
    }
}
