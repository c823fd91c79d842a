import KilnStudent
#if canImport(Glibc)
import Glibc
#endif

/// The fp32 ops of islands (graph nodes without an int8 kernel), on logical-order float32 tensors with concrete
/// shapes. Portable Swift: islands are the fallback that keeps every importable graph deployable, not a hot path.
enum FloatIslandKernels {
    /// A float32 tensor in the arena or in a caller's buffer, with its concrete shape.
    struct Operand {
        var data: UnsafePointer<Float>
        var shape: [Int]
    }

    /// Runs `op` on `inputs`, writing the contiguous `output` of shape `outputShape`.
    static func run(_ op: FloatOp, _ inputs: [Operand], _ output: UnsafeMutablePointer<Float>, _ outputShape: [Int]) {
        let count = outputShape.reduce(1, *)
        switch op {
        case .unary(let f):
            let x = inputs[0].data
            for i in 0..<count { output[i] = f.apply(x[i]) }
        case .arithmetic(let a, let constant, let constantFirst):
            if let constant {
                constant.values.withUnsafeBufferPointer { c in
                    let k = Operand(data: c.baseAddress!, shape: constant.shape)
                    let (left, right) = constantFirst ? (k, inputs[0]) : (inputs[0], k)
                    arithmetic(a, left, right, output, outputShape)
                }
            } else {
                arithmetic(a, inputs[0], inputs[1], output, outputShape)
            }
        case .reduceMean(let axes):
            let x = inputs[0]
            var kept = x.shape
            for a in axes { kept[a] = 1 }
            let outStrides = broadcastStrides(contiguousStrides(kept), from: kept, to: x.shape)
            output.initialize(repeating: 0, count: count)
            forEachRow(x.shape, [contiguousStrides(x.shape), outStrides]) { offsets, n, steps in
                for j in 0..<n { output[offsets[1] + j * steps[1]] += x.data[offsets[0] + j] }
            }
            let divisor = Float(axes.reduce(1) { $0 * x.shape[$1] })
            for i in 0..<count { output[i] /= divisor }
        case .transpose(let permutation):
            let x = inputs[0], strides = contiguousStrides(x.shape)
            forEachRow(outputShape, [contiguousStrides(outputShape), permutation.map { strides[$0] }]) { offsets, n, steps in
                for j in 0..<n { output[offsets[0] + j] = x.data[offsets[1] + j * steps[1]] }
            }
        case .reshape:
            output.update(from: inputs[0].data, count: count)
        case .matMul(let constant):
            if let constant {
                constant.values.withUnsafeBufferPointer { c in
                    matMul(inputs[0], Operand(data: c.baseAddress!, shape: constant.shape), output, outputShape)
                }
            } else {
                matMul(inputs[0], inputs[1], output, outputShape)
            }
        case .softmax(let axis):
            let x = inputs[0].data, size = outputShape[axis]
            let outer = outputShape[..<axis].reduce(1, *), inner = outputShape[(axis + 1)...].reduce(1, *)
            for o in 0..<outer {
                for i in 0..<inner {
                    let base = o * size * inner + i
                    var largest = -Float.infinity
                    for k in 0..<size { largest = max(largest, x[base + k * inner]) }
                    var sum: Float = 0
                    for k in 0..<size {
                        let e = expf(x[base + k * inner] - largest)
                        output[base + k * inner] = e
                        sum += e
                    }
                    for k in 0..<size { output[base + k * inner] /= sum }
                }
            }
        case .concat(let axis):
            let outer = outputShape[..<axis].reduce(1, *), outBlock = outputShape[axis...].reduce(1, *)
            var start = 0
            for input in inputs {
                let block = input.shape[axis...].reduce(1, *)
                for o in 0..<outer { (output + o * outBlock + start).update(from: input.data + o * block, count: block) }
                start += block
            }
        case .slice(let starts, _, let steps):
            let x = inputs[0], strides = contiguousStrides(x.shape)
            let origin = zip(starts, strides).reduce(0) { $0 + $1.0 * $1.1 }
            forEachRow(outputShape, [contiguousStrides(outputShape), zip(strides, steps).map { $0 * $1 }]) { offsets, n, steps in
                for j in 0..<n { output[offsets[0] + j] = x.data[origin + offsets[1] + j * steps[1]] }
            }
        case .pad(let pads, let mode, let value):
            let x = inputs[0], rank = x.shape.count, strides = contiguousStrides(x.shape)
            var index = [Int](repeating: 0, count: rank)
            for i in 0..<count {
                var remainder = i, source = 0, inside = true
                for d in stride(from: rank - 1, through: 0, by: -1) {
                    index[d] = remainder % outputShape[d]
                    remainder /= outputShape[d]
                }
                for d in 0..<rank {
                    var s = index[d] - pads[d]
                    let size = x.shape[d]
                    if s < 0 || s >= size {
                        switch mode {
                        case 1: s = s < 0 ? -s : 2 * (size - 1) - s
                        case 2: s = min(max(s, 0), size - 1)
                        default: inside = false
                        }
                    }
                    source += s * strides[d]
                }
                output[i] = inside ? x.data[source] : value
            }
        case .gather(let axis, let indices, _):
            let x = inputs[0]
            let outer = x.shape[..<axis].reduce(1, *), inner = x.shape[(axis + 1)...].reduce(1, *), size = x.shape[axis]
            var position = 0
            for o in 0..<outer {
                for index in indices {
                    (output + position).update(from: x.data + (o * size + index) * inner, count: inner)
                    position += inner
                }
            }
        }
    }

    /// Elementwise a ∘ b with NumPy broadcasting into the contiguous output.
    static func arithmetic(_ op: FloatArithmetic, _ a: Operand, _ b: Operand, _ output: UnsafeMutablePointer<Float>, _ shape: [Int]) {
        let sa = broadcastStrides(contiguousStrides(a.shape), from: a.shape, to: shape)
        let sb = broadcastStrides(contiguousStrides(b.shape), from: b.shape, to: shape)
        forEachRow(shape, [contiguousStrides(shape), sa, sb]) { offsets, n, steps in
            let (y, x, z) = (output + offsets[0], a.data + offsets[1], b.data + offsets[2])
            let (dx, dz) = (steps[1], steps[2])
            switch op {
            case .add: for j in 0..<n { y[j] = x[j * dx] + z[j * dz] }
            case .sub: for j in 0..<n { y[j] = x[j * dx] - z[j * dz] }
            case .mul: for j in 0..<n { y[j] = x[j * dx] * z[j * dz] }
            case .div: for j in 0..<n { y[j] = x[j * dx] / z[j * dz] }
            }
        }
    }

    /// Batched matrix product [..., M, K] × [..., K, N] with broadcasting of the leading dimensions.
    static func matMul(_ a: Operand, _ b: Operand, _ output: UnsafeMutablePointer<Float>, _ shape: [Int]) {
        let (m, k, n) = (a.shape[a.shape.count - 2], a.shape[a.shape.count - 1], b.shape[b.shape.count - 1])
        let batchShape = Array(shape.dropLast(2))
        func matrixStrides(_ x: [Int]) -> [Int] {
            let leading = Array(x.dropLast(2)), size = x.suffix(2).reduce(1, *)
            return broadcastStrides(contiguousStrides(leading).map { $0 * size }, from: leading, to: batchShape)
        }
        let (sa, sb) = (matrixStrides(a.shape), matrixStrides(b.shape))
        let batches = batchShape.reduce(1, *)
        var index = [Int](repeating: 0, count: batchShape.count)
        for t in 0..<batches {
            var remainder = t, offsetA = 0, offsetB = 0
            for d in stride(from: batchShape.count - 1, through: 0, by: -1) {
                index[d] = remainder % batchShape[d]
                remainder /= batchShape[d]
                offsetA += index[d] * sa[d]
                offsetB += index[d] * sb[d]
            }
            let (x, w, y) = (a.data + offsetA, b.data + offsetB, output + t * m * n)
            y.initialize(repeating: 0, count: m * n)
            for i in 0..<m {
                for p in 0..<k {
                    let v = x[i * k + p]
                    for j in 0..<n { y[i * n + j] += v * w[p * n + j] }
                }
            }
        }
    }

    /// Row-major strides of a shape.
    static func contiguousStrides(_ shape: [Int]) -> [Int] {
        var strides = [Int](repeating: 1, count: shape.count)
        for d in stride(from: shape.count - 2, through: 0, by: -1) { strides[d] = strides[d + 1] * shape[d + 1] }
        return strides
    }

    /// Strides of a tensor of shape `from` read as shape `to` (aligned from the right; broadcast dimensions step 0).
    static func broadcastStrides(_ strides: [Int], from: [Int], to: [Int]) -> [Int] {
        let lead = to.count - from.count
        return to.indices.map { d in d < lead || from[d - lead] == 1 ? 0 : strides[d - lead] }
    }

    /// Calls `body` once per row (every index of `shape` but the last) with each operand's offset at the row's
    /// start, the row length and each operand's step along it.
    static func forEachRow(_ shape: [Int], _ strides: [[Int]], _ body: ([Int], Int, [Int]) -> Void) {
        guard let last = shape.last, shape.allSatisfy({ $0 > 0 }) else { return }
        let outerShape = Array(shape.dropLast()), rows = outerShape.reduce(1, *)
        let steps = strides.map { $0.last ?? 0 }
        var offsets = [Int](repeating: 0, count: strides.count), index = [Int](repeating: 0, count: outerShape.count)
        for _ in 0..<rows {
            body(offsets, last, steps)
            // Odometer step over the outer dimensions, keeping every operand's offset.
            var d = outerShape.count - 1
            while d >= 0 {
                index[d] += 1
                for o in strides.indices { offsets[o] += strides[o][d] }
                if index[d] < outerShape[d] { break }
                for o in strides.indices { offsets[o] -= strides[o][d] * outerShape[d] }
                index[d] = 0
                d -= 1
            }
        }
    }
}

extension FloatFunction {
    /// The function at one point, in fp32 (the definitions the teacher's interpreter uses).
    func apply(_ x: Float) -> Float {
        switch self {
        case .relu: return x > 0 ? x : 0
        case .clip(let lo, let hi): return min(max(x, lo), hi)
        case .leakyRelu(let alpha): return x >= 0 ? x : alpha * x
        case .sigmoid: return 1 / (1 + expf(-x))
        case .hardSigmoid(let alpha, let beta): return min(max(alpha * x + beta, 0), 1)
        case .hardSwish: return x * min(max(x / 6 + 0.5, 0), 1)
        case .tanh: return tanhf(x)
        case .silu: return x / (1 + expf(-x))
        case .gelu: return 0.5 * x * (1 + erff(x * 0.70710678118654752))
        case .elu(let alpha): return x > 0 ? x : alpha * (expf(x) - 1)
        case .softplus: return x > 20 ? x : log1pf(expf(x))
        case .erf: return erff(x)
        case .squareRoot: return x.squareRoot()
        }
    }
}
