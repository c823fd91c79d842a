/// The closed set of IR operations. Importers rewrite every foreign op into these; every later stage (interpreter,
/// autodiff, quantizer) handles exactly this set.
public enum Op: Hashable, Sendable {
    /// 2-D convolution. Inputs: x [N, C, H, W], weight [M, C/group, kH, kW], optional bias [M].
    case conv(ConvAttributes)
    /// Inference batch normalization with running statistics. Inputs: x, scale, bias, mean, variance (each [C]).
    case batchNorm(epsilon: Float)
    /// A pointwise activation of one input.
    case activation(Activation)
    /// A broadcasting elementwise arithmetic op of two inputs.
    case binary(BinaryOp)
    /// 2-D max pooling of x [N, C, H, W].
    case maxPool(PoolAttributes)
    /// 2-D average pooling of x [N, C, H, W].
    case averagePool(PoolAttributes)
    /// Mean over H and W of x [N, C, H, W], keeping them as size 1.
    case globalAveragePool
    /// Mean over the given (non-negative) axes.
    case reduceMean(axes: [Int], keepDims: Bool)
    /// Same elements under a new static shape (may hold `batchDimension`).
    case reshape(shape: [Int])
    /// Dimension permutation: output dimension i is input dimension `perm[i]`.
    case transpose(perm: [Int])
    /// Inputs joined along a (non-negative) axis.
    case concat(axis: Int)
    /// Matrix product with NumPy broadcasting of leading dimensions. Inputs: a [..., M, K], b [..., K, N].
    case matMul
    /// Softmax along a (non-negative) axis.
    case softmax(axis: Int)
    /// Padding of every dimension.
    case pad(PadAttributes)
    /// Strided slice of every dimension.
    case slice(SliceAttributes)
    /// Entries along a (non-negative) axis picked by constant, non-negative indices.
    case gather(axis: Int, indices: IntTensor)
    /// Nearest-neighbour upsampling of x [N, C, H, W] by integer factors.
    case upsampleNearest(scaleH: Int, scaleW: Int)
    /// x [N, C, H, W] spread to [N, C, (H−1)·sh + 1, (W−1)·sw + 1] with zeros between its pixels: with a convolution
    /// after it, a transposed convolution (the importer writes ConvTranspose this way).
    case insertZeros(strideH: Int, strideW: Int)
    /// Bilinear resize of x [N, C, H, W] to [N, C, height, width], output coordinates mapped to input ones as ONNX's
    /// `coordinate_transformation_mode` says.
    case resizeLinear(height: Int, width: Int, coordinates: ResizeCoordinates)
}

/// How a resize maps output pixel coordinates to input ones (ONNX's coordinate_transformation_mode).
public enum ResizeCoordinates: String, Hashable, Sendable, CaseIterable {
    case halfPixel = "half_pixel", pytorchHalfPixel = "pytorch_half_pixel", alignCorners = "align_corners", asymmetric

    /// The two input cells output cell `index` interpolates along one axis and the weight of the second: the one
    /// definition the interpreter, its gradient and the student's resize tables use.
    public func linearTap(_ index: Int, input: Int, output: Int) -> (first: Int, second: Int, fraction: Float) {
        let scale = Float(output) / Float(input)
        var x: Float
        switch self {
        case .halfPixel: x = (Float(index) + 0.5) / scale - 0.5
        case .pytorchHalfPixel: x = output > 1 ? (Float(index) + 0.5) / scale - 0.5 : 0
        case .alignCorners: x = output > 1 ? Float(index) * Float(input - 1) / Float(output - 1) : 0
        case .asymmetric: x = Float(index) / scale
        }
        x = Swift.min(Swift.max(x, 0), Float(input - 1))
        let first = Int(x.rounded(.down))
        return (first, Swift.min(first + 1, input - 1), x - Float(first))
    }
}

/// Attributes of a 2-D convolution.
public struct ConvAttributes: Hashable, Sendable {
    /// Stride along H and W.
    public var strides: [Int]
    /// Zero padding as [top, left, bottom, right].
    public var pads: [Int]
    /// Dilation along H and W.
    public var dilations: [Int]
    /// Number of groups (C for depthwise).
    public var group: Int

    /// Creates convolution attributes.
    public init(strides: [Int] = [1, 1], pads: [Int] = [0, 0, 0, 0], dilations: [Int] = [1, 1], group: Int = 1) {
        self.strides = strides
        self.pads = pads
        self.dilations = dilations
        self.group = group
    }
}

/// Attributes of a 2-D pooling window.
public struct PoolAttributes: Hashable, Sendable {
    /// Window size along H and W.
    public var kernel: [Int]
    /// Stride along H and W.
    public var strides: [Int]
    /// Padding as [top, left, bottom, right]; padded cells never win a max and, unless `countIncludePad`, do not
    /// count in an average.
    public var pads: [Int]
    /// Dilation along H and W (max pooling).
    public var dilations: [Int]
    /// Output size rounds up instead of down.
    public var ceilMode: Bool
    /// Average pooling divides by the full window size, padding included.
    public var countIncludePad: Bool

    /// Creates pooling attributes.
    public init(kernel: [Int], strides: [Int] = [1, 1], pads: [Int] = [0, 0, 0, 0], dilations: [Int] = [1, 1],
                ceilMode: Bool = false, countIncludePad: Bool = false) {
        self.kernel = kernel
        self.strides = strides
        self.pads = pads
        self.dilations = dilations
        self.ceilMode = ceilMode
        self.countIncludePad = countIncludePad
    }
}

/// Attributes of a pad op.
public struct PadAttributes: Hashable, Sendable {
    /// How border cells are filled.
    public enum Mode: String, Hashable, Sendable {
        case constant, reflect, edge
    }

    /// Amounts as [begin of every axis..., end of every axis...]; negative values crop.
    public var pads: [Int]
    /// Fill rule.
    public var mode: Mode
    /// Fill value for `.constant`.
    public var value: Float

    /// Creates pad attributes.
    public init(pads: [Int], mode: Mode = .constant, value: Float = 0) {
        self.pads = pads
        self.mode = mode
        self.value = value
    }
}

/// Attributes of a slice op, normalized for the input shape: one entry per input dimension.
public struct SliceAttributes: Hashable, Sendable {
    /// First index per dimension.
    public var starts: [Int]
    /// Number of elements taken per dimension.
    public var counts: [Int]
    /// Step per dimension (non-zero, may be negative).
    public var steps: [Int]

    /// Creates slice attributes.
    public init(starts: [Int], counts: [Int], steps: [Int]) {
        self.starts = starts
        self.counts = counts
        self.steps = steps
    }
}

/// Pointwise activations.
public enum Activation: Hashable, Sendable {
    case relu
    /// Clamp to [min, max]; `clip(0, 6)` is ReLU6.
    case clip(min: Float, max: Float)
    case leakyRelu(alpha: Float)
    case sigmoid
    /// max(0, min(1, alpha * x + beta)).
    case hardSigmoid(alpha: Float, beta: Float)
    /// x * max(0, min(1, x / 6 + 1 / 2)).
    case hardSwish
    case tanh
    /// x · sigmoid(x) (Swish; PyTorch's SiLU, exported as Sigmoid and Mul).
    case silu
    /// x · Φ(x) = x/2 · (1 + erf(x/√2)), the exact GELU (exported as Erf and arithmetic, or Gelu from opset 20).
    case gelu
    /// x for x > 0, alpha · (e^x − 1) otherwise.
    case elu(alpha: Float)
    /// log(1 + e^x).
    case softplus
    /// The error function (GELU's exported form uses it).
    case erf
    /// The square root (LayerNormalization's decomposition uses it).
    case squareRoot

    /// ReLU6, the clamp of MobileNets.
    public static let relu6 = Activation.clip(min: 0, max: 6)

    /// The value of the activation at one point; the executable definition used by every kernel.
    @inlinable
    public func apply(_ x: Float) -> Float {
        switch self {
        case .relu: return x > 0 ? x : 0
        case .clip(let lo, let hi): return Swift.min(Swift.max(x, lo), hi)
        case .leakyRelu(let alpha): return x >= 0 ? x : alpha * x
        case .sigmoid: return 1 / (1 + exponential(-x))
        case .hardSigmoid(let alpha, let beta): return Swift.min(Swift.max(alpha * x + beta, 0), 1)
        case .hardSwish: return x * Swift.min(Swift.max(x / 6 + 0.5, 0), 1)
        case .tanh: return hyperbolicTangent(x)
        case .silu: return x / (1 + exponential(-x))
        case .gelu: return 0.5 * x * (1 + errorFunction(x * 0.70710678118654752))
        case .elu(let alpha): return x > 0 ? x : alpha * (exponential(x) - 1)
        case .softplus: return KilnGraph.softplus(x)
        case .erf: return errorFunction(x)
        case .squareRoot: return x.squareRoot()
        }
    }
}

/// Broadcasting binary arithmetic.
public enum BinaryOp: String, Hashable, Sendable, CaseIterable {
    case add, sub, mul, div

    /// The value at one point.
    @inlinable
    public func apply(_ a: Float, _ b: Float) -> Float {
        switch self {
        case .add: return a + b
        case .sub: return a - b
        case .mul: return a * b
        case .div: return a / b
        }
    }
}

extension Op {
    /// Short name for tables and messages, e.g. `Conv`, `Relu6`, `Add`.
    public var name: String {
        switch self {
        case .conv(let a): return a.group > 1 ? "Conv(group \(a.group))" : "Conv"
        case .batchNorm: return "BatchNorm"
        case .activation(let f):
            switch f {
            case .relu: return "Relu"
            case .clip(let lo, let hi): return lo == 0 && hi == 6 ? "Relu6" : "Clip"
            case .leakyRelu: return "LeakyRelu"
            case .sigmoid: return "Sigmoid"
            case .hardSigmoid: return "HardSigmoid"
            case .hardSwish: return "HardSwish"
            case .tanh: return "Tanh"
            case .silu: return "SiLU"
            case .gelu: return "Gelu"
            case .elu: return "Elu"
            case .softplus: return "Softplus"
            case .erf: return "Erf"
            case .squareRoot: return "Sqrt"
            }
        case .binary(let b): return b.rawValue.prefix(1).uppercased() + b.rawValue.dropFirst()
        case .maxPool: return "MaxPool"
        case .averagePool: return "AveragePool"
        case .globalAveragePool: return "GlobalAveragePool"
        case .reduceMean: return "ReduceMean"
        case .reshape: return "Reshape"
        case .transpose: return "Transpose"
        case .concat: return "Concat"
        case .matMul: return "MatMul"
        case .softmax: return "Softmax"
        case .pad: return "Pad"
        case .slice: return "Slice"
        case .gather: return "Gather"
        case .upsampleNearest: return "UpsampleNearest"
        case .insertZeros: return "InsertZeros"
        case .resizeLinear: return "ResizeLinear"
        }
    }

    /// Histogram key that ignores attributes: `Conv` for every convolution.
    public var kind: String {
        if case .conv = self { return "Conv" }
        return name
    }
}

extension Op {
    /// The op with `batchDimension` in its static shape attributes replaced by a concrete batch size.
    public func substitutingBatch(_ n: Int) -> Op {
        switch self {
        case .reshape(let shape): return .reshape(shape: shape.substitutingBatch(n))
        case .slice(var a):
            a.counts = a.counts.substitutingBatch(n)
            return .slice(a)
        default: return self
        }
    }
}
