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

extension Graph {
    /// Folds every BatchNorm that directly follows a convolution (whose output nothing else reads) into the
    /// convolution's weight and bias: w' = w · γ/√(σ²+ε), b' = (b − μ) · γ/√(σ²+ε) + β.
    /// Returns the number of BatchNorms folded.
    @discardableResult
    public mutating func foldBatchNorm() -> Int {
        let producers = self.producers()
        let consumers = self.consumers()
        var folded = 0
        var removed = Set<Int>()
        for (index, node) in nodes.enumerated() {
            guard case .batchNorm(let epsilon) = node.op,
                  let convIndex = producers[node.inputs[0]], case .conv = nodes[convIndex].op,
                  consumers[node.inputs[0]]?.count == 1, !outputs.contains(node.inputs[0]),
                  let weight = constants[nodes[convIndex].inputs[1]],
                  let scale = constants[node.inputs[1]], let shift = constants[node.inputs[2]],
                  let mean = constants[node.inputs[3]], let variance = constants[node.inputs[4]] else { continue }
            let conv = nodes[convIndex]
            let m = weight.shape[0], perChannel = weight.count / m
            let oldBias = conv.inputs.count > 2 ? constants[conv.inputs[2]] : nil
            if conv.inputs.count > 2 && oldBias == nil { continue }
            var newWeight = weight
            var newBias = [Float](repeating: 0, count: m)
            for c in 0..<m {
                let factor = scale.scalars[c] / (variance.scalars[c] + epsilon).squareRoot()
                for i in (c * perChannel)..<((c + 1) * perChannel) { newWeight.scalars[i] *= factor }
                newBias[c] = ((oldBias?.scalars[c] ?? 0) - mean.scalars[c]) * factor + shift.scalars[c]
            }
            let w = addConstant(name: "\(conv.name)/folded_weight", newWeight)
            let b = addConstant(name: "\(conv.name)/folded_bias", Tensor(shape: [m], scalars: newBias))
            nodes[convIndex].inputs = [conv.inputs[0], w, b]
            // The conv now produces what the BatchNorm did.
            let bnOutput = node.output
            nodes[convIndex].output = bnOutput
            removed.insert(index)
            folded += 1
        }
        nodes = nodes.enumerated().filter { !removed.contains($0.offset) }.map(\.element)
        eliminateDeadCode()
        return folded
    }

    /// Folds zero constant padding of H and W that feeds only a convolution into the convolution's own pads.
    /// Returns the number of Pad nodes folded.
    @discardableResult
    public mutating func foldPadIntoConv() -> Int {
        let producers = self.producers()
        let consumers = self.consumers()
        var folded = 0
        var removed = Set<Int>()
        for (index, node) in nodes.enumerated() {
            guard case .conv(var attributes) = node.op, let padIndex = producers[node.inputs[0]],
                  case .pad(let pad) = nodes[padIndex].op, pad.mode == .constant, pad.value == 0,
                  consumers[node.inputs[0]]?.count == 1, !outputs.contains(node.inputs[0]),
                  pad.pads.count == 8, pad.pads[0] == 0, pad.pads[1] == 0, pad.pads[4] == 0, pad.pads[5] == 0,
                  pad.pads.allSatisfy({ $0 >= 0 }) else { continue }
            attributes.pads = [attributes.pads[0] + pad.pads[2], attributes.pads[1] + pad.pads[3],
                               attributes.pads[2] + pad.pads[6], attributes.pads[3] + pad.pads[7]]
            nodes[index].op = .conv(attributes)
            nodes[index].inputs[0] = nodes[padIndex].inputs[0]
            removed.insert(padIndex)
            folded += 1
        }
        nodes = nodes.enumerated().filter { !removed.contains($0.offset) }.map(\.element)
        eliminateDeadCode()
        return folded
    }
}

/// A run of consecutive nodes with one tensor flowing in and one flowing out: the unit of block reconstruction.
public struct Block: Hashable, Sendable {
    /// Positions in `Graph.nodes`.
    public var nodes: Range<Int>
    /// The one non-constant value the block reads from before it.
    public var input: ValueID
    /// The one value later nodes (or the graph outputs) read from the block.
    public var output: ValueID

    /// Creates a block description.
    public init(nodes: Range<Int>, input: ValueID, output: ValueID) {
        self.nodes = nodes
        self.input = input
        self.output = output
    }
}

extension Graph {
    /// Splits a single-input graph into blocks: cuts go where exactly one value crosses from earlier nodes to
    /// later ones (so a residual block, with its skip connection, stays whole) and not between a node and the
    /// activation after it; weightless runs (pooling, reshapes) join the block after them, or the last block
    /// (the head stays one block).
    public func blocks() -> [Block] {
        guard inputs.count == 1, !nodes.isEmpty else { return [] }
        let producer = producers()
        // For each value, the last node index that reads it (graph outputs count as read at the end).
        var lastRead: [ValueID: Int] = [:]
        for (index, node) in nodes.enumerated() { for input in node.inputs where constants[input] == nil { lastRead[input] = index } }
        for output in outputs { lastRead[output] = nodes.count }
        var cuts: [Int] = []  // block ends (exclusive)
        for boundary in 1...nodes.count {
            // Values defined before `boundary` (the graph input or node outputs) and read at or after it.
            var crossing = 0
            var last: ValueID?
            for (value, reader) in lastRead where reader >= boundary {
                let definedBefore = value == inputs[0] || (producer[value].map { $0 < boundary } ?? false)
                if definedBefore {
                    crossing += 1
                    last = value
                }
            }
            // An activation stays with the node it follows (the student fuses it there).
            let splitsActivation = boundary < nodes.count && nodes[boundary].isActivation && nodes[boundary].inputs.first == last
            if boundary == nodes.count || (crossing == 1 && last == nodes[boundary - 1].output && !splitsActivation) {
                cuts.append(boundary)
            }
        }
        var segments: [Range<Int>] = []
        var start = 0
        for end in cuts where end > start {
            segments.append(start..<end)
            start = end
        }
        func hasWeights(_ range: Range<Int>) -> Bool {
            range.contains { i in
                switch nodes[i].op {
                case .conv, .matMul: return true
                default: return false
                }
            }
        }
        // Merge weightless segments forward (into the next), the trailing ones backward.
        var merged: [Range<Int>] = []
        var pending: Int?
        for segment in segments {
            let lower = pending ?? segment.lowerBound
            if hasWeights(segment) {
                merged.append(lower..<segment.upperBound)
                pending = nil
            } else {
                pending = lower
            }
        }
        if let pending {
            if let last = merged.popLast() { merged.append(last.lowerBound..<nodes.count) } else { merged.append(pending..<nodes.count) }
        }
        // A chain of single-conv blocks ending in activations continues into the next single-conv block until
        // a block ends without one (an inverted residual block without its skip: expand, depthwise, linear
        // projection), at most three convs long.
        func weightedCount(_ range: Range<Int>) -> Int {
            range.count { i in
                if case .conv = nodes[i].op { return true }
                if case .matMul = nodes[i].op { return true }
                return false
            }
        }
        func isSingleConv(_ range: Range<Int>) -> Bool {
            guard weightedCount(range) == 1, case .conv = nodes[range.lowerBound].op else { return false }
            return true
        }
        var chained: [Range<Int>] = []
        var lastIsChain = false  // whether the last block is made of single-conv blocks only
        for range in merged {
            if lastIsChain, let last = chained.last, nodes[last.upperBound - 1].isActivation, isSingleConv(range),
               weightedCount(last) < 3 {
                chained[chained.count - 1] = last.lowerBound..<range.upperBound
            } else {
                chained.append(range)
                lastIsChain = isSingleConv(range)
            }
        }
        return chained.map { range in
            let inputValue = range.lowerBound == 0 ? inputs[0] : nodes[range.lowerBound - 1].output
            return Block(nodes: range, input: inputValue, output: nodes[range.upperBound - 1].output)
        }
    }
}

extension Graph {
    /// The nodes of `block` as a graph of their own: the block's input becomes the graph input, its output the
    /// graph output; the constants they read are copied. `valueMap` maps this graph's values to the new ones.
    public func subgraph(_ block: Block) throws -> (graph: Graph, valueMap: [ValueID: ValueID]) {
        var graph = Graph(name: "\(name)/\(nodes[block.nodes.lowerBound].name)")
        var map: [ValueID: ValueID] = [block.input: graph.addInput(name: self[block.input].name, shape: self[block.input].shape)]
        for index in block.nodes {
            let node = nodes[index]
            let inputs = node.inputs.map { id -> ValueID in
                if let mapped = map[id] { return mapped }
                let constant = graph.addConstant(name: self[id].name, constants[id]!)
                map[id] = constant
                return constant
            }
            map[node.output] = try graph.addNode(name: node.name, op: node.op, inputs: inputs, outputName: self[node.output].name)
        }
        graph.outputs = [map[block.output]!]
        return (graph, map)
    }
}

extension Node {
    /// Whether the node is an elementwise activation (Relu, Clip, Sigmoid, …).
    public var isActivation: Bool {
        if case .activation = op { return true }
        return false
    }
}
