import KilnGraph
import KilnRuntime

/// A graph that cannot be turned into an int8 student, naming the node.
public struct QuantizeError: Error, CustomStringConvertible, Equatable {
    /// What is wrong.
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Turns a prepared fp32 graph (BatchNorm and padding folded into convs) plus activation quantization into a
/// `StudentModel`: per-channel symmetric int8 weights, uint8 asymmetric activations, int32 biases, activations
/// fused into the conv/gemm/add before them as clamps.
struct Lowering {
    let graph: Graph
    let quantization: (ValueID) -> Quantization
    var activations: [ActivationInfo] = []
    var layers: [Layer] = []
    /// Student activation (uint8) holding each graph value.
    var tensors: [ValueID: Int] = [:]
    /// The graph value each student layer approximates (for per-layer error reports).
    var layerValues: [Int: ValueID] = [:]

    init(graph: Graph, quantization: @escaping (ValueID) -> Quantization) {
        self.graph = graph
        self.quantization = quantization
    }

    mutating func run() throws -> StudentModel {
        let consumers = graph.consumers()
        var inputs: [Int] = []
        for id in graph.inputs {
            let value = graph[id]
            guard value.shape.first == batchDimension else {
                throw QuantizeError("input '\(value.name)' needs a batch dimension first, has \(value.shape.shapeDescription)")
            }
            let float = addActivation(ActivationInfo(name: value.name, shape: value.shape, type: .float32))
            inputs.append(float)
            let quantized = addActivation(ActivationInfo(name: "\(value.name)/quantized", shape: value.shape, type: .uint8,
                                                         quantization: quantization(id)))
            addLayer("\(value.name)/quantize", .quantize, [float], quantized, approximates: id)
            tensors[id] = quantized
        }
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
            func input(_ i: Int) throws -> Int {
                guard let t = tensors[node.inputs[i]] else {
                    throw QuantizeError("node '\(node.name)' (\(node.op.name)): input '\(graph[node.inputs[i]].name)' is not a quantized activation (a constant where a tensor is expected?)")
                }
                return t
            }
            switch node.op {
            case .conv(let a):
                guard let weight = graph.constants[node.inputs[1]] else {
                    throw QuantizeError("node '\(node.name)' (Conv): the weight must be a constant")
                }
                let bias = node.inputs.count > 2 ? graph.constants[node.inputs[2]] : nil
                if node.inputs.count > 2 && bias == nil { throw QuantizeError("node '\(node.name)' (Conv): the bias must be a constant") }
                let x = try input(0)
                let activation = fusedActivation(after: node.output)
                if let activation { fused.insert(activation.index) }
                let output = activation.map { graph.nodes[$0.index].output } ?? node.output
                let outQ = quantization(output)
                let m = weight.shape[0], (cg, kh, kw) = (weight.shape[1], weight.shape[2], weight.shape[3])
                // [M, Cg, kH, kW] → [M][kH][kW][Cg]
                var reordered = [Float](repeating: 0, count: weight.count)
                for o in 0..<m { for c in 0..<cg { for i in 0..<kh { for j in 0..<kw {
                    reordered[((o * kh + i) * kw + j) * cg + c] = weight.scalars[((o * cg + c) * kh + i) * kw + j]
                } } } }
                let layer = quantizedConv(weights: reordered, outputs: m, bias: bias?.scalars, inQ: activations[x].quantization,
                                          outQ: outQ, clamp: clampLevels(activation?.activation, outQ),
                                          kernel: [kh, kw], strides: a.strides, pads: a.pads, dilations: a.dilations, group: a.group)
                let y = addActivation(ActivationInfo(name: graph[output].name, shape: graph[output].shape, type: .uint8, quantization: outQ))
                addLayer(node.name, .conv(layer), [x], y, approximates: output)
                tensors[output] = y
            case .matMul:
                guard let weight = graph.constants[node.inputs[1]], weight.rank == 2, graph[node.inputs[0]].shape.count == 2 else {
                    throw QuantizeError("node '\(node.name)' (MatMul): only [N, K] × constant [K, M] is supported")
                }
                let x = try input(0)
                let (k, m) = (weight.shape[0], weight.shape[1])
                var output = node.output
                var bias: [Float]?
                if let readers = consumers[output], readers.count == 1, !graph.outputs.contains(output),
                   case .binary(.add) = graph.nodes[readers[0]].op {
                    let add = graph.nodes[readers[0]]
                    let other = add.inputs[0] == output ? add.inputs[1] : add.inputs[0]
                    if let b = graph.constants[other], b.count == m, b.shape.last == m {
                        bias = b.scalars
                        fused.insert(readers[0])
                        output = add.output
                    }
                }
                let activation = fusedActivation(after: output)
                if let activation {
                    fused.insert(activation.index)
                    output = graph.nodes[activation.index].output
                }
                let outQ = quantization(output)
                var transposed = [Float](repeating: 0, count: weight.count)
                for i in 0..<k { for j in 0..<m { transposed[j * k + i] = weight.scalars[i * m + j] } }
                let layer = quantizedConv(weights: transposed, outputs: m, bias: bias, inQ: activations[x].quantization, outQ: outQ,
                                          clamp: clampLevels(activation?.activation, outQ), kernel: [1, 1], strides: [1, 1],
                                          pads: [0, 0, 0, 0], dilations: [1, 1], group: 1)
                let y = addActivation(ActivationInfo(name: graph[output].name, shape: graph[output].shape, type: .uint8, quantization: outQ))
                addLayer(node.name, .gemm(layer), [x], y, approximates: output)
                tensors[output] = y
            case .binary(.add) where tensors[node.inputs[0]] != nil && tensors[node.inputs[1]] != nil:
                let a = try input(0), b = try input(1)
                guard graph[node.inputs[0]].shape == graph[node.inputs[1]].shape else {
                    throw QuantizeError("node '\(node.name)' (Add): only same-shape residual adds are supported, got \(graph[node.inputs[0]].shape.shapeDescription) + \(graph[node.inputs[1]].shape.shapeDescription)")
                }
                let activation = fusedActivation(after: node.output)
                if let activation { fused.insert(activation.index) }
                let output = activation.map { graph.nodes[$0.index].output } ?? node.output
                let outQ = quantization(output)
                let y = addActivation(ActivationInfo(name: graph[output].name, shape: graph[output].shape, type: .uint8, quantization: outQ))
                addLayer(node.name, .add(clamp: clampLevels(activation?.activation, outQ)), [a, b], y, approximates: output)
                tensors[output] = y
            case .maxPool(let p), .averagePool(let p):
                guard p.dilations == [1, 1] else { throw QuantizeError("node '\(node.name)': dilated pooling is not supported") }
                let x = try input(0)
                let window = PoolWindow(kernel: p.kernel, strides: p.strides, pads: p.pads, ceilMode: p.ceilMode,
                                        countIncludePad: p.countIncludePad)
                let isMax: Bool = { if case .maxPool = node.op { return true } else { return false } }()
                let outQ = isMax ? activations[x].quantization : quantization(node.output)
                let y = addActivation(ActivationInfo(name: graph[node.output].name, shape: graph[node.output].shape, type: .uint8, quantization: outQ))
                addLayer(node.name, isMax ? .maxPool(window) : .averagePool(window), [x], y, approximates: node.output)
                tensors[node.output] = y
            case .globalAveragePool:
                let x = try input(0)
                let outQ = quantization(node.output)
                let y = addActivation(ActivationInfo(name: graph[node.output].name, shape: graph[node.output].shape, type: .uint8, quantization: outQ))
                addLayer(node.name, .globalAveragePool, [x], y, approximates: node.output)
                tensors[node.output] = y
            case .reshape(let shape):
                let x = try input(0)
                guard shape.first == batchDimension else {
                    throw QuantizeError("node '\(node.name)' (Reshape): the batch dimension must stay first, target \(shape.shapeDescription)")
                }
                let y = addActivation(ActivationInfo(name: graph[node.output].name, shape: shape, type: .uint8, quantization: activations[x].quantization))
                addLayer(node.name, .reshape(shape: shape), [x], y, approximates: node.output)
                tensors[node.output] = y
            case .concat(let axis):
                let xs = try node.inputs.indices.map { try input($0) }
                guard axis >= 1 else { throw QuantizeError("node '\(node.name)' (Concat): cannot concatenate along the batch dimension") }
                let outQ = quantization(node.output)
                let y = addActivation(ActivationInfo(name: graph[node.output].name, shape: graph[node.output].shape, type: .uint8, quantization: outQ))
                addLayer(node.name, .concat(axis: axis), xs, y, approximates: node.output)
                tensors[node.output] = y
            default:
                throw QuantizeError("node '\(node.name)' (\(node.op.name)) has no int8 kernel yet; Kiln quantizes Conv (+BatchNorm, +Relu/Relu6/Clip), MatMul/Gemm, residual Add, pooling, Concat and Reshape")
            }
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

    /// Quantizes weights [M][K] per output channel (symmetric int8 in −127...127) and the bias to int32, folding
    /// the input zero point into the bias.
    func quantizedConv(weights: [Float], outputs m: Int, bias: [Float]?, inQ: Quantization, outQ: Quantization,
                       clamp: ClosedRange<Int32>, kernel: [Int], strides: [Int], pads: [Int], dilations: [Int], group: Int) -> ConvLayer {
        let k = weights.count / m
        var q = [Int8](repeating: 0, count: weights.count)
        var qBias = [Int32](repeating: 0, count: m)
        var multipliers = [Float](repeating: 0, count: m)
        var scales = [Float](repeating: 0, count: m)
        for o in 0..<m {
            let row = weights[(o * k)..<((o + 1) * k)]
            let largest = row.map(abs).max() ?? 0
            let scale = largest > 0 ? largest / 127 : 1 / 127
            scales[o] = scale
            var sum: Int32 = 0
            for (i, w) in row.enumerated() {
                let level = Int8(max(min((w / scale).rounded(.toNearestOrEven), 127), -127))
                q[o * k + i] = level
                sum += Int32(level)
            }
            let realBias = Double(bias?[o] ?? 0) / (Double(inQ.scale) * Double(scale))
            qBias[o] = Int32(max(min(realBias.rounded(.toNearestOrEven), Double(Int32.max / 2)), Double(Int32.min / 2))) - inQ.zeroPoint * sum
            multipliers[o] = inQ.scale * scale / outQ.scale
        }
        return ConvLayer(outputChannels: m, kernel: kernel, strides: strides, pads: pads, dilations: dilations, group: group,
                         clamp: clamp, weights: q, bias: qBias, multipliers: multipliers, weightScales: scales)
    }
}
