import KilnGraph

/// How BatchNorm nodes behave when a graph runs on a tape.
public enum BatchNormMode: Sendable {
    /// Running statistics, as at inference (data synthesis through a teacher).
    case frozen
    /// The batch's own statistics, differentiated through (training a generator).
    case batchStatistics
}

extension Tape {
    /// Runs an imported graph on this tape: the graph is the model, differentiable end to end.
    ///
    /// - `inputs`: one variable per graph input.
    /// - `parameters`: constants to differentiate with respect to (weights, BN affine parameters); every other
    ///   constant is fixed.
    /// - `replace`: may compute a node differently (e.g. quantized weights, swing convolution); return nil to use
    ///   the node's own op. It sees the node with the batch size substituted into its op.
    /// - `observe`: sees every node's inputs and output as variables (e.g. to add a loss on BatchNorm inputs).
    /// Intermediate values are dropped after their last forward use; the tape keeps what backward needs.
    public func run(_ graph: Graph, inputs: [Variable], parameters: [ValueID: Variable] = [:],
                    batchNorm: BatchNormMode = .frozen,
                    replace: ((Node, [Variable]) throws -> Variable?)? = nil,
                    observe: ((Node, [Variable], Variable) -> Void)? = nil) throws -> [Variable] {
        guard inputs.count == graph.inputs.count else {
            throw InterpreterError(message: "the graph takes \(graph.inputs.count) input(s), got \(inputs.count)")
        }
        var batch = 1
        for (id, input) in zip(graph.inputs, inputs) {
            let expected = graph[id].shape
            guard expected.count == input.shape.count,
                  zip(expected, input.shape).allSatisfy({ $0 == batchDimension || $0 == $1 }) else {
                throw InterpreterError(message: "input '\(graph[id].name)' expects \(expected.shapeDescription), got \(input.shape.shapeDescription)")
            }
            if let axis = expected.firstIndex(of: batchDimension) { batch = input.shape[axis] }
        }
        defer { profileLabel = nil }
        var lastUse: [ValueID: Int] = [:]
        for (index, node) in graph.nodes.enumerated() { for input in node.inputs { lastUse[input] = index } }
        var live: [ValueID: Variable] = [:]
        for (id, input) in zip(graph.inputs, inputs) { live[id] = input }
        var constants: [ValueID: Variable] = [:]
        func value(_ id: ValueID) -> Variable {
            if let v = live[id] ?? parameters[id] ?? constants[id] { return v }
            let v = constant(graph.constants[id]!)
            constants[id] = v
            return v
        }
        let kept = Set(graph.outputs)
        for (index, node) in graph.nodes.enumerated() {
            let operands = node.inputs.map(value)
            let op = node.op.substitutingBatch(batch)
            do {
                _ = try op.outputShape(inputShapes: operands.map(\.shape))
            } catch let error as ShapeError {
                throw GraphError.invalidNode(node: node.name, op: node.op.name, message: error.message)
            }
            let output: Variable
            var resolved = node
            resolved.op = op
            // Profiled: the label the op's backward is recorded under, and its forward timed.
            profileLabel = profile.map { _ in TapeProfile.label(op, operandShapes: operands.map(\.shape)) }
            let start = TapeProfile.now()
            if let replaced = try replace?(resolved, operands) {
                output = replaced
            } else {
                output = apply(op, operands, batchNorm: batchNorm)
            }
            if let profile, let label = profileLabel {
                profile.addForward(label, seconds: TapeProfile.seconds(since: start))
                profileLabel = nil
            }
            observe?(node, operands, output)
            live[node.output] = output
            for input in node.inputs where lastUse[input] == index && !kept.contains(input) { live[input] = nil }
        }
        return graph.outputs.map(value)
    }

    /// One IR op on variables (batch sizes already substituted), recorded on this tape.
    public func apply(_ op: Op, _ x: [Variable], batchNorm: BatchNormMode = .frozen) -> Variable {
        switch op {
        case .conv(let a): return conv2d(x[0], x[1], x.count > 2 ? x[2] : nil, a)
        case .batchNorm(let epsilon):
            switch batchNorm {
            case .frozen:
                return self.batchNorm(x[0], scale: x[1], bias: x[2], mean: x[3].value, variance: x[4].value, epsilon: epsilon)
            case .batchStatistics:
                return batchNormTraining(x[0], scale: x[1], bias: x[2], epsilon: epsilon)
            }
        case .activation(let f): return activation(x[0], f)
        case .binary(let b): return binary(x[0], x[1], b)
        case .maxPool(let a): return maxPool(x[0], a)
        case .averagePool(let a): return averagePool(x[0], a)
        case .globalAveragePool: return globalAveragePool(x[0])
        case .reduceMean(let axes, let keepDims): return reduceMean(x[0], axes: axes, keepDims: keepDims)
        case .reshape(let shape): return reshape(x[0], shape)
        case .transpose(let perm): return transpose(x[0], perm: perm)
        case .concat(let axis): return concat(x, axis: axis)
        case .matMul: return matMul(x[0], x[1])
        case .softmax(let axis): return softmax(x[0], axis: axis)
        case .pad(let a): return pad(x[0], a)
        case .slice(let a): return slice(x[0], a)
        case .gather(let axis, let indices): return gather(x[0], axis: axis, indices: indices)
        case .upsampleNearest(let sh, let sw): return upsampleNearest(x[0], scaleH: sh, scaleW: sw)
        case .insertZeros(let sh, let sw): return insertZeros(x[0], strideH: sh, strideW: sw)
        case .resizeLinear(let h, let w, let coordinates): return resizeLinear(x[0], height: h, width: w, coordinates: coordinates)
        }
    }
}
