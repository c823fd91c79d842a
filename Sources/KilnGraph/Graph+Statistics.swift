extension Graph {
    /// Number of nodes per op kind (`Conv`, `Relu6`, ...).
    public var opHistogram: [String: Int] {
        nodes.reduce(into: [:]) { $0[$1.op.kind, default: 0] += 1 }
    }

    /// Number of float32 elements held in constants (weights, biases, BN statistics).
    public var parameterCount: Int {
        constants.values.reduce(0) { $0 + $1.count }
    }

    /// Number of BatchNorm nodes (zero-shot synthesis needs them).
    public var batchNormCount: Int {
        nodes.filter { if case .batchNorm = $0.op { return true } else { return false } }.count
    }

    /// Multiply-accumulates of one inference of one sample (batch dimension taken as 1).
    public var macsPerSample: Int {
        nodes.reduce(0) { total, node in
            let out = self[node.output].shape.substitutingBatch(1)
            switch node.op {
            case .conv:
                let w = self[node.inputs[1]].shape
                return total + out.elementCount * w[1] * w[2] * w[3]
            case .matMul:
                let a = self[node.inputs[0]].shape
                return total + out.elementCount * a[a.count - 1]
            default:
                return total
            }
        }
    }
}

extension Graph {
    /// Float elements the nodes of one inference of one sample write (batch dimension taken as 1): the activation
    /// memory traffic, which bounds the ops that do little arithmetic per element (BatchNorm, activations,
    /// depthwise convolutions).
    public var activationsPerSample: Int {
        nodes.reduce(0) { $0 + self[$1.output].shape.substitutingBatch(1).elementCount }
    }

    /// Channels of the first input (its second dimension; nil for inputs of rank < 2).
    public var inputChannels: Int? {
        guard let input = inputs.first, self[input].shape.count >= 2 else { return nil }
        return self[input].shape[1]
    }
}
