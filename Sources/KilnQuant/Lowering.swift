import KilnGraph
import KilnStudent

/// A graph that cannot be turned into an int8 student, naming the node.
public struct QuantizeError: Error, CustomStringConvertible, Equatable {
    /// What is wrong.
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
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
    /// Student activation holding each graph value.
    var tensors: [ValueID: Int] = [:]
    /// The graph value each student layer approximates (for per-layer error reports).
    var layerValues: [Int: ValueID] = [:]

    init(graph: Graph) {
        self.graph = graph
    }

    /// The student's layers, in graph order.
    static func plan(_ graph: Graph) throws -> [PlannedLayer] {
        let consumers = graph.consumers()
        var planned: [PlannedLayer] = []
        var fused = Set<Int>()
        for (index, node) in graph.nodes.enumerated() where !fused.contains(index) {
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
            case .reshape(let shape):
                guard shape.first == batchDimension else {
                    throw QuantizeError("node '\(node.name)' (Reshape): the batch dimension must stay first, target \(shape.shapeDescription)")
                }
                planned.append(layer(.reshape(shape), inputs: [node.inputs[0]], output: node.output))
            case .concat(let axis):
                guard axis >= 1 else { throw QuantizeError("node '\(node.name)' (Concat): cannot concatenate along the batch dimension") }
                planned.append(layer(.concat(axis), inputs: node.inputs, output: node.output))
            default:
                throw QuantizeError("node '\(node.name)' (\(node.op.name)) has no int8 kernel yet; Kiln quantizes Conv (+BatchNorm, +Relu/Relu6/Clip), MatMul/Gemm, residual Add, pooling, Concat and Reshape")
            }
        }
        return planned
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
            let (q, bits) = quantization(id)
            let quantized = addActivation(ActivationInfo(name: "\(value.name)/quantized", shape: value.shape, type: .uint8,
                                                         quantization: q, bits: bits))
            addLayer("\(value.name)/quantize", .quantize, [float], quantized, approximates: id)
            tensors[id] = quantized
        }
        for (index, planned) in plan.enumerated() {
            let xs = try planned.inputs.map { id -> Int in
                guard let t = tensors[id] else {
                    throw QuantizeError("node '\(planned.name)': input '\(graph[id].name)' is not a quantized activation (a constant where a tensor is expected?)")
                }
                return t
            }
            let maxPool: Bool = { if case .maxPool = planned.kind { return true } else { return false } }()
            let reshape: Bool = { if case .reshape = planned.kind { return true } else { return false } }()
            // Max pooling and reshapes keep their input's quantization.
            let (outQ, outBits) = maxPool || reshape ? (activations[xs[0]].quantization, activations[xs[0]].bits) : quantization(planned.output)
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
            guard let q = tensors[id] else { throw QuantizeError("graph output '\(graph[id].name)' is not computed by a quantized layer") }
            let float = addActivation(ActivationInfo(name: graph[id].name, shape: graph[id].shape, type: .float32))
            addLayer("\(graph[id].name)/dequantize", .dequantize, [q], float, approximates: nil)
            outputs.append(float)
        }
        return StudentModel(activations: activations, layers: layers, inputs: inputs, outputs: outputs)
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
