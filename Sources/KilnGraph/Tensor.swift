/// A dense row-major float32 tensor: the value type of constants in the IR and of the fp32 interpreter.
public struct Tensor: Hashable, Sendable {
    /// Sizes of the dimensions, outermost first (NCHW for images).
    public var shape: [Int]
    /// The elements in row-major order; `scalars.count == shape.elementCount`.
    public var scalars: [Float]

    /// Creates a tensor; the element count must match the shape.
    public init(shape: [Int], scalars: [Float]) {
        precondition(shape.allSatisfy { $0 >= 0 }, "negative dimension in \(shape)")
        precondition(shape.elementCount == scalars.count,
                     "shape \(shape) needs \(shape.elementCount) elements, got \(scalars.count)")
        self.shape = shape
        self.scalars = scalars
    }

    /// A tensor of the given shape filled with one value.
    public init(shape: [Int], repeating value: Float = 0) {
        self.init(shape: shape, scalars: [Float](repeating: value, count: shape.elementCount))
    }

    /// A rank-0 tensor holding one value.
    public init(scalar: Float) {
        self.init(shape: [], scalars: [scalar])
    }

    /// Number of dimensions.
    public var rank: Int { shape.count }

    /// Number of elements.
    public var count: Int { scalars.count }

    /// The same elements under another shape with the same element count.
    public func reshaped(to newShape: [Int]) -> Tensor {
        Tensor(shape: newShape, scalars: scalars)
    }
}

/// A dense row-major int64 tensor: shape arithmetic and index lists that are folded at import.
public struct IntTensor: Hashable, Sendable {
    /// Sizes of the dimensions, outermost first.
    public var shape: [Int]
    /// The elements in row-major order.
    public var values: [Int64]

    /// Creates a tensor; the element count must match the shape.
    public init(shape: [Int], values: [Int64]) {
        precondition(shape.elementCount == values.count,
                     "shape \(shape) needs \(shape.elementCount) elements, got \(values.count)")
        self.shape = shape
        self.values = values
    }
}

/// The dimension size that stands for the batch size N, which is fixed only when a graph runs.
public let batchDimension = -1

extension Array where Element == Int {
    /// Product of the dimensions (1 for a scalar); meaningless if a dimension is `batchDimension`.
    public var elementCount: Int { reduce(1, *) }

    /// Row-major strides of a tensor of this shape.
    public var strides: [Int] {
        var result = [Int](repeating: 1, count: count)
        var stride = 1
        for axis in indices.reversed() {
            result[axis] = stride
            stride *= self[axis]
        }
        return result
    }

    /// Whether the shape holds the symbolic batch dimension.
    public var hasBatchDimension: Bool { contains(batchDimension) }

    /// The shape with the batch dimension replaced by a concrete size.
    public func substitutingBatch(_ n: Int) -> [Int] { map { $0 == batchDimension ? n : $0 } }

    /// Human-readable form, `N` for the batch dimension: `[N, 1, 28, 28]`.
    public var shapeDescription: String {
        "[" + map { $0 == batchDimension ? "N" : String($0) }.joined(separator: ", ") + "]"
    }
}
