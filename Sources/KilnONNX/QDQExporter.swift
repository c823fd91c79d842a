#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import KilnStudent
import SwiftProtobuf

/// Writes an int8 student as standard QDQ ONNX (opset 13): every uint8 activation is a QuantizeLinear →
/// DequantizeLinear pair, weights are int8 initializers behind per-axis DequantizeLinear, biases int32 with scale
/// input scale × weight scale. onnxruntime fuses the pattern into its own int8 kernels.
///
/// The parameters are the student's own (same weights, scales, zero points and clamps), so the export and
/// KilnRuntime follow the one requantization scheme of `Requantize`.
public enum QDQExporter {
    /// The serialized ONNX model.
    public static func export(_ student: StudentModel) throws -> Data {
        var builder = Builder(student: student)
        try builder.build()
        return try builder.model.serializedData()
    }

    struct Builder {
        let student: StudentModel
        var model = Onnx_ModelProto()
        var graph = Onnx_GraphProto()
        var counter = 0
        /// Name of the uint8 levels (the last QuantizeLinear's output) of each quantized activation.
        var levels: [Int: String] = [:]

        init(student: StudentModel) {
            self.student = student
        }

        /// Name of the float (dequantized) value of activation `i`.
        func real(_ i: Int) -> String { "\(student.activations[i].name)" + (student.activations[i].type == .uint8 ? "/dq" : "") }

        mutating func build() throws {
            model.irVersion = 8
            model.producerName = "kiln"
            model.producerVersion = "1"
            var opset = Onnx_OperatorSetIdProto()
            opset.version = 13
            model.opsetImport = [opset]
            graph.name = "kiln_student_qdq"
            for i in student.inputs { graph.input.append(valueInfo(student.activations[i])) }
            for i in student.outputs { graph.output.append(valueInfo(student.activations[i])) }
            for (index, layer) in student.layers.enumerated() {
                try emit(index, layer)
            }
            model.graph = graph
            model.metadataProps = student.metadata.sorted { $0.key < $1.key }.map { key, value in
                var entry = Onnx_StringStringEntryProto()
                entry.key = key
                entry.value = value
                return entry
            }
        }

        mutating func emit(_ index: Int, _ layer: Layer) throws {
            let out = student.activations[layer.output]
            let inputs = layer.inputs.map(real)
            let label = "l\(index)"
            var result: String
            // A clamp that cannot sit between the op and its QuantizeLinear (see `clamp`), applied to the levels.
            var levelClamp: ClosedRange<Int32>?
            switch layer.op {
            case .quantize:
                result = inputs[0]
            case .dequantize:
                node("Identity", [inputs[0]], [out.name], name: "\(label)_output")
                return
            case .conv(let c):
                let inQ = student.activations[layer.inputs[0]].quantization
                let cin = student.activations[layer.inputs[0]].shape[1]
                let (w, b) = parameters(c, inQ: inQ, cin: cin, label: label, convLayout: true)
                result = "\(label)_conv"
                node("Conv", [inputs[0], w, b], [result], name: label,
                     ints: ["kernel_shape": c.kernel, "strides": c.strides, "pads": c.pads, "dilations": c.dilations,
                            "group": [c.group]])
                levelClamp = clamp(c.clamp)
            case .gemm(let c):
                let inQ = student.activations[layer.inputs[0]].quantization
                let (w, b) = parameters(c, inQ: inQ, cin: student.activations[layer.inputs[0]].shape[1], label: label, convLayout: false)
                result = "\(label)_gemm"
                node("Gemm", [inputs[0], w, b], [result], name: label, ints: ["transB": [1]])
                levelClamp = clamp(c.clamp)
            case .add(let range):
                result = "\(label)_add"
                node("Add", inputs, [result], name: label)
                levelClamp = clamp(range)
            case .maxPool(let p), .averagePool(let p):
                result = "\(label)_pool"
                var ints = ["kernel_shape": p.kernel, "strides": p.strides, "pads": p.pads, "ceil_mode": [p.ceilMode ? 1 : 0]]
                let isMax: Bool
                if case .maxPool = layer.op { isMax = true } else {
                    isMax = false
                    ints["count_include_pad"] = [p.countIncludePad ? 1 : 0]
                }
                node(isMax ? "MaxPool" : "AveragePool", inputs, [result], name: label, ints: ints)
            case .globalAveragePool:
                result = "\(label)_gap"
                node("GlobalAveragePool", inputs, [result], name: label)
            case .concat(let axis):
                result = "\(label)_concat"
                node("Concat", inputs, [result], name: label, ints: ["axis": [axis]])
            case .reshape(let shape):
                result = "\(label)_reshape"
                let target = initializer("\(label)_shape", dims: [shape.count], int64: [0] + shape.dropFirst().map { Int64($0) })
                node("Reshape", [inputs[0], target], [result], name: label)
            case .sliceChannels(let start, let count):
                result = "\(label)_slice"
                let starts = initializer("\(label)_starts", dims: [1], int64: [Int64(start)])
                let ends = initializer("\(label)_ends", dims: [1], int64: [Int64(start + count)])
                let axes = initializer("\(label)_axes", dims: [1], int64: [1])
                node("Slice", [inputs[0], starts, ends, axes], [result], name: label)
            case .upsampleNearest(let sh, let sw):
                result = "\(label)_upsample"
                let scales = initializer("\(label)_scales", dims: [4], floats: [1, 1, Float(sh), Float(sw)])
                node("Resize", [inputs[0], "", scales], [result], name: label,
                     strings: ["mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"])
            case .resizeLinear(let r):
                let input = student.activations[layer.inputs[0]].shape
                result = "\(label)_resize"
                let scales = initializer("\(label)_scales", dims: [4], floats: [1, 1, Float(r.rows.count) / Float(input[2]),
                                                                                  Float(r.columns.count) / Float(input[3])])
                node("Resize", [inputs[0], "", scales], [result], name: label,
                     strings: ["mode": "linear", "coordinate_transformation_mode": r.coordinates])
            case .insertZeros(let sh, let sw):
                // [N, C, H, W] → [N, C, H, 1, W, 1] → zero-padded to [N, C, H, sh, W, sw] → [N, C, H·sh, W·sw] → cropped.
                let shape = student.activations[layer.inputs[0]].shape
                let (c, h, w) = (shape[1], shape[2], shape[3])
                let split = initializer("\(label)_split_shape", dims: [6], int64: [0, Int64(c), Int64(h), 1, Int64(w), 1])
                node("Reshape", [inputs[0], split], ["\(label)_split"], name: "\(label)_reshape_in")
                let pads = initializer("\(label)_pads", dims: [12], int64: [0, 0, 0, 0, 0, 0, 0, 0, 0, Int64(sh - 1), 0, Int64(sw - 1)])
                node("Pad", ["\(label)_split", pads], ["\(label)_padded"], name: "\(label)_pad")
                let joined = initializer("\(label)_joined_shape", dims: [4], int64: [0, Int64(c), Int64(h * sh), Int64(w * sw)])
                node("Reshape", ["\(label)_padded", joined], ["\(label)_spread"], name: "\(label)_reshape_out")
                let starts = initializer("\(label)_starts", dims: [2], int64: [0, 0])
                let ends = initializer("\(label)_ends", dims: [2], int64: [Int64((h - 1) * sh + 1), Int64((w - 1) * sw + 1)])
                let axes = initializer("\(label)_axes", dims: [2], int64: [2, 3])
                result = "\(label)_insert_zeros"
                node("Slice", ["\(label)_spread", starts, ends, axes], [result], name: label)
            case .permuteChannels(let permutation):
                result = "\(label)_shuffle"
                let indices = initializer("\(label)_indices", dims: [permutation.count], int64: permutation.map { Int64($0) })
                node("Gather", [inputs[0], indices], [result], name: label, ints: ["axis": [1]])
            case .mul:
                result = "\(label)_mul"
                node("Mul", inputs, [result], name: label)
            case .channelNorm(let n):
                // LayerNorm over channels as plain ops on the real values (LayerNormalization needs opset 17).
                let channels = n.scale.count
                let perChannel = student.activations[layer.inputs[0]].shape.count == 4 ? [channels, 1, 1] : [channels]
                node("ReduceMean", [inputs[0]], ["\(label)_mean"], name: "\(label)_mean", ints: ["axes": [1], "keepdims": [1]])
                node("Sub", [inputs[0], "\(label)_mean"], ["\(label)_centred"], name: "\(label)_centred")
                node("Mul", ["\(label)_centred", "\(label)_centred"], ["\(label)_squared"], name: "\(label)_squared")
                node("ReduceMean", ["\(label)_squared"], ["\(label)_variance"], name: "\(label)_variance", ints: ["axes": [1], "keepdims": [1]])
                let epsilon = initializer("\(label)_epsilon", dims: [], floats: [n.epsilon])
                node("Add", ["\(label)_variance", epsilon], ["\(label)_variance_epsilon"], name: "\(label)_variance_epsilon")
                node("Sqrt", ["\(label)_variance_epsilon"], ["\(label)_deviation"], name: "\(label)_deviation")
                node("Div", ["\(label)_centred", "\(label)_deviation"], ["\(label)_normalized"], name: "\(label)_normalized")
                let scale = initializer("\(label)_scale", dims: perChannel, floats: n.scale)
                let shift = initializer("\(label)_shift", dims: perChannel, floats: n.shift)
                node("Mul", ["\(label)_normalized", scale], ["\(label)_scaled"], name: "\(label)_scaled")
                result = "\(label)_layer_norm"
                node("Add", ["\(label)_scaled", shift], [result], name: label)
            case .float(let f):
                // An fp32 island op: float in, float out, no QuantizeLinear after it.
                floatIsland(f, inputs, inputShape: student.activations[layer.inputs[0]].shape, out: real(layer.output), outShape: out.shape,
                            label: label)
                return
            case .lookup(let l):
                // The table indexed by the input's levels, as the output's real values (QuantizeLinear below gives
                // back exactly the table's levels).
                let q = out.quantization
                let values = initializer("\(label)_table", dims: [l.table.count], floats: l.table.map { Float(Int32($0) - q.zeroPoint) * q.scale })
                guard let inputLevels = levels[layer.inputs[0]] else { throw KilnFormatError("layer \(index) ('\(layer.name)') reads a tensor with no levels") }
                node("Cast", [inputLevels], ["\(label)_indices"], name: "\(label)_cast", ints: ["to": [Int(Onnx_TensorProto.DataType.int64.rawValue)]])
                result = "\(label)_lookup"
                node("Gather", [values, "\(label)_indices"], [result], name: label, ints: ["axis": [0]])
            }
            // Requantizing ops without a clamp of their own still saturate at the activation's top level (below 255
            // when it has fewer than 8 bits), which QuantizeLinear to uint8 does not. (Max pooling and reshapes keep
            // their input's levels.)
            switch layer.op {
            case .averagePool, .globalAveragePool, .concat, .mul, .channelNorm:
                if out.maxLevel < 255 { levelClamp = 0...out.maxLevel }
            default: break
            }
            // Quantize the float result to the activation's uint8 levels and back.
            let q = out.quantization
            let scale = initializer("\(out.name)/scale", dims: [], floats: [q.scale])
            let zero = initializer("\(out.name)/zero_point", dims: [], uint8: [UInt8(q.zeroPoint)])
            node("QuantizeLinear", [result, scale, zero], ["\(out.name)/q"], name: "\(label)_quantize")
            levels[layer.output] = "\(out.name)/q"
            guard let levelClamp else {
                node("DequantizeLinear", ["\(out.name)/q", scale, zero], [real(layer.output)], name: "\(label)_dequantize")
                return
            }
            // Clip the dequantized levels and quantize again: every value is a level times the scale, so this
            // float Clip is an exact integer clamp, and the op before stays fused with its QuantizeLinear.
            node("DequantizeLinear", ["\(out.name)/q", scale, zero], ["\(out.name)/unclamped"], name: "\(label)_dequantize_unclamped")
            let lo = initializer("\(label)_clip_min", dims: [], floats: [Float(levelClamp.lowerBound - q.zeroPoint) * q.scale])
            let hi = initializer("\(label)_clip_max", dims: [], floats: [Float(levelClamp.upperBound - q.zeroPoint) * q.scale])
            node("Clip", ["\(out.name)/unclamped", lo, hi], ["\(out.name)/clamped"], name: "\(label)_clip")
            node("QuantizeLinear", ["\(out.name)/clamped", scale, zero], ["\(out.name)/q_clamped"], name: "\(label)_quantize_clamped")
            levels[layer.output] = "\(out.name)/q_clamped"
            node("DequantizeLinear", ["\(out.name)/q_clamped", scale, zero], [real(layer.output)], name: "\(label)_dequantize")
        }

        /// The ONNX nodes (opset 13) of one fp32 island op from `inputs` to `out`.
        mutating func floatIsland(_ op: FloatOp, _ inputs: [String], inputShape: [Int], out: String, outShape: [Int], label: String) {
            func constant(_ c: FloatConstant, _ suffix: String) -> String {
                initializer("\(label)_\(suffix)", dims: c.shape, floats: c.values.isEmpty ? [0] : c.values)
            }
            func scalar(_ v: Float, _ suffix: String) -> String { initializer("\(label)_\(suffix)", dims: [], floats: [v]) }
            switch op {
            case .unary(let f):
                let x = inputs[0]
                switch f {
                case .relu, .sigmoid, .tanh, .softplus, .erf, .squareRoot:
                    // Their names are the ONNX op types.
                    node(f.name, [x], [out], name: label)
                case .clip(let lo, let hi):
                    node("Clip", [x, scalar(lo, "min"), scalar(hi, "max")], [out], name: label)
                case .leakyRelu(let alpha):
                    node("LeakyRelu", [x], [out], name: label, floats: ["alpha": alpha])
                case .elu(let alpha):
                    node("Elu", [x], [out], name: label, floats: ["alpha": alpha])
                case .hardSigmoid(let alpha, let beta):
                    node("HardSigmoid", [x], [out], name: label, floats: ["alpha": alpha, "beta": beta])
                case .hardSwish:
                    node("HardSigmoid", [x], ["\(label)_gate"], name: "\(label)_gate", floats: ["alpha": 1 / 6, "beta": 0.5])
                    node("Mul", [x, "\(label)_gate"], [out], name: label)
                case .silu:
                    node("Sigmoid", [x], ["\(label)_gate"], name: "\(label)_gate")
                    node("Mul", [x, "\(label)_gate"], [out], name: label)
                case .gelu:
                    node("Mul", [x, scalar(0.70710678118654752, "rsqrt2")], ["\(label)_scaled"], name: "\(label)_scale")
                    node("Erf", ["\(label)_scaled"], ["\(label)_erf"], name: "\(label)_erf")
                    node("Add", ["\(label)_erf", scalar(1, "one")], ["\(label)_erf1"], name: "\(label)_add")
                    node("Mul", [x, "\(label)_erf1"], ["\(label)_product"], name: "\(label)_product")
                    node("Mul", ["\(label)_product", scalar(0.5, "half")], [out], name: label)
                }
            case .arithmetic(_, let c, let constantFirst):
                var operands = inputs
                if let c { operands = constantFirst ? [constant(c, "constant"), inputs[0]] : [inputs[0], constant(c, "constant")] }
                node(op.name, operands, [out], name: label)
            case .reduceMean(let axes):
                node("ReduceMean", inputs, [out], name: label, ints: ["axes": axes, "keepdims": [outShape.count == inputShape.count ? 1 : 0]])
            case .transpose(let permutation):
                node("Transpose", inputs, [out], name: label, ints: ["perm": permutation])
            case .reshape:
                let target = initializer("\(label)_shape", dims: [outShape.count], int64: [0] + outShape.dropFirst().map { Int64($0) })
                node("Reshape", [inputs[0], target], [out], name: label)
            case .matMul(let c):
                node("MatMul", c.map { [inputs[0], constant($0, "b")] } ?? inputs, [out], name: label)
            case .softmax(let axis):
                node("Softmax", inputs, [out], name: label, ints: ["axis": [axis]])
            case .concat(let axis):
                node("Concat", inputs, [out], name: label, ints: ["axis": [axis]])
            case .slice(let starts, let counts, let steps):
                let axes = Array(1..<starts.count)
                let ends = axes.map { d -> Int64 in
                    let end = starts[d] + counts[d] * steps[d]
                    return end < 0 ? Int64.min : Int64(end)
                }
                node("Slice", [inputs[0], initializer("\(label)_starts", dims: [axes.count], int64: axes.map { Int64(starts[$0]) }),
                               initializer("\(label)_ends", dims: [axes.count], int64: ends),
                               initializer("\(label)_axes", dims: [axes.count], int64: axes.map { Int64($0) }),
                               initializer("\(label)_steps", dims: [axes.count], int64: axes.map { Int64(steps[$0]) })],
                     [out], name: label)
            case .pad(let pads, let mode, let value):
                let amounts = initializer("\(label)_pads", dims: [pads.count], int64: pads.map { Int64($0) })
                node("Pad", [inputs[0], amounts, scalar(value, "value")], [out], name: label,
                     strings: ["mode": ["constant", "reflect", "edge"][Int(mode)]])
            case .gather(let axis, let indices, let shape):
                let table = initializer("\(label)_indices", dims: shape, int64: indices.map { Int64($0) })
                node("Gather", [inputs[0], table], [out], name: label, ints: ["axis": [axis]])
            }
        }

        /// A fused clamp (in levels of `q`) as the export applies it: nothing for the whole uint8 range (ReLU at
        /// zero point 0 included — QuantizeLinear saturates at 0); any other clamp (ReLU6, low-bit level ranges, ReLU
        /// at another zero point) is returned to be applied to the quantized levels, because a Clip or Relu between
        /// an op and its QuantizeLinear makes onnxruntime run the op in fp32, whose rounding differs from integer
        /// sums near rounding ties.
        func clamp(_ range: ClosedRange<Int32>) -> ClosedRange<Int32>? { range == 0...255 ? nil : range }

        /// Dequantized weight and bias initializers of a conv/gemm layer.
        mutating func parameters(_ c: ConvLayer, inQ: Quantization, cin: Int, label: String, convLayout: Bool) -> (String, String) {
            let m = c.outputChannels, k = c.weights.count / m
            let cg = cin / c.group, (kh, kw) = (c.kernel[0], c.kernel[1])
            var weights = [Int8](repeating: 0, count: c.weights.count)
            if convLayout {
                // [M][kH][kW][Cg] → [M, Cg, kH, kW]
                for o in 0..<m { for i in 0..<kh { for j in 0..<kw { for ch in 0..<cg {
                    weights[((o * cg + ch) * kh + i) * kw + j] = c.weights[((o * kh + i) * kw + j) * cg + ch]
                } } } }
            } else {
                weights = c.weights
            }
            // The runtime's bias has −zeroPoint · Σw folded in; ONNX wants the plain bias.
            let bias = (0..<m).map { o in c.bias[o] + inQ.zeroPoint * c.weights[(o * k)..<((o + 1) * k)].reduce(Int32(0)) { $0 + Int32($1) } }
            let dims = convLayout ? [m, cg, kh, kw] : [m, k]
            let w = initializer("\(label)_weight", dims: dims, int8: weights)
            let ws = initializer("\(label)_weight_scale", dims: [m], floats: c.weightScales)
            let wz = initializer("\(label)_weight_zero_point", dims: [m], int8: [Int8](repeating: 0, count: m))
            node("DequantizeLinear", [w, ws, wz], ["\(label)_weight_dq"], name: "\(label)_weight_dequantize", ints: ["axis": [0]])
            let b = initializer("\(label)_bias", dims: [m], int32: bias)
            let bs = initializer("\(label)_bias_scale", dims: [m], floats: c.weightScales.map { $0 * inQ.scale })
            let bz = initializer("\(label)_bias_zero_point", dims: [m], int32: [Int32](repeating: 0, count: m))
            node("DequantizeLinear", [b, bs, bz], ["\(label)_bias_dq"], name: "\(label)_bias_dequantize", ints: ["axis": [0]])
            return ("\(label)_weight_dq", "\(label)_bias_dq")
        }

        mutating func node(_ op: String, _ inputs: [String], _ outputs: [String], name: String, ints: [String: [Int]] = [:],
                           floats: [String: Float] = [:], strings: [String: String] = [:]) {
            var n = Onnx_NodeProto()
            n.opType = op
            n.input = inputs
            n.output = outputs
            n.name = name
            for (key, values) in ints.sorted(by: { $0.key < $1.key }) {
                var a = Onnx_AttributeProto()
                a.name = key
                if ["group", "transB", "axis", "ceil_mode", "count_include_pad", "to", "keepdims"].contains(key) {
                    a.type = .int
                    a.i = Int64(values[0])
                } else {
                    a.type = .ints
                    a.ints = values.map { Int64($0) }
                }
                n.attribute.append(a)
            }
            for (key, value) in floats.sorted(by: { $0.key < $1.key }) {
                var a = Onnx_AttributeProto()
                a.name = key
                a.type = .float
                a.f = value
                n.attribute.append(a)
            }
            for (key, value) in strings.sorted(by: { $0.key < $1.key }) {
                var a = Onnx_AttributeProto()
                a.name = key
                a.type = .string
                a.s = Data(value.utf8)
                n.attribute.append(a)
            }
            graph.node.append(n)
        }

        mutating func initializer(_ name: String, dims: [Int], floats: [Float] = [], int64: [Int64] = [], int32: [Int32] = [],
                                  int8: [Int8] = [], uint8: [UInt8] = []) -> String {
            var t = Onnx_TensorProto()
            t.name = name
            t.dims = dims.map { Int64($0) }
            if !floats.isEmpty {
                t.dataType = Int32(Onnx_TensorProto.DataType.float.rawValue)
                t.floatData = floats
            } else if !int64.isEmpty {
                t.dataType = Int32(Onnx_TensorProto.DataType.int64.rawValue)
                t.int64Data = int64
            } else if !int32.isEmpty {
                t.dataType = Int32(Onnx_TensorProto.DataType.int32.rawValue)
                t.int32Data = int32
            } else if !int8.isEmpty {
                t.dataType = Int32(Onnx_TensorProto.DataType.int8.rawValue)
                t.rawData = Data(int8.map { UInt8(bitPattern: $0) })
            } else {
                t.dataType = Int32(Onnx_TensorProto.DataType.uint8.rawValue)
                t.rawData = Data(uint8)
            }
            graph.initializer.append(t)
            return name
        }

        func valueInfo(_ a: ActivationInfo) -> Onnx_ValueInfoProto {
            var info = Onnx_ValueInfoProto()
            info.name = a.name
            var type = Onnx_TypeProto.Tensor()
            type.elemType = 1
            var shape = Onnx_TensorShapeProto()
            shape.dim = a.shape.map { d in
                var dim = Onnx_TensorShapeProto.Dimension()
                if d == runtimeBatchDimension { dim.dimParam = "N" } else { dim.dimValue = Int64(d) }
                return dim
            }
            type.shape = shape
            info.type.tensorType = type
            return info
        }
    }
}
