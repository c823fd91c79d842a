/// The size that stands for the batch dimension N in static shapes; the first dimension of every activation.
public let runtimeBatchDimension = -1

/// Affine quantization of uint8 activations: real = scale · (q − zeroPoint).
public struct Quantization: Hashable, Sendable {
    /// Step between adjacent levels (positive, finite).
    public var scale: Float
    /// The level that represents 0.0 (0...255).
    public var zeroPoint: Int32

    /// Creates quantization parameters.
    public init(scale: Float, zeroPoint: Int32) {
        self.scale = scale
        self.zeroPoint = zeroPoint
    }
}

/// Element type of a student tensor.
public enum ElementType: UInt8, Sendable {
    /// Model inputs and outputs.
    case float32 = 1
    /// Quantized activations.
    case uint8 = 2
}

/// A tensor flowing between student layers. Shapes are logical NCHW (ONNX order); 4-D uint8 activations are
/// stored NHWC in memory.
public struct ActivationInfo: Hashable, Sendable {
    /// Name (from the teacher where it had one).
    public var name: String
    /// Logical shape; the first dimension is `runtimeBatchDimension`.
    public var shape: [Int]
    /// Element type.
    public var type: ElementType
    /// Quantization of uint8 tensors (ignored for float32).
    public var quantization: Quantization
    /// Bit width of a quantized tensor (2...8): its levels are 0 ... 2^bits − 1, held in uint8 storage.
    public var bits: Int

    /// Creates an activation description.
    public init(name: String, shape: [Int], type: ElementType, quantization: Quantization = Quantization(scale: 1, zeroPoint: 0),
                bits: Int = 8) {
        self.name = name
        self.shape = shape
        self.type = type
        self.quantization = quantization
        self.bits = bits
    }

    /// The highest level of the tensor (255 at 8 bits).
    public var maxLevel: Int32 { Int32((1 << bits) - 1) }
}

/// Parameters of a quantized convolution or fully-connected layer.
///
/// `weights` are int8, per output channel symmetric, laid out [M][kH][kW][C/group] (a gemm is a 1×1 conv over
/// [N, K]). `bias` is int32 in units of input scale × weight scale, with `−inputZeroPoint · Σ weights` already
/// folded in. `multipliers[m]` = input scale · weight scale[m] / output scale.
public struct ConvLayer: Hashable, Sendable {
    /// Output channels M.
    public var outputChannels: Int
    /// Kernel height and width.
    public var kernel: [Int]
    /// Stride along H and W.
    public var strides: [Int]
    /// Zero padding [top, left, bottom, right] (padded cells hold the input zero point).
    public var pads: [Int]
    /// Dilation along H and W.
    public var dilations: [Int]
    /// Number of groups.
    public var group: Int
    /// Lowest and highest output level after the fused activation (e.g. ReLU6).
    public var clamp: ClosedRange<Int32>
    /// int8 weights [M][kH][kW][C/group].
    public var weights: [Int8]
    /// int32 bias per output channel.
    public var bias: [Int32]
    /// Requantization multiplier per output channel.
    public var multipliers: [Float]
    /// Weight scale per output channel (kept for export and reports).
    public var weightScales: [Float]

    /// Creates a conv layer description.
    public init(outputChannels: Int, kernel: [Int], strides: [Int], pads: [Int], dilations: [Int], group: Int,
                clamp: ClosedRange<Int32>, weights: [Int8], bias: [Int32], multipliers: [Float], weightScales: [Float]) {
        self.outputChannels = outputChannels
        self.kernel = kernel
        self.strides = strides
        self.pads = pads
        self.dilations = dilations
        self.group = group
        self.clamp = clamp
        self.weights = weights
        self.bias = bias
        self.multipliers = multipliers
        self.weightScales = weightScales
    }
}

/// A pooling window.
public struct PoolWindow: Hashable, Sendable {
    /// Window height and width.
    public var kernel: [Int]
    /// Stride along H and W.
    public var strides: [Int]
    /// Padding [top, left, bottom, right].
    public var pads: [Int]
    /// Round the output size up.
    public var ceilMode: Bool
    /// Average pooling divides by the padded window size.
    public var countIncludePad: Bool

    /// Creates a pooling window.
    public init(kernel: [Int], strides: [Int], pads: [Int], ceilMode: Bool, countIncludePad: Bool) {
        self.kernel = kernel
        self.strides = strides
        self.pads = pads
        self.ceilMode = ceilMode
        self.countIncludePad = countIncludePad
    }
}

/// A pointwise function on quantized values as a table: output level = `table[input level]`, one entry for each
/// of the 256 uint8 levels (entries above the input's highest level are never read). Built at lowering from the
/// function's own fp32 definition, so any activation (Sigmoid, SiLU, HardSwish, GELU, ...) costs one load per value.
public struct LookupTable: Hashable, Sendable {
    /// What the table computes, for reports and export (e.g. "Sigmoid", "LeakyRelu(0.1)").
    public var function: String
    /// Output level per input level; 256 entries.
    public var table: [UInt8]

    /// Creates a lookup table layer.
    public init(function: String, table: [UInt8]) {
        self.function = function
        self.table = table
    }
}

/// One output row or column of a bilinear resize: the two input cells it interpolates and the second one's weight.
public struct ResizeTap: Hashable, Sendable {
    /// The input cells (equal at the border).
    public var first, second: Int
    /// Weight of `second` (0 ... 1); `first` weighs 1 − fraction.
    public var fraction: Float

    /// Creates a tap.
    public init(first: Int, second: Int, fraction: Float) {
        self.first = first
        self.second = second
        self.fraction = fraction
    }
}

/// A bilinear resize as its taps: output level = rint((1 − fy)·((1 − fx)·a + fx·b) + fy·((1 − fx)·c + fx·d)) of
/// the four input levels, in float32 in that order (same quantization in and out).
public struct LinearResize: Hashable, Sendable {
    /// The ONNX coordinate_transformation_mode the taps were computed with (for export).
    public var coordinates: String
    /// One tap per output row and per output column.
    public var rows: [ResizeTap]
    public var columns: [ResizeTap]

    /// Creates a resize description.
    public init(coordinates: String, rows: [ResizeTap], columns: [ResizeTap]) {
        self.coordinates = coordinates
        self.rows = rows
        self.columns = columns
    }
}

/// Layer normalization over the channels of each pixel (ConvNeXt's LayerNorm), on real values:
/// y = (x − μ) / √(σ² + epsilon) · scale[c] + shift[c], requantized to the output's levels (the moments are exact
/// integer sums of the input's levels; `kiln_qu8_channel_norm` gives the exact float order).
public struct ChannelNorm: Hashable, Sendable {
    /// Added to the variance.
    public var epsilon: Float
    /// Per-channel factor and offset after normalizing.
    public var scale: [Float]
    public var shift: [Float]

    /// Creates a channel normalization.
    public init(epsilon: Float, scale: [Float], shift: [Float]) {
        self.epsilon = epsilon
        self.scale = scale
        self.shift = shift
    }
}

/// What a student layer computes.
public enum LayerOp: Hashable, Sendable {
    /// float32 input (NCHW) → uint8 (NHWC), with the output tensor's quantization.
    case quantize
    /// uint8 → float32 output (NCHW).
    case dequantize
    /// Quantized convolution with fused bias, requantization and clamp.
    case conv(ConvLayer)
    /// Quantized fully-connected layer on [N, K] → [N, M] (a 1×1 conv layout).
    case gemm(ConvLayer)
    /// Requantized elementwise sum of two tensors of the same shape, clamped (fused ReLU/ReLU6).
    case add(clamp: ClosedRange<Int32>)
    /// Max pooling (input and output share quantization).
    case maxPool(PoolWindow)
    /// Average pooling, requantized.
    case averagePool(PoolWindow)
    /// Mean over H and W, requantized; output [N, C, 1, 1].
    case globalAveragePool
    /// Requantized concatenation along a logical (NCHW) axis.
    case concat(axis: Int)
    /// Logical (NCHW-order) reshape.
    case reshape(shape: [Int])
    /// A pointwise function as a 256-entry table of output levels (same shape in and out).
    case lookup(LookupTable)
    /// Requantized elementwise product of a tensor and a second one of the same shape or of shape [N, C, 1, 1]
    /// (one gate per channel, as squeeze-and-excite blocks multiply): level = rint((a − za)(b − zb) · sa·sb/sy) + zy.
    case mul
    /// Channels start ..< start + count of a 4-D or 2-D tensor (same quantization as the input).
    case sliceChannels(start: Int, count: Int)
    /// Output channel j is input channel permutation[j] (a channel shuffle; same quantization as the input).
    case permuteChannels([Int])
    /// Nearest-neighbour upsampling of a 4-D tensor by whole factors (same quantization as the input).
    case upsampleNearest(scaleH: Int, scaleW: Int)
    /// A 4-D tensor spread to [N, C, (H−1)·sh + 1, (W−1)·sw + 1] with the zero point between its pixels (the first
    /// half of a transposed convolution; same quantization as the input).
    case insertZeros(strideH: Int, strideW: Int)
    /// Bilinear resize of a 4-D tensor (same quantization as the input).
    case resizeLinear(LinearResize)
    /// Layer normalization over the channels of a 4-D or 2-D tensor, requantized.
    case channelNorm(ChannelNorm)
    /// An fp32 island op: float32 activations in and out (a dequantize before, a quantize after).
    case float(FloatOp)
}

/// One layer of a student: an op over activations, by index into `StudentModel.activations`.
public struct Layer: Hashable, Sendable {
    /// Name (from the teacher's node).
    public var name: String
    /// What it computes.
    public var op: LayerOp
    /// Input activations.
    public var inputs: [Int]
    /// Output activation.
    public var output: Int

    /// Creates a layer.
    public init(name: String, op: LayerOp, inputs: [Int], output: Int) {
        self.name = name
        self.op = op
        self.inputs = inputs
        self.output = output
    }
}

/// An int8 student network: the content of a `.kiln` file.
public struct StudentModel: Hashable, Sendable {
    /// Every tensor.
    public var activations: [ActivationInfo]
    /// Layers in execution order.
    public var layers: [Layer]
    /// Model inputs (float32), by activation index.
    public var inputs: [Int]
    /// Model outputs (float32), by activation index.
    public var outputs: [Int]
    /// Free-form metadata (producer, teacher hash, calibration).
    public var metadata: [String: String]

    /// Creates a student.
    public init(activations: [ActivationInfo], layers: [Layer], inputs: [Int], outputs: [Int],
                metadata: [String: String] = [:]) {
        self.activations = activations
        self.layers = layers
        self.inputs = inputs
        self.outputs = outputs
        self.metadata = metadata
    }
}

extension StudentModel {
    /// Number of int8 weights.
    public var parameterCount: Int {
        layers.reduce(0) { total, layer in
            switch layer.op {
            case .conv(let c), .gemm(let c): return total + c.weights.count
            default: return total
            }
        }
    }

    /// Multiply-accumulates of one inference of one sample.
    public var macsPerSample: Int { layerMACs.reduce(0, +) }

    /// Multiply-accumulates of each layer for one sample (zero for layers without weights).
    public var layerMACs: [Int] {
        layers.map { layer in
            switch layer.op {
            case .conv(let c), .gemm(let c):
                return activations[layer.output].shape.dropFirst().reduce(1, *) * c.weights.count / c.outputChannels
            default: return 0
            }
        }
    }
}

extension LayerOp {
    /// Short name for reports.
    public var displayName: String {
        switch self {
        case .quantize: return "Quantize"
        case .dequantize: return "Dequantize"
        case .conv(let c): return c.group > 1 ? (c.group == c.outputChannels ? "DepthwiseConv" : "GroupConv") : "Conv"
        case .gemm: return "Gemm"
        case .add: return "Add"
        case .maxPool: return "MaxPool"
        case .averagePool: return "AveragePool"
        case .globalAveragePool: return "GlobalAveragePool"
        case .concat: return "Concat"
        case .reshape: return "Reshape"
        case .lookup(let l): return l.function
        case .mul: return "Mul"
        case .sliceChannels: return "SliceChannels"
        case .permuteChannels: return "ChannelShuffle"
        case .upsampleNearest: return "UpsampleNearest"
        case .insertZeros: return "InsertZeros"
        case .resizeLinear: return "ResizeLinear"
        case .channelNorm: return "LayerNorm"
        case .float(let f): return "fp32 " + f.name
        }
    }
}
