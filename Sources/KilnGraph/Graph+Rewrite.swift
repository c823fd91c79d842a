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

    /// Rewrites every BatchNorm that no convolution absorbed (DenseNet's after a concatenation, a pre-activation
    /// block's) into the per-channel affine it is at inference: a depthwise 1×1 convolution with weight γ/√(σ²+ε)
    /// and bias β − μ·γ/√(σ²+ε). Returns the number rewritten.
    @discardableResult
    public mutating func convertBatchNormToDepthwise() -> Int {
        var converted = 0
        for (index, node) in nodes.enumerated() {
            guard case .batchNorm(let epsilon) = node.op, self[node.inputs[0]].shape.count == 4,
                  let scale = constants[node.inputs[1]], let shift = constants[node.inputs[2]],
                  let mean = constants[node.inputs[3]], let variance = constants[node.inputs[4]] else { continue }
            let c = scale.count
            let factors = (0..<c).map { scale.scalars[$0] / (variance.scalars[$0] + epsilon).squareRoot() }
            let w = addConstant(name: "\(node.name)/affine_weight", Tensor(shape: [c, 1, 1, 1], scalars: factors))
            let b = addConstant(name: "\(node.name)/affine_bias",
                                Tensor(shape: [c], scalars: (0..<c).map { shift.scalars[$0] - mean.scalars[$0] * factors[$0] }))
            nodes[index].op = .conv(ConvAttributes(group: c))
            nodes[index].inputs = [node.inputs[0], w, b]
            converted += 1
        }
        if converted > 0 { eliminateDeadCode() }
        return converted
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
    /// activation, bias or scale after it; weightless runs (pooling, reshapes) join the block after them, or the
    /// last block (the head stays one block); an inverted residual block without a skip (expand, depthwise,
    /// squeeze-excite gate, projection) is one block.
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
            // An activation, bias or scale stays with the node it follows (the student fuses it there).
            let splitsEpilogue = boundary < nodes.count && isEpilogue(nodes[boundary], of: last)
            if boundary == nodes.count || (crossing == 1 && last == nodes[boundary - 1].output && !splitsEpilogue) {
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
        // A squeeze-excite gate (global pool, small convs, a Mul by the value it pooled) belongs to the block that
        // made its input, and the projection conv after it, when it ends without an activation, belongs there too:
        // an SE-MBConv block is reconstructed whole.
        var gated: [Range<Int>] = []
        var openGate = false  // whether the last block ends in a gate and may take a projection conv
        for range in chained {
            if let last = gated.last, isGate(range) {
                gated[gated.count - 1] = last.lowerBound..<range.upperBound
                openGate = true
            } else if openGate, let last = gated.last, isSingleConv(range), !nodes[range.upperBound - 1].isActivation {
                gated[gated.count - 1] = last.lowerBound..<range.upperBound
                openGate = false
            } else {
                gated.append(range)
                openGate = false
            }
        }
        return gated.map { range in
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

extension Graph {
    /// Whether `node` is fused into the node making `value`: an activation of it, or arithmetic with a constant (a
    /// bias, a scale).
    func isEpilogue(_ node: Node, of value: ValueID?) -> Bool {
        guard let value, node.inputs.first == value || node.inputs.last == value else { return false }
        if node.isActivation { return node.inputs.first == value }
        guard case .binary = node.op, node.inputs.count == 2 else { return false }
        return node.inputs.contains { constants[$0] != nil }
    }

    /// Whether the nodes of `range` form a squeeze-excite gate: they end in a Mul of the value before them by a
    /// gate computed from it.
    func isGate(_ range: Range<Int>) -> Bool {
        guard range.lowerBound > 0, case .binary(.mul) = nodes[range.upperBound - 1].op else { return false }
        let gate = nodes[range.upperBound - 1]
        let input = nodes[range.lowerBound - 1].output
        guard gate.inputs.contains(input), gate.inputs.allSatisfy({ constants[$0] == nil }) else { return false }
        return range.contains { if case .globalAveragePool = nodes[$0].op { return true } else { return false } }
    }
}

extension Node {
    /// Whether the node is an elementwise activation (Relu, Clip, Sigmoid, …).
    public var isActivation: Bool {
        if case .activation = op { return true }
        return false
    }
}

extension Graph {
    /// Rewrites activations that exporters spell as several nodes into one activation node, so every later stage
    /// (and the student's lookup tables) sees one pointwise function: x · Sigmoid(x) → SiLU, and
    /// x · 0.5 · (1 + Erf(x / √2)) in PyTorch's orders → GELU. Nodes whose intermediate values something else
    /// reads are left as they are. Returns the number of activations recognised.
    @discardableResult
    public mutating func recognizeActivations() -> Int {
        let producers = self.producers()
        let consumers = self.consumers()
        var removed = Set<Int>()
        var recognised = 0
        /// The node producing `value` when only `reader` reads it (and it is not a graph output).
        func privateProducer(_ value: ValueID, readBy reader: Int) -> Int? {
            guard let p = producers[value], consumers[value] == [reader], !outputs.contains(value), !removed.contains(p) else { return nil }
            return p
        }
        func scalar(_ value: ValueID) -> Float? {
            guard let t = constants[value], t.count == 1 else { return nil }
            return t.scalars[0]
        }
        /// The other input of a binary node, given one of them.
        func other(_ node: Node, than value: ValueID) -> ValueID? {
            node.inputs.count == 2 && node.inputs.contains(value) ? (node.inputs[0] == value ? node.inputs[1] : node.inputs[0]) : nil
        }
        func near(_ a: Float?, _ b: Float) -> Bool { a.map { abs($0 - b) <= 1e-3 * abs(b) } ?? false }
        /// Whether `value` is erf(x/√2) + 1 computed privately for `reader`; returns x.
        func erfPlusOne(_ value: ValueID, readBy reader: Int) -> (x: ValueID, nodes: [Int])? {
            guard let add = privateProducer(value, readBy: reader), case .binary(.add) = nodes[add].op else { return nil }
            guard let erfValue = nodes[add].inputs.first(where: { scalar($0) == nil }),
                  let one = other(nodes[add], than: erfValue), scalar(one) == 1,
                  let erf = privateProducer(erfValue, readBy: add), case .activation(.erf) = nodes[erf].op,
                  let scale = privateProducer(nodes[erf].inputs[0], readBy: erf) else { return nil }
            let s = nodes[scale]
            switch s.op {
            case .binary(.div) where near(scalar(s.inputs[1]), 1.41421356): return (s.inputs[0], [scale, erf, add])
            case .binary(.mul):
                guard let x = s.inputs.first(where: { scalar($0) == nil }), let c = other(s, than: x), near(scalar(c), 0.70710678) else { return nil }
                return (x, [scale, erf, add])
            default: return nil
            }
        }
        for (index, node) in nodes.enumerated() where !removed.contains(index) {
            guard case .binary(.mul) = node.op, node.inputs.count == 2 else { continue }
            // SiLU: Mul(x, Sigmoid(x)).
            var sigmoid: (position: Int, node: Int)?
            for position in 0..<2 {
                if let p = privateProducer(node.inputs[position], readBy: index), case .activation(.sigmoid) = nodes[p].op,
                   nodes[p].inputs[0] == node.inputs[1 - position] {
                    sigmoid = (position, p)
                    break
                }
            }
            if let (position, s) = sigmoid {
                nodes[index].op = .activation(.silu)
                nodes[index].inputs = [node.inputs[1 - position]]
                removed.insert(s)
                recognised += 1
                continue
            }
            // GELU: Mul(Mul(x, erf(x/√2) + 1), 0.5) or Mul(Mul(x, 0.5), erf(x/√2) + 1).
            guard let half = node.inputs.first(where: { scalar($0) != nil }), let inner = other(node, than: half) else {
                // Mul(x · 0.5, erf + 1) has no constant input at the top.
                for position in 0..<2 {
                    guard let halfNode = privateProducer(node.inputs[position], readBy: index),
                          case .binary(.mul) = nodes[halfNode].op,
                          let x = nodes[halfNode].inputs.first(where: { scalar($0) == nil }),
                          let c = other(nodes[halfNode], than: x), scalar(c) == 0.5,
                          let found = erfPlusOne(node.inputs[1 - position], readBy: index), found.x == x else { continue }
                    nodes[index].op = .activation(.gelu)
                    nodes[index].inputs = [x]
                    removed.formUnion(found.nodes + [halfNode])
                    recognised += 1
                    break
                }
                continue
            }
            guard scalar(half) == 0.5, let product = privateProducer(inner, readBy: index), case .binary(.mul) = nodes[product].op,
                  nodes[product].inputs.count == 2 else { continue }
            for position in 0..<2 {
                guard let found = erfPlusOne(nodes[product].inputs[position], readBy: product),
                      found.x == nodes[product].inputs[1 - position] else { continue }
                nodes[index].op = .activation(.gelu)
                nodes[index].inputs = [found.x]
                removed.formUnion(found.nodes + [product])
                recognised += 1
                break
            }
        }
        guard recognised > 0 else { return 0 }
        nodes = nodes.enumerated().filter { !removed.contains($0.offset) }.map(\.element)
        eliminateDeadCode()
        return recognised
    }
}

extension Graph {
    /// Rewrites channels-last regions back to channels-first: a Transpose (0, 2, 3, 1) of an image, the pointwise
    /// ops, per-channel constants, means over the last axis and MatMuls by constant matrices that follow it, up to
    /// the Transposes (0, 3, 1, 2) that end it — ConvNeXt's blocks and `LayerNorm2d` as PyTorch exports them — become
    /// the same computation on [N, C, H, W]: the MatMuls 1×1 convolutions, the means means over channels, the
    /// transposes gone. A region with any other reader (or a graph output inside) is left as it is.
    /// Returns the number of regions rewritten.
    @discardableResult
    public mutating func convertChannelsLastRegions() -> Int {
        var rewritten = 0
        var tried = Set<Int>()
        while let start = nodes.indices.first(where: { index in
            guard !tried.contains(index), case .transpose(let perm) = nodes[index].op else { return false }
            return perm == [0, 2, 3, 1] && self[nodes[index].inputs[0]].shape.count == 4
        }) {
            tried.insert(start)
            if rewriteChannelsLastRegion(from: start) {
                rewritten += 1
                eliminateDeadCode()
                tried = []
            }
        }
        return rewritten
    }

    /// NCHW axis of NHWC axis `a`.
    private static let channelsFirstAxis = [0, 2, 3, 1]

    /// One region from the Transpose at `start`; false (graph unchanged) if it cannot be rewritten whole.
    private mutating func rewriteChannelsLastRegion(from start: Int) -> Bool {
        var region: Set<ValueID> = [nodes[start].output]
        var members: [Int] = [], closing: [Int] = []
        /// A constant operand as its channels-first equivalent, when it varies at most along the last (channel) axis.
        func channelsFirst(_ t: Tensor) -> Tensor? {
            let dims = t.shape.drop { $0 == 1 }
            if dims.isEmpty { return t }
            guard dims.count == 1, t.shape.count <= 4 else { return nil }
            return Tensor(shape: [t.count, 1, 1], scalars: t.scalars)
        }
        // Nodes are in topological order: one pass decides every reader of the region.
        for index in nodes.indices where index > start && nodes[index].inputs.contains(where: region.contains) {
            let node = nodes[index]
            let others = node.inputs.filter { !region.contains($0) }
            switch node.op {
            case .transpose(let perm) where perm == [0, 3, 1, 2]:
                closing.append(index)
                continue
            case .activation:
                break
            case .binary:
                guard others.allSatisfy({ constants[$0].flatMap(channelsFirst) != nil }) else { return false }
            case .reduceMean(_, let keepDims):
                guard keepDims else { return false }
            case .matMul:
                guard region.contains(node.inputs[0]), let w = constants[node.inputs[1]], w.rank == 2 else { return false }
            default:
                return false
            }
            guard self[node.output].shape.count == 4 else { return false }
            members.append(index)
            region.insert(node.output)
        }
        guard !region.contains(where: outputs.contains) else { return false }
        // Rewrite each member in place (its output keeps its ID, now channels-first).
        for index in members {
            var node = nodes[index]
            switch node.op {
            case .binary:
                node.inputs = node.inputs.map { input in
                    guard let t = constants[input], let converted = channelsFirst(t), converted.shape != t.shape else { return input }
                    return addConstant(name: "\(self[input].name)/channels_first", converted)
                }
            case .reduceMean(let axes, _):
                node.op = .reduceMean(axes: axes.map { Graph.channelsFirstAxis[$0] }.sorted(), keepDims: true)
            case .matMul:
                let w = constants[node.inputs[1]]!
                let (k, m) = (w.shape[0], w.shape[1])
                var transposed = [Float](repeating: 0, count: w.count)
                for i in 0..<k { for j in 0..<m { transposed[j * k + i] = w.scalars[i * m + j] } }
                let weight = addConstant(name: "\(node.name)/conv_weight", Tensor(shape: [m, k, 1, 1], scalars: transposed))
                node.op = .conv(ConvAttributes())
                node.inputs = [node.inputs[0], weight]
            default: break
            }
            nodes[index] = node
            let s = self[node.output].shape
            setShape([s[0], s[3], s[1], s[2]], of: node.output)
        }
        for index in closing { replaceUses(of: nodes[index].output, with: nodes[index].inputs[0]) }
        replaceUses(of: nodes[start].output, with: nodes[start].inputs[0])
        return true
    }

    /// Folds a per-channel constant Add or Mul that alone reads a convolution's output into the convolution's bias
    /// and weights (a bias added after a 1×1 conv that was a MatMul, ConvNeXt's layer scale). Returns the count.
    @discardableResult
    public mutating func foldChannelAffineIntoConv() -> Int {
        var folded = 0
        var changed = true
        while changed {
            changed = false
            let producers = self.producers(), consumers = self.consumers()
            for node in nodes {
                guard case .binary(let op) = node.op, op == .add || op == .mul, !outputs.contains(node.output) else { continue }
                let constantFirst = constants[node.inputs[0]] != nil
                let (x, operand) = constantFirst ? (node.inputs[1], node.inputs[0]) : (node.inputs[0], node.inputs[1])
                guard let k = constants[operand], constants[x] == nil,
                      let convIndex = producers[x], case .conv = nodes[convIndex].op, consumers[x]?.count == 1, !outputs.contains(x),
                      let weight = constants[nodes[convIndex].inputs[1]] else { continue }
                let m = weight.shape[0]
                // One value per output channel: [M, 1, 1], [1, M, 1, 1], or a single value.
                let channelShape = k.shape.drop { $0 == 1 }
                guard k.count == 1 || (k.count == m && channelShape.count == 3 && channelShape.dropFirst().allSatisfy { $0 == 1 }) else { continue }
                let factors = k.count == 1 ? [Float](repeating: k.scalars[0], count: m) : k.scalars
                var conv = nodes[convIndex]
                var bias = conv.inputs.count > 2 ? constants[conv.inputs[2]]?.scalars : [Float](repeating: 0, count: m)
                guard bias != nil else { continue }
                if op == .add {
                    for o in 0..<m { bias![o] += factors[o] }
                } else {
                    let perChannel = weight.count / m
                    var scaled = weight.scalars
                    for o in 0..<m {
                        for i in 0..<perChannel { scaled[o * perChannel + i] *= factors[o] }
                        bias![o] *= factors[o]
                    }
                    conv.inputs[1] = addConstant(name: "\(conv.name)/weight_scaled\(folded)", Tensor(shape: weight.shape, scalars: scaled))
                }
                let b = addConstant(name: "\(conv.name)/bias_folded\(folded)", Tensor(shape: [m], scalars: bias!))
                conv.inputs = Array(conv.inputs.prefix(2)) + [b]
                nodes[convIndex] = conv
                replaceUses(of: node.output, with: x)
                eliminateDeadCode()
                folded += 1
                changed = true
                break
            }
        }
        return folded
    }
}
