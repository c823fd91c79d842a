extension Op {
    /// The output shape for inputs of the given shapes; throws a `ShapeError` if they do not fit the op.
    ///
    /// Works for static shapes (with `batchDimension`) and for concrete shapes at run time alike.
    public func outputShape(inputShapes s: [[Int]]) throws -> [Int] {
        func need(_ count: ClosedRange<Int>) throws {
            guard count.contains(s.count) else {
                throw ShapeError("expects \(count.lowerBound == count.upperBound ? "\(count.lowerBound)" : "\(count.lowerBound)–\(count.upperBound)") inputs, got \(s.count)")
            }
        }
        func needImage(_ shape: [Int]) throws {
            guard shape.count == 4 else {
                throw ShapeError("expects a 4-D input [N, C, H, W], got \(shape.shapeDescription)")
            }
        }
        switch self {
        case .conv(let a):
            try need(2...3)
            let x = s[0], w = s[1]
            try needImage(x)
            guard w.count == 4, !w.hasBatchDimension else {
                throw ShapeError("weight must be 4-D [M, C/group, kH, kW], got \(w.shapeDescription)")
            }
            guard a.group >= 1, x[1] == w[1] * a.group, w[0] % a.group == 0 else {
                throw ShapeError("input has \(x[1]) channels but weight \(w.shapeDescription) with group \(a.group) expects \(w[1] * a.group)")
            }
            if s.count == 3 && s[2] != [w[0]] {
                throw ShapeError("bias must be [\(w[0])], got \(s[2].shapeDescription)")
            }
            let h = try Op.windowOutput(x[2], kernel: w[2], stride: a.strides[0], padBegin: a.pads[0],
                                        padEnd: a.pads[2], dilation: a.dilations[0], ceil: false)
            let wd = try Op.windowOutput(x[3], kernel: w[3], stride: a.strides[1], padBegin: a.pads[1],
                                         padEnd: a.pads[3], dilation: a.dilations[1], ceil: false)
            return [x[0], w[0], h, wd]
        case .batchNorm:
            try need(5...5)
            guard s[0].count >= 2 else { throw ShapeError("input needs a channel dimension, got \(s[0].shapeDescription)") }
            for p in 1..<5 where s[p] != [s[0][1]] {
                throw ShapeError("parameter \(p) must be [\(s[0][1])], got \(s[p].shapeDescription)")
            }
            return s[0]
        case .activation:
            try need(1...1)
            return s[0]
        case .binary:
            try need(2...2)
            guard let shape = TensorLayout.broadcastShape(s[0], s[1]) else {
                throw ShapeError("shapes \(s[0].shapeDescription) and \(s[1].shapeDescription) do not broadcast")
            }
            return shape
        case .maxPool(let a), .averagePool(let a):
            try need(1...1)
            try needImage(s[0])
            let h = try Op.windowOutput(s[0][2], kernel: a.kernel[0], stride: a.strides[0], padBegin: a.pads[0],
                                        padEnd: a.pads[2], dilation: a.dilations[0], ceil: a.ceilMode)
            let w = try Op.windowOutput(s[0][3], kernel: a.kernel[1], stride: a.strides[1], padBegin: a.pads[1],
                                        padEnd: a.pads[3], dilation: a.dilations[1], ceil: a.ceilMode)
            return [s[0][0], s[0][1], h, w]
        case .globalAveragePool:
            try need(1...1)
            try needImage(s[0])
            return [s[0][0], s[0][1], 1, 1]
        case .reduceMean(let axes, let keepDims):
            try need(1...1)
            guard axes.allSatisfy({ $0 >= 0 && $0 < s[0].count }) else {
                throw ShapeError("axes \(axes) out of range for rank \(s[0].count)")
            }
            if keepDims { return s[0].enumerated().map { axes.contains($0.offset) ? 1 : $0.element } }
            return s[0].enumerated().filter { !axes.contains($0.offset) }.map(\.element)
        case .reshape(let shape):
            try need(1...1)
            if !Op.sameElementCount(s[0], shape) {
                throw ShapeError("cannot reshape \(s[0].shapeDescription) to \(shape.shapeDescription)")
            }
            return shape
        case .transpose(let perm):
            try need(1...1)
            guard perm.sorted() == Array(0..<s[0].count) else {
                throw ShapeError("perm \(perm) is not a permutation of the \(s[0].count) dimensions")
            }
            return perm.map { s[0][$0] }
        case .concat(let axis):
            try need(1...Int.max)
            guard axis >= 0, axis < s[0].count else { throw ShapeError("axis \(axis) out of range") }
            var result = s[0]
            for other in s.dropFirst() {
                guard other.count == result.count,
                      other.indices.allSatisfy({ $0 == axis || other[$0] == result[$0] }) else {
                    throw ShapeError("cannot concatenate \(s[0].shapeDescription) and \(other.shapeDescription) on axis \(axis)")
                }
                guard result[axis] != batchDimension, other[axis] != batchDimension else {
                    throw ShapeError("cannot concatenate along the batch dimension")
                }
                result[axis] += other[axis]
            }
            return result
        case .matMul:
            try need(2...2)
            let a = s[0], b = s[1]
            guard a.count >= 2, b.count >= 2, a[a.count - 1] == b[b.count - 2] else {
                throw ShapeError("cannot multiply \(a.shapeDescription) by \(b.shapeDescription)")
            }
            guard let batch = TensorLayout.broadcastShape(Array(a.dropLast(2)), Array(b.dropLast(2))) else {
                throw ShapeError("leading dimensions of \(a.shapeDescription) and \(b.shapeDescription) do not broadcast")
            }
            return batch + [a[a.count - 2], b[b.count - 1]]
        case .softmax(let axis):
            try need(1...1)
            guard axis >= 0, axis < s[0].count else { throw ShapeError("axis \(axis) out of range") }
            return s[0]
        case .pad(let a):
            try need(1...1)
            let rank = s[0].count
            guard a.pads.count == 2 * rank else { throw ShapeError("needs \(2 * rank) pad amounts, got \(a.pads.count)") }
            return try s[0].indices.map { axis in
                let d = s[0][axis]
                if d == batchDimension {
                    guard a.pads[axis] == 0, a.pads[axis + rank] == 0 else {
                        throw ShapeError("cannot pad the batch dimension")
                    }
                    return d
                }
                let size = d + a.pads[axis] + a.pads[axis + rank]
                guard size >= 0 else { throw ShapeError("pads \(a.pads) crop dimension \(axis) below zero") }
                if a.mode == .reflect && (a.pads[axis] >= d || a.pads[axis + rank] >= d) && d > 0 {
                    throw ShapeError("reflect padding of \(max(a.pads[axis], a.pads[axis + rank])) needs more than that many elements, dimension \(axis) has \(d)")
                }
                return size
            }
        case .slice(let a):
            try need(1...1)
            guard a.starts.count == s[0].count, a.counts.count == s[0].count, a.steps.count == s[0].count else {
                throw ShapeError("slice needs one start, count and step per dimension")
            }
            for axis in s[0].indices where s[0][axis] != batchDimension {
                let last = a.starts[axis] + (a.counts[axis] - 1) * a.steps[axis]
                guard a.counts[axis] == 0 || (a.starts[axis] >= 0 && a.starts[axis] < s[0][axis] && last >= 0 && last < s[0][axis]) else {
                    throw ShapeError("slice of dimension \(axis) reads outside 0..<\(s[0][axis])")
                }
            }
            return s[0].indices.map { s[0][$0] == batchDimension && a.counts[$0] == batchDimension ? batchDimension : a.counts[$0] }
        case .gather(let axis, let indices):
            try need(1...1)
            guard axis >= 0, axis < s[0].count, s[0][axis] != batchDimension else {
                throw ShapeError("cannot gather along axis \(axis) of \(s[0].shapeDescription)")
            }
            guard indices.values.allSatisfy({ $0 >= 0 && $0 < Int64(s[0][axis]) }) else {
                throw ShapeError("gather index out of range 0..<\(s[0][axis])")
            }
            return Array(s[0][..<axis]) + indices.shape + Array(s[0][(axis + 1)...])
        case .upsampleNearest(let sh, let sw):
            try need(1...1)
            try needImage(s[0])
            guard sh >= 1, sw >= 1 else { throw ShapeError("scales must be positive") }
            return [s[0][0], s[0][1], s[0][2] * sh, s[0][3] * sw]
        case .resizeLinear(let height, let width, _):
            try need(1...1)
            try needImage(s[0])
            guard height >= 1, width >= 1 else { throw ShapeError("resize to \(height)×\(width)") }
            return [s[0][0], s[0][1], height, width]
        case .insertZeros(let sh, let sw):
            try need(1...1)
            try needImage(s[0])
            guard sh >= 1, sw >= 1 else { throw ShapeError("strides must be positive") }
            return [s[0][0], s[0][1], (s[0][2] - 1) * sh + 1, (s[0][3] - 1) * sw + 1]
        }
    }

    /// Output length of a sliding window (conv, pooling) along one dimension.
    public static func windowOutput(_ size: Int, kernel: Int, stride: Int, padBegin: Int, padEnd: Int,
                                    dilation: Int, ceil: Bool) throws -> Int {
        guard kernel >= 1, stride >= 1, dilation >= 1, padBegin >= 0, padEnd >= 0 else {
            throw ShapeError("kernel, stride and dilation must be positive and pads non-negative")
        }
        let span = dilation * (kernel - 1) + 1
        let padded = size + padBegin + padEnd
        guard padded >= span else {
            throw ShapeError("window of \(span) does not fit in \(size) (+\(padBegin + padEnd) padding)")
        }
        var out = (padded - span) / stride + 1
        if ceil && (padded - span) % stride != 0 {
            out += 1
            // The last window must start inside the input or its leading padding.
            if (out - 1) * stride >= size + padBegin { out -= 1 }
        }
        return out
    }

    /// Whether two shapes (possibly with the batch dimension) hold the same number of elements for every N.
    static func sameElementCount(_ a: [Int], _ b: [Int]) -> Bool {
        let batchA = a.filter { $0 == batchDimension }.count
        let batchB = b.filter { $0 == batchDimension }.count
        guard batchA == batchB else { return false }
        return a.filter { $0 != batchDimension }.elementCount == b.filter { $0 != batchDimension }.elementCount
    }
}
