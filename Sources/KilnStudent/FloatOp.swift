/// A pointwise function an fp32 island applies (the teacher's activation, evaluated in fp32 by the runtime). It
/// mirrors KilnGraph's `Activation` case for case: the student format is a leaf module and cannot import the IR;
/// the lowering maps one to the other, and FloatIslandTests check the runtime's definitions against the interpreter.
public enum FloatFunction: Hashable, Sendable {
    case relu
    case clip(min: Float, max: Float)
    case leakyRelu(alpha: Float)
    case sigmoid
    case hardSigmoid(alpha: Float, beta: Float)
    case hardSwish
    case tanh
    case silu
    case gelu
    case elu(alpha: Float)
    case softplus
    case erf
    case squareRoot
}

/// Broadcasting arithmetic of an fp32 island.
public enum FloatArithmetic: UInt8, Hashable, Sendable, CaseIterable {
    case add = 1, sub, mul, div
}

/// An fp32 constant operand of an island op, in logical (NCHW) order. It has no batch dimension of its own: it
/// broadcasts against the tensor from the right, as NumPy does.
public struct FloatConstant: Hashable, Sendable {
    /// Its shape (rank ≤ the tensor's; a leading 1 where it has the tensor's rank).
    public var shape: [Int]
    /// Its values, row-major.
    public var values: [Float]

    /// Creates a constant.
    public init(shape: [Int], values: [Float]) {
        self.shape = shape
        self.values = values
    }
}

/// One op of an fp32 island: the fallback for graph nodes that have no int8 kernel (LayerNorm's statistics, a
/// Transpose of an activation, a MatMul of two activations, …). Its inputs and output are float32 activations in
/// logical order; the lowering puts a dequantize before an island and a quantize after it, so every graph that
/// imports can still become a student. Shapes come from the layer's activations (the output's records the result).
public enum FloatOp: Hashable, Sendable {
    /// A pointwise function.
    case unary(FloatFunction)
    /// a ∘ b with NumPy broadcasting. b is the second input, or `constant` (as the first operand when
    /// `constantFirst`).
    case arithmetic(FloatArithmetic, constant: FloatConstant?, constantFirst: Bool)
    /// Mean over the given axes (≥ 1); the output keeps them as size 1 or drops them, as its shape says.
    case reduceMean(axes: [Int])
    /// Dimension permutation (the batch stays first: `permutation[0] == 0`).
    case transpose([Int])
    /// The same values under the output's shape.
    case reshape
    /// Matrix product with broadcasting of leading dimensions; b is the second input or `constant`.
    case matMul(constant: FloatConstant?)
    /// Softmax along an axis (≥ 1).
    case softmax(axis: Int)
    /// Inputs joined along an axis (≥ 1).
    case concat(axis: Int)
    /// Strided slice: per dimension the first index, the count and the step (the batch dimension whole).
    case slice(starts: [Int], counts: [Int], steps: [Int])
    /// Padding of every dimension ([begin…, end…]; the batch dimension unpadded); mode 0 constant, 1 reflect, 2 edge.
    case pad(pads: [Int], mode: UInt8, value: Float)
    /// Entries along an axis (≥ 1) picked by constant indices of the given shape.
    case gather(axis: Int, indices: [Int], indicesShape: [Int])
}

extension FloatOp {
    /// Short name for reports, e.g. `Transpose`.
    public var name: String {
        switch self {
        case .unary(let f): return f.name
        case .arithmetic(let a, _, _): return ["", "Add", "Sub", "Mul", "Div"][Int(a.rawValue)]
        case .reduceMean: return "ReduceMean"
        case .transpose: return "Transpose"
        case .reshape: return "Reshape"
        case .matMul: return "MatMul"
        case .softmax: return "Softmax"
        case .concat: return "Concat"
        case .slice: return "Slice"
        case .pad: return "Pad"
        case .gather: return "Gather"
        }
    }

    /// The number of tensor inputs the op reads.
    var inputCount: ClosedRange<Int> {
        switch self {
        case .arithmetic(_, let constant, _), .matMul(let constant): return constant == nil ? 2...2 : 1...1
        case .concat: return 1...1024
        default: return 1...1
        }
    }

    /// Output shape for inputs of the given logical shapes (first dimension the batch, symbolic or concrete);
    /// `recorded` is the shape the student records (the result of a reshape, the kept axes of a mean).
    public func outputShape(inputShapes s: [[Int]], recorded: [Int]) throws -> [Int] {
        guard inputCount.contains(s.count), s.allSatisfy({ !$0.isEmpty }) else {
            throw KilnFormatError("fp32 \(name) takes \(inputCount) input(s), got \(s.count)")
        }
        let x = s[0]
        func axis(_ a: Int) throws {
            guard a >= 1, a < x.count else { throw KilnFormatError("fp32 \(name): axis \(a) outside 1..<\(x.count)") }
        }
        switch self {
        case .unary: return x
        case .arithmetic(_, let constant, _):
            if let constant {
                try constant.check()
                guard constant.shape.count < x.count || (constant.shape.count == x.count && constant.shape[0] == 1) else {
                    throw KilnFormatError("fp32 \(name): constant \(constant.shape) would broadcast across the batch")
                }
                return try broadcastShape(x, constant.shape)
            }
            return try broadcastShape(x, s[1])
        case .reduceMean(let axes):
            guard !axes.isEmpty, Set(axes).count == axes.count else { throw KilnFormatError("fp32 ReduceMean: bad axes \(axes)") }
            for a in axes { try axis(a) }
            let kept = x.indices.map { axes.contains($0) ? 1 : x[$0] }
            let dropped = x.indices.filter { !axes.contains($0) }.map { x[$0] }
            guard recorded == kept || recorded == dropped else {
                throw KilnFormatError("fp32 ReduceMean over \(axes) of \(x) cannot give \(recorded)")
            }
            return recorded
        case .transpose(let permutation):
            guard permutation.count == x.count, permutation.first == 0, Set(permutation) == Set(0..<x.count) else {
                throw KilnFormatError("fp32 Transpose: \(permutation) is not a permutation of \(x.count) axes keeping the batch first")
            }
            return permutation.map { x[$0] }
        case .reshape:
            guard recorded.first == x.first, recorded.dropFirst().allSatisfy({ $0 >= 1 }),
                  recorded.dropFirst().reduce(1, *) == x.dropFirst().reduce(1, *) else {
                throw KilnFormatError("fp32 Reshape cannot turn \(x) into \(recorded)")
            }
            return recorded
        case .matMul(let constant):
            let b: [Int]
            if let constant {
                try constant.check()
                b = constant.shape
            } else {
                b = s[1]
            }
            guard x.count >= 2, b.count >= 2, x[x.count - 1] == b[b.count - 2] else {
                throw KilnFormatError("fp32 MatMul cannot multiply \(x) by \(b)")
            }
            if constant != nil, b.count >= x.count, b[0] != 1 {
                throw KilnFormatError("fp32 MatMul: constant \(b) would broadcast across the batch")
            }
            let batch = try broadcastShape(Array(x.dropLast(2)), Array(b.dropLast(2)))
            return batch + [x[x.count - 2], b[b.count - 1]]
        case .softmax(let a):
            try axis(a)
            return x
        case .concat(let a):
            return try concatenatedShape(s, axis: a)
        case .slice(let starts, let counts, let steps):
            guard starts.count == x.count, counts.count == x.count, steps.count == x.count, starts[0] == 0, steps[0] == 1,
                  counts[0] == x[0] || counts[0] == runtimeBatchDimension else {
                throw KilnFormatError("fp32 Slice needs one start, count and step per dimension and the whole batch")
            }
            for d in 1..<x.count {
                let last = starts[d] + (counts[d] - 1) * steps[d]
                guard counts[d] >= 1, steps[d] != 0, (0..<x[d]).contains(starts[d]), (0..<x[d]).contains(last) else {
                    throw KilnFormatError("fp32 Slice: dimension \(d) (size \(x[d])) start \(starts[d]) count \(counts[d]) step \(steps[d]) runs outside it")
                }
            }
            return [x[0]] + counts.dropFirst()
        case .pad(let pads, let mode, _):
            guard pads.count == 2 * x.count, pads[0] == 0, pads[x.count] == 0, mode <= 2 else {
                throw KilnFormatError("fp32 Pad needs [begin…, end…] for \(x.count) dimensions, none on the batch, and mode 0…2")
            }
            return try x.indices.map { d in
                if d == 0 { return x[0] }
                let (begin, end) = (pads[d], pads[x.count + d])
                guard x[d] + begin + end >= 1, abs(begin) < 1 << 16, abs(end) < 1 << 16 else {
                    throw KilnFormatError("fp32 Pad: dimension \(d) (size \(x[d])) padded by \(begin), \(end) has no elements")
                }
                guard mode != 1 || (begin < x[d] && end < x[d]) else {
                    throw KilnFormatError("fp32 Pad: reflect padding must be smaller than dimension \(d) (\(x[d]))")
                }
                return x[d] + begin + end
            }
        case .gather(let a, let indices, let indicesShape):
            try axis(a)
            guard indicesShape.allSatisfy({ $0 >= 1 }), indices.count == indicesShape.reduce(1, *),
                  indices.allSatisfy({ (0..<x[a]).contains($0) }) else {
                throw KilnFormatError("fp32 Gather: indices outside 0..<\(x[a]) or not of shape \(indicesShape)")
            }
            return Array(x[..<a]) + indicesShape + Array(x[(a + 1)...])
        }
    }
}

extension FloatConstant {
    func check() throws {
        guard shape.allSatisfy({ $0 >= 1 && $0 <= 1 << 24 }), values.count == shape.reduce(1, *) else {
            throw KilnFormatError("fp32 constant of shape \(shape) holds \(values.count) values")
        }
    }
}

/// The shape of `shapes` joined along `axis` (≥ 1; the other dimensions must agree).
func concatenatedShape(_ shapes: [[Int]], axis: Int) throws -> [Int] {
    guard let first = shapes.first, axis >= 1, axis < first.count else { throw KilnFormatError("bad concat axis \(axis)") }
    var result = first
    for other in shapes.dropFirst() {
        guard other.count == first.count, other.indices.allSatisfy({ $0 == axis || other[$0] == first[$0] }) else {
            throw KilnFormatError("cannot concatenate \(first) and \(other) on axis \(axis)")
        }
        result[axis] += other[axis]
    }
    return result
}

/// NumPy broadcasting of two shapes aligned from the right (the batch marker, −1, broadcasts only with itself or 1).
public func broadcastShape(_ a: [Int], _ b: [Int]) throws -> [Int] {
    let rank = max(a.count, b.count)
    return try (0..<rank).map { i in
        let x = i < rank - a.count ? 1 : a[i - (rank - a.count)]
        let y = i < rank - b.count ? 1 : b[i - (rank - b.count)]
        if x == y || y == 1 { return x }
        if x == 1 { return y }
        throw KilnFormatError("shapes \(a) and \(b) do not broadcast")
    }
}

extension FloatFunction {
    /// Name for reports.
    public var name: String {
        switch self {
        case .relu: return "Relu"
        case .clip: return "Clip"
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
    }

    /// Wire tag and parameters of the function (for the `.kiln` file).
    var encoded: (tag: UInt8, parameters: [Float]) {
        switch self {
        case .relu: return (1, [])
        case .clip(let lo, let hi): return (2, [lo, hi])
        case .leakyRelu(let alpha): return (3, [alpha])
        case .sigmoid: return (4, [])
        case .hardSigmoid(let alpha, let beta): return (5, [alpha, beta])
        case .hardSwish: return (6, [])
        case .tanh: return (7, [])
        case .silu: return (8, [])
        case .gelu: return (9, [])
        case .elu(let alpha): return (10, [alpha])
        case .softplus: return (11, [])
        case .erf: return (12, [])
        case .squareRoot: return (13, [])
        }
    }

    /// The function a wire tag and its parameters name, nil for an unknown tag or a wrong parameter count.
    init?(tag: UInt8, parameters p: [Float]) {
        let counts: [UInt8: Int] = [2: 2, 3: 1, 5: 2, 10: 1]
        guard (1...13).contains(tag), p.count == counts[tag, default: 0] else { return nil }
        switch tag {
        case 1: self = .relu
        case 2: self = .clip(min: p[0], max: p[1])
        case 3: self = .leakyRelu(alpha: p[0])
        case 4: self = .sigmoid
        case 5: self = .hardSigmoid(alpha: p[0], beta: p[1])
        case 6: self = .hardSwish
        case 7: self = .tanh
        case 8: self = .silu
        case 9: self = .gelu
        case 10: self = .elu(alpha: p[0])
        case 11: self = .softplus
        case 12: self = .erf
        default: self = .squareRoot
        }
    }
}
