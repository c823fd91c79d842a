import KilnGraph
import KilnStudent

/// A graph that cannot be turned into an int8 student, naming the node.
public struct QuantizeError: Error, CustomStringConvertible, Equatable {
    /// What is wrong.
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// A graph node that lowering cannot turn into a student layer, and why.
public struct UnloweredNode: Sendable, Equatable, Codable {
    /// The node's name.
    public var node: String
    /// Its IR op.
    public var op: String
    /// Why it does not lower.
    public var reason: String
}

/// One student layer planned from a prepared fp32 graph (BatchNorm and padding folded), before quantization
/// parameters are chosen: its op, the graph nodes it covers (an activation after a conv, gemm or add is fused
/// in), the quantized graph values it reads and the one it produces.
struct PlannedLayer {
    enum Kind {
        case conv(ConvAttributes)
        case gemm
        case add
        case maxPool(PoolAttributes)
        case averagePool(PoolAttributes)
        case globalAveragePool
        case reshape([Int])
        case concat(Int)
        /// A pointwise activation that is not fused as a clamp: a 256-entry table.
        case lookup(Activation)
        /// Product of two tensors, the second of the same shape or one value per channel.
        case mul
        /// Channels start ..< start + count of a 4-D or 2-D tensor (Split, chunk, Slice along channels).
        case sliceChannels(start: Int, count: Int)
        /// Output channel j is input channel permutation[j] (ShuffleNet's reshape–transpose–reshape).
        case permuteChannels([Int])
        /// Nearest-neighbour upsampling by whole factors.
        case upsampleNearest(Int, Int)
        /// Zeros between pixels (a transposed convolution's first half).
        case insertZeros(Int, Int)
        /// Bilinear resize.
        case resizeLinear(height: Int, width: Int, coordinates: ResizeCoordinates)
        /// LayerNorm over channels (recognized from its decomposition), requantized.
        case channelNorm(ChannelNorm)
        /// An op with no int8 kernel, run in fp32 between a dequantize and a quantize.
        case island(FloatOp)

        /// Max pooling and layout ops keep their input's quantization (their output is no quantization point).
        var keepsInputQuantization: Bool {
            switch self {
            case .maxPool, .reshape, .sliceChannels, .permuteChannels, .upsampleNearest, .insertZeros, .resizeLinear: return true
            default: return false
            }
        }
    }

    var kind: Kind
    var name: String
    /// Graph nodes: the main one first, then fused ones.
    var nodes: [Int]
    var inputs: [ValueID]
    /// The value whose quantization this layer's output carries (after the fused activation).
    var output: ValueID
    /// Weights in graph layout (conv [M, C/g, kH, kW]; gemm [K, M]) and bias, for conv and gemm.
    var weight: Tensor?
    var bias: [Float]?
    var activation: Activation?

    /// Whether the layer has weights.
    var hasWeights: Bool { weight != nil }
    /// Output channels of a conv or gemm.
    var outputChannels: Int {
        guard let weight else { return 0 }
        if case .gemm = kind { return weight.shape[1] }
        return weight.shape[0]
    }
}

/// Learned quantization of one conv or gemm's weights: integer levels in [M][K] (graph order within a channel)
/// and one step per output channel.
struct WeightQuantization {
    var levels: [Int8]
    var scales: [Float]
}

/// Turns a prepared fp32 graph into a `StudentModel`: per-channel symmetric weights, uint8 asymmetric
/// activations, int32 biases, activations fused into the conv/gemm/add before them as clamps.
struct Lowering {
    let graph: Graph
    var activations: [ActivationInfo] = []
    var layers: [Layer] = []
    /// Student activation holding each graph value quantized.
    var tensors: [ValueID: Int] = [:]
    /// Student activation holding each graph value in fp32 (model inputs, fp32 island values, their dequantized inputs).
    var floats: [ValueID: Int] = [:]
    /// The graph value each student layer approximates (for per-layer error reports).
    var layerValues: [Int: ValueID] = [:]

    init(graph: Graph) {
        self.graph = graph
    }

    /// The student's layers, in graph order; throws naming every node that does not lower (and, unless
    /// `allowIslands`, every node that would run as an fp32 island).
    static func plan(_ graph: Graph, allowIslands: Bool = true) throws -> [PlannedLayer] {
        let (planned, unlowered, islands) = survey(graph)
        guard unlowered.isEmpty else { throw QuantizeError(describe(unlowered)) }
        guard allowIslands || islands.isEmpty else {
            throw QuantizeError("block reconstruction does not handle fp32 islands yet; " + describe(islands, "would run in fp32")
                                + " (quantize without reconstruction: --distill none, W8A8)")
        }
        return planned
    }

    /// One message for the nodes that do not lower (the first few by name, then a count).
    static func describe(_ unlowered: [UnloweredNode], _ what: String = "do not lower to int8") -> String {
        let shown = unlowered.prefix(5).map(\.reason)
        let more = unlowered.count > shown.count ? "; and \(unlowered.count - shown.count) more node(s)" : ""
        return (unlowered.count == 1 ? "" : "\(unlowered.count) nodes \(what): ") + shown.joined(separator: "; ") + more
    }

    /// The student's layers in graph order, every node that does not lower at all and every node that runs as an
    /// fp32 island (each with the reason it has no int8 kernel).
    static func survey(_ graph: Graph) -> (planned: [PlannedLayer], unlowered: [UnloweredNode], islands: [UnloweredNode]) {
        let consumers = graph.consumers()
        var planned: [PlannedLayer] = []
        var unlowered: [UnloweredNode] = [], islands: [UnloweredNode] = []
        /// Values computed in fp32 by islands: pointwise and layout ops reading only these stay in the island.
        var floatValues = Set<ValueID>()
        var fused = Set<Int>()
        func channelShuffle(at index: Int) -> (groups: Int, nodes: [Int])? {
            Lowering.channelShuffle(in: graph, at: index, consumers: consumers)
        }
        for (index, node) in graph.nodes.enumerated() where !fused.contains(index) {
            let tensorInputs = node.inputs.filter { graph.constants[$0] == nil }
            if !tensorInputs.isEmpty, tensorInputs.allSatisfy(floatValues.contains), node.op.continuesIsland,
               let island = try? islandLayer(graph, index) {
                planned.append(island)
                floatValues.insert(node.output)
                islands.append(UnloweredNode(node: node.name, op: node.op.name, reason: "node '\(node.name)' (\(node.op.name)) continues an fp32 island"))
                continue
            }
            do {
                /// The activation node fused into this one, if its output has one reader that is an activation.
                func fusedActivation(after value: ValueID) -> (index: Int, activation: Activation)? {
                    guard !graph.outputs.contains(value), let readers = consumers[value], readers.count == 1,
                          case .activation(let f) = graph.nodes[readers[0]].op else { return nil }
                    switch f {
                    case .relu, .clip: return (readers[0], f)
                    default: return nil
                    }
                }
                func layer(_ kind: PlannedLayer.Kind, inputs: [ValueID], output: ValueID, nodes: [Int] = []) -> PlannedLayer {
                    PlannedLayer(kind: kind, name: node.name, nodes: [index] + nodes, inputs: inputs, output: output)
                }
                switch node.op {
                case .conv(let a):
                    guard let weight = graph.constants[node.inputs[1]] else {
                        throw QuantizeError("node '\(node.name)' (Conv): the weight must be a constant")
                    }
                    let bias = node.inputs.count > 2 ? graph.constants[node.inputs[2]] : nil
                    if node.inputs.count > 2 && bias == nil { throw QuantizeError("node '\(node.name)' (Conv): the bias must be a constant") }
                    let activation = fusedActivation(after: node.output)
                    if let activation { fused.insert(activation.index) }
                    var l = layer(.conv(a), inputs: [node.inputs[0]], output: activation.map { graph.nodes[$0.index].output } ?? node.output,
                                  nodes: activation.map { [$0.index] } ?? [])
                    (l.weight, l.bias, l.activation) = (weight, bias?.scalars, activation?.activation)
                    planned.append(l)
                case .matMul:
                    guard let weight = graph.constants[node.inputs[1]], weight.rank == 2, graph[node.inputs[0]].shape.count == 2 else {
                        throw QuantizeError("node '\(node.name)' (MatMul): only [N, K] × constant [K, M] is supported")
                    }
                    var output = node.output, extra: [Int] = []
                    var bias: [Float]?
                    if let readers = consumers[output], readers.count == 1, !graph.outputs.contains(output),
                       case .binary(.add) = graph.nodes[readers[0]].op {
                        let add = graph.nodes[readers[0]]
                        let other = add.inputs[0] == output ? add.inputs[1] : add.inputs[0]
                        if let b = graph.constants[other], b.count == weight.shape[1], b.shape.last == weight.shape[1] {
                            bias = b.scalars
                            fused.insert(readers[0])
                            extra.append(readers[0])
                            output = add.output
                        }
                    }
                    let activation = fusedActivation(after: output)
                    if let activation {
                        fused.insert(activation.index)
                        extra.append(activation.index)
                        output = graph.nodes[activation.index].output
                    }
                    var l = layer(.gemm, inputs: [node.inputs[0]], output: output, nodes: extra)
                    (l.weight, l.bias, l.activation) = (weight, bias, activation?.activation)
                    planned.append(l)
                case .binary(.add) where graph.constants[node.inputs[0]] == nil && graph.constants[node.inputs[1]] == nil:
                    guard graph[node.inputs[0]].shape == graph[node.inputs[1]].shape else {
                        throw QuantizeError("node '\(node.name)' (Add): only same-shape residual adds are supported, got \(graph[node.inputs[0]].shape.shapeDescription) + \(graph[node.inputs[1]].shape.shapeDescription)")
                    }
                    let activation = fusedActivation(after: node.output)
                    if let activation { fused.insert(activation.index) }
                    var l = layer(.add, inputs: node.inputs, output: activation.map { graph.nodes[$0.index].output } ?? node.output,
                                  nodes: activation.map { [$0.index] } ?? [])
                    l.activation = activation?.activation
                    planned.append(l)
                case .maxPool(let p), .averagePool(let p):
                    guard p.dilations == [1, 1] else { throw QuantizeError("node '\(node.name)': dilated pooling is not supported") }
                    let isMax: Bool = { if case .maxPool = node.op { return true } else { return false } }()
                    planned.append(layer(isMax ? .maxPool(p) : .averagePool(p), inputs: [node.inputs[0]], output: node.output))
                case .globalAveragePool:
                    planned.append(layer(.globalAveragePool, inputs: [node.inputs[0]], output: node.output))
                case .reduceMean where Lowering.channelNorm(in: graph, at: index, consumers: consumers) != nil:
                    let (norm, nodes, output) = Lowering.channelNorm(in: graph, at: index, consumers: consumers)!
                    fused.formUnion(nodes)
                    var l = layer(.channelNorm(norm), inputs: [node.inputs[0]], output: output, nodes: nodes)
                    l.name = graph.nodes[nodes.last!].name
                    planned.append(l)
                case .reshape where channelShuffle(at: index) != nil:
                    let (groups, nodes) = channelShuffle(at: index)!
                    fused.formUnion(nodes)
                    let channels = graph[node.inputs[0]].shape[1], perGroup = channels / groups
                    planned.append(layer(.permuteChannels((0..<channels).map { ($0 % groups) * perGroup + $0 / groups }),
                                         inputs: [node.inputs[0]], output: graph.nodes[nodes[1]].output, nodes: nodes))
                case .upsampleNearest(let sh, let sw):
                    planned.append(layer(.upsampleNearest(sh, sw), inputs: [node.inputs[0]], output: node.output))
                case .insertZeros(let sh, let sw):
                    planned.append(layer(.insertZeros(sh, sw), inputs: [node.inputs[0]], output: node.output))
                case .resizeLinear(let height, let width, let coordinates):
                    planned.append(layer(.resizeLinear(height: height, width: width, coordinates: coordinates), inputs: [node.inputs[0]],
                                         output: node.output))
                case .slice(let a):
                    let xs = graph[node.inputs[0]].shape
                    guard xs.count == 4 || xs.count == 2, a.steps.allSatisfy({ $0 == 1 }),
                          a.starts.indices.allSatisfy({ $0 == 1 || (a.starts[$0] == 0 && a.counts[$0] == xs[$0]) }) else {
                        throw QuantizeError("node '\(node.name)' (Slice): only slices of channels (axis 1, step 1) are supported")
                    }
                    planned.append(layer(.sliceChannels(start: a.starts[1], count: a.counts[1]), inputs: [node.inputs[0]], output: node.output))
                case .reshape(let shape):
                    guard shape.first == batchDimension else {
                        throw QuantizeError("node '\(node.name)' (Reshape): the batch dimension must stay first, target \(shape.shapeDescription)")
                    }
                    planned.append(layer(.reshape(shape), inputs: [node.inputs[0]], output: node.output))
                case .concat(let axis):
                    guard axis >= 1 else { throw QuantizeError("node '\(node.name)' (Concat): cannot concatenate along the batch dimension") }
                    planned.append(layer(.concat(axis), inputs: node.inputs, output: node.output))
                case .activation(let f):
                    planned.append(layer(.lookup(f), inputs: [node.inputs[0]], output: node.output))
                case .binary(.mul) where graph.constants[node.inputs[0]] == nil && graph.constants[node.inputs[1]] == nil:
                    // The full tensor first, a per-channel gate ([N, C, 1, 1], squeeze-and-excite) second.
                    let (a, b) = (graph[node.inputs[0]].shape, graph[node.inputs[1]].shape)
                    func gates(_ g: [Int], _ x: [Int]) -> Bool { x.count == 4 && g == [x[0], x[1], 1, 1] }
                    let inputs: [ValueID]
                    if a == b || gates(b, a) {
                        inputs = node.inputs
                    } else if gates(a, b) {
                        inputs = [node.inputs[1], node.inputs[0]]
                    } else {
                        throw QuantizeError("node '\(node.name)' (Mul): only products of same-shape tensors or a tensor and a per-channel gate [N, C, 1, 1] are supported, got \(a.shapeDescription) × \(b.shapeDescription)")
                    }
                    planned.append(layer(.mul, inputs: inputs, output: node.output))
                default:
                    throw QuantizeError("node '\(node.name)' (\(node.op.name)) has no int8 kernel yet; Kiln quantizes Conv (+BatchNorm, +Relu/Relu6/Clip), MatMul/Gemm, residual Add, pooling, Concat, Reshape and pointwise activations")
                }
            } catch {
                let reason = (error as? QuantizeError)?.message ?? "\(error)"
                do {
                    planned.append(try islandLayer(graph, index))
                    floatValues.insert(node.output)
                    islands.append(UnloweredNode(node: node.name, op: node.op.name, reason: reason))
                } catch {
                    let why = (error as? QuantizeError)?.message ?? "\(error)"
                    unlowered.append(UnloweredNode(node: node.name, op: node.op.name, reason: "\(reason); nor can it run as an fp32 island: \(why)"))
                }
            }
        }
        return (planned, unlowered, islands)
    }

    /// Node `index` as an fp32 island layer: its tensor inputs in order, constants carried by the op.
    static func islandLayer(_ graph: Graph, _ index: Int) throws -> PlannedLayer {
        let node = graph.nodes[index]
        let fail = { (why: String) in QuantizeError(why) }
        let constants = node.inputs.map { graph.constants[$0] }
        let inputs = node.inputs.filter { graph.constants[$0] == nil }
        guard !inputs.isEmpty else { throw fail("all its inputs are constants") }
        func floatConstant(_ t: Tensor) -> FloatConstant { FloatConstant(shape: t.shape, values: t.scalars) }
        let op: FloatOp
        switch node.op {
        case .activation(let f): op = .unary(f.floatFunction)
        case .binary(let b):
            let arithmetic = FloatArithmetic(b)
            if let c = constants[1] {
                op = .arithmetic(arithmetic, constant: floatConstant(c), constantFirst: false)
            } else if let c = constants[0] {
                op = .arithmetic(arithmetic, constant: floatConstant(c), constantFirst: true)
            } else {
                op = .arithmetic(arithmetic, constant: nil, constantFirst: false)
            }
        case .reduceMean(let axes, _): op = .reduceMean(axes: axes)
        case .transpose(let perm): op = .transpose(perm)
        case .reshape: op = .reshape
        case .matMul:
            if let c = constants[1] { op = .matMul(constant: floatConstant(c)) } else {
                guard constants[0] == nil else { throw fail("a constant first operand of MatMul is not supported") }
                op = .matMul(constant: nil)
            }
        case .softmax(let axis): op = .softmax(axis: axis)
        case .concat(let axis):
            guard constants.allSatisfy({ $0 == nil }) else { throw fail("constant Concat operands are not supported") }
            op = .concat(axis: axis)
        case .slice(let a): op = .slice(starts: a.starts, counts: a.counts, steps: a.steps)
        case .pad(let a):
            op = .pad(pads: a.pads, mode: a.mode == .constant ? 0 : a.mode == .reflect ? 1 : 2, value: a.value)
        case .gather(let axis, let indices): op = .gather(axis: axis, indices: indices.values.map { Int($0) }, indicesShape: indices.shape)
        default: throw fail("\(node.op.name) has no fp32 island form")
        }
        let shapes = inputs.map { graph[$0].shape }
        do {
            let shape = try op.outputShape(inputShapes: shapes, recorded: graph[node.output].shape)
            guard shape == graph[node.output].shape else { throw fail("gives \(shape), the graph says \(graph[node.output].shape)") }
        } catch let error as KilnFormatError {
            throw fail(error.message)
        }
        return PlannedLayer(kind: .island(op), name: node.name, nodes: [index], inputs: inputs, output: node.output)
    }

    /// The LayerNorm over channels starting at the mean at node `index`, as the importer decomposes
    /// LayerNormalization (ConvNeXt's, once its channels-last regions are turned back): μ = mean₁(x), d = x − μ,
    /// σ² = mean₁(d·d), y = d / √(σ² + ε), then optionally · scale and + shift per channel, each value read only by the
    /// next step. Returns the normalization, the other nodes it covers and its output.
    static func channelNorm(in graph: Graph, at index: Int, consumers: [ValueID: [Int]]) -> (ChannelNorm, nodes: [Int], output: ValueID)? {
        let mean = graph.nodes[index]
        guard case .reduceMean([1], true) = mean.op else { return nil }
        let x = mean.inputs[0], shape = graph[x].shape
        guard shape.count == 4 || shape.count == 2 else { return nil }
        let channels = shape[1]
        /// The one node reading `value` (perhaps twice), if it is not a graph output.
        func soleReader(_ value: ValueID) -> Int? {
            guard !graph.outputs.contains(value), let readers = consumers[value], Set(readers).count == 1 else { return nil }
            return readers[0]
        }
        /// The constant other operand of a binary node, if `value` is one operand.
        func constant(of node: Node, besides value: ValueID) -> Tensor? {
            guard node.inputs.count == 2, node.inputs.contains(value) else { return nil }
            return graph.constants[node.inputs[0] == value ? node.inputs[1] : node.inputs[0]]
        }
        /// Values of a constant that varies only along the channel axis of `shape`.
        func perChannel(_ t: Tensor) -> [Float]? {
            guard t.rank <= shape.count else { return nil }
            let aligned = [Int](repeating: 1, count: shape.count - t.rank) + t.shape
            guard aligned.indices.allSatisfy({ $0 == 1 || aligned[$0] == 1 }) else { return nil }
            if aligned[1] == channels { return t.scalars }
            return aligned[1] == 1 ? [Float](repeating: t.scalars[0], count: channels) : nil
        }
        guard let c = soleReader(mean.output), case .binary(.sub) = graph.nodes[c].op, graph.nodes[c].inputs == [x, mean.output],
              !graph.outputs.contains(graph.nodes[c].output), let centredReaders = consumers[graph.nodes[c].output],
              Set(centredReaders).count == 2,
              let s = centredReaders.first(where: { graph.nodes[$0].op == .binary(.mul) }),
              graph.nodes[s].inputs == [graph.nodes[c].output, graph.nodes[c].output],
              let d = centredReaders.first(where: { graph.nodes[$0].op == .binary(.div) }),
              let v = soleReader(graph.nodes[s].output), graph.nodes[v].op == .reduceMean(axes: [1], keepDims: true),
              let e = soleReader(graph.nodes[v].output), graph.nodes[e].op == .binary(.add),
              let epsilon = constant(of: graph.nodes[e], besides: graph.nodes[v].output), epsilon.count == 1,
              let r = soleReader(graph.nodes[e].output), graph.nodes[r].op == .activation(.squareRoot),
              soleReader(graph.nodes[r].output) == d, graph.nodes[d].inputs == [graph.nodes[c].output, graph.nodes[r].output]
        else { return nil }
        var nodes = [c, s, v, e, r, d], output = graph.nodes[d].output
        var scale = [Float](repeating: 1, count: channels), shift = [Float](repeating: 0, count: channels)
        if let m = soleReader(output), graph.nodes[m].op == .binary(.mul), let k = constant(of: graph.nodes[m], besides: output),
           let values = perChannel(k) {
            (scale, output) = (values, graph.nodes[m].output)
            nodes.append(m)
        }
        if let a = soleReader(output), graph.nodes[a].op == .binary(.add), let k = constant(of: graph.nodes[a], besides: output),
           let values = perChannel(k) {
            (shift, output) = (values, graph.nodes[a].output)
            nodes.append(a)
        }
        return (ChannelNorm(epsilon: epsilon.scalars[0], scale: scale, shift: shift), nodes, output)
    }

    /// The channel shuffle starting at node `index`, as PyTorch writes it: Reshape [N, C, H, W] → [N, g, C/g, H, W],
    /// Transpose (0, 2, 1, 3, 4), Reshape back to [N, C, H, W], each read only by the next. Returns g and the
    /// transpose and final reshape nodes.
    static func channelShuffle(in graph: Graph, at index: Int, consumers: [ValueID: [Int]]) -> (groups: Int, nodes: [Int])? {
        let first = graph.nodes[index]
        let xs = graph[first.inputs[0]].shape
        guard case .reshape(let split) = first.op, xs.count == 4, split.count == 5, split[1] * split[2] == xs[1],
              Array(split[3...]) == Array(xs[2...]),
              let r1 = consumers[first.output], r1.count == 1, !graph.outputs.contains(first.output),
              case .transpose(let perm) = graph.nodes[r1[0]].op, perm == [0, 2, 1, 3, 4],
              let r2 = consumers[graph.nodes[r1[0]].output], r2.count == 1, !graph.outputs.contains(graph.nodes[r1[0]].output),
              case .reshape = graph.nodes[r2[0]].op, graph[graph.nodes[r2[0]].output].shape.dropFirst() == xs.dropFirst() else { return nil }
        return (split[1], [r1[0], r2[0]])
    }

    /// Builds the student. `quantization` gives each quantized value's parameters and bit width; `weights`
    /// optionally gives learned weight levels and steps for a planned layer (by index), else they are rounded
    /// to nearest with max-abs scales at `weightBits(layer)` bits.
    mutating func build(_ plan: [PlannedLayer], quantization: (ValueID) -> (Quantization, bits: Int),
                        weightBits: (Int) -> Int = { _ in 8 }, weights: (Int) -> WeightQuantization? = { _ in nil }) throws
        -> StudentModel
    {
        var inputs: [Int] = []
        for id in graph.inputs {
            let value = graph[id]
            guard value.shape.first == batchDimension else {
                throw QuantizeError("input '\(value.name)' needs a batch dimension first, has \(value.shape.shapeDescription)")
            }
            let float = addActivation(ActivationInfo(name: value.name, shape: value.shape, type: .float32))
            inputs.append(float)
            floats[id] = float
            let (q, bits) = quantization(id)
            let quantized = addActivation(ActivationInfo(name: "\(value.name)/quantized", shape: value.shape, type: .uint8,
                                                         quantization: q, bits: bits))
            addLayer("\(value.name)/quantize", .quantize, [float], quantized, approximates: id)
            tensors[id] = quantized
        }
        for (index, planned) in plan.enumerated() {
            if case .island(let op) = planned.kind {
                let xs = try planned.inputs.map { try floatActivation($0, reader: planned.name) }
                let y = addActivation(ActivationInfo(name: graph[planned.output].name, shape: graph[planned.output].shape, type: .float32))
                addLayer(planned.name, .float(op), xs, y, approximates: planned.output)
                floats[planned.output] = y
                continue
            }
            let xs = try planned.inputs.map { try quantizedActivation($0, reader: planned.name, quantization) }
            let maxPool: Bool = { if case .maxPool = planned.kind { return true } else { return false } }()
            let (outQ, outBits) = planned.kind.keepsInputQuantization ? (activations[xs[0]].quantization, activations[xs[0]].bits)
                                                                      : quantization(planned.output)
            let levels = Int32((1 << outBits) - 1)
            func clamp() -> ClosedRange<Int32> {
                let c = clampLevels(planned.activation, outQ)
                return min(c.lowerBound, levels)...min(c.upperBound, levels)
            }
            let op: LayerOp
            switch planned.kind {
            case .conv(let a):
                let weight = planned.weight!
                let m = weight.shape[0], (cg, kh, kw) = (weight.shape[1], weight.shape[2], weight.shape[3])
                let learned = weights(index) ?? roundedWeights(weight.scalars, channels: m, bits: weightBits(index))
                // [M, Cg, kH, kW] → [M][kH][kW][Cg]
                var reordered = [Int8](repeating: 0, count: weight.count)
                for o in 0..<m { for c in 0..<cg { for i in 0..<kh { for j in 0..<kw {
                    reordered[((o * kh + i) * kw + j) * cg + c] = learned.levels[((o * cg + c) * kh + i) * kw + j]
                } } } }
                op = .conv(quantizedConv(WeightQuantization(levels: reordered, scales: learned.scales), bias: planned.bias,
                                         inQ: activations[xs[0]].quantization, outQ: outQ, clamp: clamp(), kernel: [kh, kw],
                                         strides: a.strides, pads: a.pads, dilations: a.dilations, group: a.group))
            case .gemm:
                let weight = planned.weight!
                let (k, m) = (weight.shape[0], weight.shape[1])
                var transposed = [Float](repeating: 0, count: weight.count)
                for i in 0..<k { for j in 0..<m { transposed[j * k + i] = weight.scalars[i * m + j] } }
                let learned = weights(index) ?? roundedWeights(transposed, channels: m, bits: weightBits(index))
                op = .gemm(quantizedConv(learned, bias: planned.bias, inQ: activations[xs[0]].quantization, outQ: outQ,
                                         clamp: clamp(), kernel: [1, 1], strides: [1, 1], pads: [0, 0, 0, 0], dilations: [1, 1], group: 1))
            case .add: op = .add(clamp: clamp())
            case .maxPool(let p), .averagePool(let p):
                let window = PoolWindow(kernel: p.kernel, strides: p.strides, pads: p.pads, ceilMode: p.ceilMode,
                                        countIncludePad: p.countIncludePad)
                op = maxPool ? .maxPool(window) : .averagePool(window)
            case .globalAveragePool: op = .globalAveragePool
            case .reshape(let shape): op = .reshape(shape: shape)
            case .concat(let axis): op = .concat(axis: axis)
            case .lookup(let f): op = .lookup(lookupTable(f, input: activations[xs[0]], outQ, maxLevel: levels))
            case .mul: op = .mul
            case .sliceChannels(let start, let count): op = .sliceChannels(start: start, count: count)
            case .permuteChannels(let permutation): op = .permuteChannels(permutation)
            case .upsampleNearest(let sh, let sw): op = .upsampleNearest(scaleH: sh, scaleW: sw)
            case .insertZeros(let sh, let sw): op = .insertZeros(strideH: sh, strideW: sw)
            case .resizeLinear(let height, let width, let coordinates):
                let input = activations[xs[0]].shape
                func taps(_ output: Int, _ size: Int) -> [ResizeTap] {
                    (0..<output).map { let t = coordinates.linearTap($0, input: size, output: output); return ResizeTap(first: t.first, second: t.second, fraction: t.fraction) }
                }
                op = .resizeLinear(LinearResize(coordinates: coordinates.rawValue, rows: taps(height, input[2]), columns: taps(width, input[3])))
            case .channelNorm(let n): op = .channelNorm(n)
            case .island: continue
            }
            let shape: [Int]
            if case .reshape(let target) = planned.kind { shape = target } else { shape = graph[planned.output].shape }
            let y = addActivation(ActivationInfo(name: graph[planned.output].name, shape: shape, type: .uint8,
                                                 quantization: outQ, bits: outBits))
            addLayer(planned.name, op, xs, y, approximates: planned.output)
            tensors[planned.output] = y
        }
        var outputs: [Int] = []
        for id in graph.outputs {
            if let float = floats[id], !graph.inputs.contains(id) {
                outputs.append(float)
                continue
            }
            guard let q = tensors[id] else { throw QuantizeError("graph output '\(graph[id].name)' is not computed by a quantized layer") }
            let float = addActivation(ActivationInfo(name: graph[id].name, shape: graph[id].shape, type: .float32))
            addLayer("\(graph[id].name)/dequantize", .dequantize, [q], float, approximates: nil)
            outputs.append(float)
        }
        return StudentModel(activations: activations, layers: layers, inputs: inputs, outputs: outputs)
    }

    /// The quantized student activation of graph value `id`: quantizing an fp32 island's value on first use.
    mutating func quantizedActivation(_ id: ValueID, reader: String, _ quantization: (ValueID) -> (Quantization, bits: Int)) throws -> Int {
        if let t = tensors[id] { return t }
        guard let float = floats[id] else {
            throw QuantizeError("node '\(reader)': input '\(graph[id].name)' is not a computed activation (a constant where a tensor is expected?)")
        }
        let (q, bits) = quantization(id)
        let quantized = addActivation(ActivationInfo(name: "\(graph[id].name)/quantized", shape: graph[id].shape, type: .uint8,
                                                     quantization: q, bits: bits))
        addLayer("\(graph[id].name)/quantize", .quantize, [float], quantized, approximates: id)
        tensors[id] = quantized
        return quantized
    }

    /// The fp32 student activation of graph value `id`: dequantizing an int8 value on first use by an island.
    mutating func floatActivation(_ id: ValueID, reader: String) throws -> Int {
        if let f = floats[id] { return f }
        guard let quantized = tensors[id] else {
            throw QuantizeError("node '\(reader)': input '\(graph[id].name)' is not a computed activation")
        }
        let float = addActivation(ActivationInfo(name: "\(graph[id].name)/float", shape: graph[id].shape, type: .float32))
        addLayer("\(graph[id].name)/dequantize", .dequantize, [quantized], float, approximates: nil)
        floats[id] = float
        return float
    }

    mutating func addActivation(_ info: ActivationInfo) -> Int {
        var info = info
        if info.shape.first != batchDimension { info.shape[0] = runtimeBatchDimension }
        activations.append(info)
        return activations.count - 1
    }

    mutating func addLayer(_ name: String, _ op: LayerOp, _ inputs: [Int], _ output: Int, approximates value: ValueID?) {
        layers.append(Layer(name: name, op: op, inputs: inputs, output: output))
        if let value { layerValues[layers.count - 1] = value }
    }

    /// Output levels allowed by a fused activation (ReLU: from the zero point; ReLU6/Clip: between the bounds).
    func clampLevels(_ activation: Activation?, _ q: Quantization) -> ClosedRange<Int32> {
        switch activation {
        case .relu?: return q.zeroPoint...255
        case .clip(let lo, let hi)?:
            let low = lo.isFinite ? Requantize.bound(lo, q) : 0
            let high = hi.isFinite ? Requantize.bound(hi, q) : 255
            return low...max(low, high)
        default: return 0...255
        }
    }

    /// The 256-entry table of `f` from an input tensor's levels to levels of `outQ`: each input level's real value,
    /// the function in fp32, quantized as the runtime quantizes (entries above the input's top level are 0).
    func lookupTable(_ f: Activation, input: ActivationInfo, _ outQ: Quantization, maxLevel: Int32) -> LookupTable {
        let table = (0..<256).map { level -> UInt8 in
            guard level <= Int(input.maxLevel) else { return 0 }
            return Requantize.quantize(f.apply(Requantize.dequantize(UInt8(level), input.quantization)), outQ, maxLevel: maxLevel)
        }
        return LookupTable(function: Op.activation(f).name, table: table)
    }

    /// Round-to-nearest symmetric weights [M][K] at `bits` bits with per-channel max-abs steps.
    func roundedWeights(_ weights: [Float], channels m: Int, bits: Int) -> WeightQuantization {
        let k = weights.count / m
        let top = Float((1 << (bits - 1)) - 1)
        var levels = [Int8](repeating: 0, count: weights.count)
        var scales = [Float](repeating: 0, count: m)
        for o in 0..<m {
            let largest = weights[(o * k)..<((o + 1) * k)].map(abs).max() ?? 0
            let scale = largest > 0 ? largest / top : 1 / top
            scales[o] = scale
            for i in (o * k)..<((o + 1) * k) {
                levels[i] = Int8(max(min((weights[i] / scale).rounded(.toNearestOrEven), top), -top))
            }
        }
        return WeightQuantization(levels: levels, scales: scales)
    }

    /// A runtime conv layer from quantized weights [M][K]: int32 bias with the input zero point folded in and one
    /// requantization multiplier per output channel.
    func quantizedConv(_ w: WeightQuantization, bias: [Float]?, inQ: Quantization, outQ: Quantization,
                       clamp: ClosedRange<Int32>, kernel: [Int], strides: [Int], pads: [Int], dilations: [Int], group: Int) -> ConvLayer {
        let m = w.scales.count, k = w.levels.count / m
        var qBias = [Int32](repeating: 0, count: m)
        var multipliers = [Float](repeating: 0, count: m)
        for o in 0..<m {
            let sum = w.levels[(o * k)..<((o + 1) * k)].reduce(Int32(0)) { $0 + Int32($1) }
            let realBias = Double(bias?[o] ?? 0) / (Double(inQ.scale) * Double(w.scales[o]))
            qBias[o] = Int32(max(min(realBias.rounded(.toNearestOrEven), Double(Int32.max / 2)), Double(Int32.min / 2))) - inQ.zeroPoint * sum
            multipliers[o] = inQ.scale * w.scales[o] / outQ.scale
        }
        return ConvLayer(outputChannels: m, kernel: kernel, strides: strides, pads: pads, dilations: dilations, group: group,
                         clamp: clamp, weights: w.levels, bias: qBias, multipliers: multipliers, weightScales: w.scales)
    }
}

extension Op {
    /// Pointwise and layout ops that stay in an fp32 island when every tensor they read comes from one (rather
    /// than quantizing the island's output only to continue on it in int8).
    var continuesIsland: Bool {
        switch self {
        case .activation, .binary, .reshape, .transpose, .reduceMean, .softmax, .matMul, .slice, .gather, .pad, .concat: return true
        default: return false
        }
    }
}

extension Activation {
    /// The same function as an fp32 island evaluates it.
    var floatFunction: FloatFunction {
        switch self {
        case .relu: return .relu
        case .clip(let lo, let hi): return .clip(min: lo, max: hi)
        case .leakyRelu(let alpha): return .leakyRelu(alpha: alpha)
        case .sigmoid: return .sigmoid
        case .hardSigmoid(let alpha, let beta): return .hardSigmoid(alpha: alpha, beta: beta)
        case .hardSwish: return .hardSwish
        case .tanh: return .tanh
        case .silu: return .silu
        case .gelu: return .gelu
        case .elu(let alpha): return .elu(alpha: alpha)
        case .softplus: return .softplus
        case .erf: return .erf
        case .squareRoot: return .squareRoot
        }
    }
}

extension FloatArithmetic {
    /// The island form of an IR binary op.
    init(_ op: BinaryOp) {
        switch op {
        case .add: self = .add
        case .sub: self = .sub
        case .mul: self = .mul
        case .div: self = .div
        }
    }
}
