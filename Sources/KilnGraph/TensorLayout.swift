/// Element-type-generic layout operations (broadcasting, transpose, slice, concat, gather) on row-major arrays.
///
/// The importer folds int64 shape arithmetic with them and the fp32 interpreter moves float data with them, so each
/// layout rule is written once.
public enum TensorLayout {
    /// NumPy-style broadcast of two shapes, or nil if they are incompatible. The batch dimension only matches
    /// itself or 1.
    public static func broadcastShape(_ a: [Int], _ b: [Int]) -> [Int]? {
        let rank = Swift.max(a.count, b.count)
        var result = [Int](repeating: 1, count: rank)
        for i in 0..<rank {
            let da = i < rank - a.count ? 1 : a[i - (rank - a.count)]
            let db = i < rank - b.count ? 1 : b[i - (rank - b.count)]
            if da == db || db == 1 {
                result[i] = da
            } else if da == 1 {
                result[i] = db
            } else {
                return nil
            }
        }
        return result
    }

    /// Strides that read a tensor of `shape` as if it had `outputShape` (0 on broadcast dimensions).
    public static func broadcastStrides(from shape: [Int], to outputShape: [Int]) -> [Int] {
        let own = shape.strides
        let offset = outputShape.count - shape.count
        return (0..<outputShape.count).map { axis in
            let source = axis - offset
            if source < 0 || shape[source] == 1 && outputShape[axis] != 1 { return 0 }
            return own[source]
        }
    }

    /// Calls `body(outputOffset, sourceOffsets)` for every element of an output of `shape`, where each source offset
    /// is `base + Σ index[d] * strides[d]`; the innermost dimension is walked in a tight loop.
    @inlinable
    public static func walk(shape: [Int], sources: [(base: Int, strides: [Int])],
                            _ body: (_ output: Int, _ sources: UnsafeMutableBufferPointer<Int>) -> Void) {
        let total = shape.elementCount
        if total == 0 { return }
        let rank = shape.count
        var index = [Int](repeating: 0, count: rank)
        var offsets = sources.map(\.base)
        offsets.withUnsafeMutableBufferPointer { current in
            if rank == 0 {
                body(0, current)
                return
            }
            let inner = shape[rank - 1]
            var output = 0
            while output < total {
                for _ in 0..<inner {
                    body(output, current)
                    output += 1
                    for s in 0..<sources.count { current[s] += sources[s].strides[rank - 1] }
                }
                for s in 0..<sources.count { current[s] -= inner * sources[s].strides[rank - 1] }
                // Odometer step over the outer dimensions.
                var axis = rank - 2
                while axis >= 0 {
                    index[axis] += 1
                    for s in 0..<sources.count { current[s] += sources[s].strides[axis] }
                    if index[axis] < shape[axis] { break }
                    for s in 0..<sources.count { current[s] -= index[axis] * sources[s].strides[axis] }
                    index[axis] = 0
                    axis -= 1
                }
            }
        }
    }

    /// Elements of `source` read through an arbitrary strided view of the given output shape. Inlinable, so that
    /// callers get it specialized for their element type; the odometer steps once per output row.
    @inlinable
    public static func gatherStrided<T>(_ source: [T], outputShape: [Int], base: Int, strides: [Int]) -> [T] {
        let total = outputShape.elementCount
        if total == 0 { return [] }
        guard let width = outputShape.last, let step = strides.last else { return [source[base]] }
        var rows = outputShape
        rows[rows.count - 1] = 1
        return [T](unsafeUninitializedCapacity: total) { buffer, initialized in
            source.withUnsafeBufferPointer { input in
                walk(shape: rows, sources: [(base, strides)]) { row, offsets in
                    let out = buffer.baseAddress! + row * width
                    var at = offsets[0]
                    for i in 0..<width {
                        (out + i).initialize(to: input[at])
                        at += step
                    }
                }
            }
            initialized = total
        }
    }

    /// Elementwise `combine(a, b)` with broadcasting; the shapes must be compatible.
    public static func broadcastBinary<T, R>(_ a: [T], _ aShape: [Int], _ b: [T], _ bShape: [Int],
                                             _ combine: (T, T) -> R) -> (values: [R], shape: [Int]) {
        guard let shape = broadcastShape(aShape, bShape) else {
            preconditionFailure("shapes \(aShape) and \(bShape) do not broadcast")
        }
        let total = shape.elementCount
        if total == 0 { return ([], shape) }
        let sa = broadcastStrides(from: aShape, to: shape)
        let sb = broadcastStrides(from: bShape, to: shape)
        let values = [R](unsafeUninitializedCapacity: total) { buffer, initialized in
            a.withUnsafeBufferPointer { pa in
                b.withUnsafeBufferPointer { pb in
                    walk(shape: shape, sources: [(0, sa), (0, sb)]) { output, offsets in
                        (buffer.baseAddress! + output).initialize(to: combine(pa[offsets[0]], pb[offsets[1]]))
                    }
                }
            }
            initialized = total
        }
        return (values, shape)
    }

    /// `source` repeated to fill a broadcast-compatible larger shape.
    public static func expand<T>(_ source: [T], from shape: [Int], to outputShape: [Int]) -> [T] {
        gatherStrided(source, outputShape: outputShape, base: 0,
                      strides: broadcastStrides(from: shape, to: outputShape))
    }

    /// Dimensions permuted: output dimension i is input dimension `perm[i]`. Inlinable like `gatherStrided`.
    @inlinable
    public static func transpose<T>(_ source: [T], shape: [Int], perm: [Int]) -> (values: [T], shape: [Int]) {
        let inStrides = shape.strides
        let outShape = perm.map { shape[$0] }
        return (gatherStrided(source, outputShape: outShape, base: 0, strides: perm.map { inStrides[$0] }), outShape)
    }

    /// A strided slice; `starts`, `counts` and `steps` give, per axis, the first index, how many and the step.
    /// Inlinable like `gatherStrided`.
    @inlinable
    public static func slice<T>(_ source: [T], shape: [Int], starts: [Int], counts: [Int],
                                steps: [Int]) -> [T] {
        let inStrides = shape.strides
        var base = 0
        for axis in shape.indices { base += starts[axis] * inStrides[axis] }
        let strides = shape.indices.map { inStrides[$0] * steps[$0] }
        return gatherStrided(source, outputShape: counts, base: base, strides: strides)
    }

    /// Tensors joined along `axis`; all other dimensions must agree.
    public static func concat<T>(_ parts: [(values: [T], shape: [Int])], axis: Int) -> (values: [T], shape: [Int]) {
        var outShape = parts[0].shape
        outShape[axis] = parts.reduce(0) { $0 + $1.shape[axis] }
        let outer = outShape[..<axis].reduce(1, *)
        let inner = outShape[(axis + 1)...].reduce(1, *)
        var values = [T]()
        values.reserveCapacity(outShape.elementCount)
        for o in 0..<outer {
            for part in parts {
                let block = part.shape[axis] * inner
                values.append(contentsOf: part.values[(o * block)..<((o + 1) * block)])
            }
        }
        return (values, outShape)
    }

    /// Elements picked along `axis` by `indices` (already made non-negative): output shape is
    /// `shape[..<axis] + indicesShape + shape[(axis+1)...]`.
    public static func gather<T>(_ source: [T], shape: [Int], axis: Int, indices: [Int],
                                 indicesShape: [Int]) -> (values: [T], shape: [Int]) {
        let outer = shape[..<axis].reduce(1, *)
        let inner = shape[(axis + 1)...].reduce(1, *)
        let axisSize = shape[axis]
        var values = [T]()
        values.reserveCapacity(outer * indices.count * inner)
        for o in 0..<outer {
            for index in indices {
                let start = (o * axisSize + index) * inner
                values.append(contentsOf: source[start..<(start + inner)])
            }
        }
        return (values, Array(shape[..<axis]) + indicesShape + Array(shape[(axis + 1)...]))
    }
}
