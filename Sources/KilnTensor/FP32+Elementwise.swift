import KilnGraph

extension FP32 {
    /// A pointwise activation applied to every element.
    public static func activation(_ x: Tensor, _ f: Activation) -> Tensor {
        // One pass from x into a fresh buffer (a copy of x transformed in place reads and writes it twice).
        let count = x.count
        let scalars = [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
            x.scalars.withUnsafeBufferPointer { source in
                guard count > 0 else { return }
                let d = UnsafeMutableSendablePointer(buffer.baseAddress!), s = UnsafeSendablePointer(source.baseAddress!)
                Parallel.forEachSlice(count) { range in
                    let (out, v) = (d.pointer, s.pointer)
                    switch f {
                    case .relu: for i in range { let e = v[i]; out[i] = e > 0 ? e : 0 }
                    case .clip(let lo, let hi): for i in range { out[i] = min(max(v[i], lo), hi) }
                    default: for i in range { out[i] = f.apply(v[i]) }
                    }
                }
            }
            initialized = count
        }
        return Tensor(shape: x.shape, scalars: scalars)
    }

    /// Broadcasting elementwise arithmetic, with fast paths for equal shapes, scalars and per-channel operands.
    public static func binary(_ a: Tensor, _ b: Tensor, _ op: BinaryOp) -> Tensor {
        if a.shape == b.shape {
            // One parallel pass into a fresh buffer (a copy of `a` updated in place reads and writes it twice).
            let count = a.count
            let scalars = [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
                a.scalars.withUnsafeBufferPointer { first in
                    b.scalars.withUnsafeBufferPointer { second in
                        guard count > 0 else { return }
                        let (d, p, q) = (UnsafeMutableSendablePointer(buffer.baseAddress!),
                                         UnsafeSendablePointer(first.baseAddress!), UnsafeSendablePointer(second.baseAddress!))
                        Parallel.forEachSlice(count) { range in
                            let (out, x, y) = (d.pointer, p.pointer, q.pointer)
                            switch op {
                            case .add: for i in range { out[i] = x[i] + y[i] }
                            case .sub: for i in range { out[i] = x[i] - y[i] }
                            case .mul: for i in range { out[i] = x[i] * y[i] }
                            case .div: for i in range { out[i] = x[i] / y[i] }
                            }
                        }
                    }
                }
                initialized = count
            }
            return Tensor(shape: a.shape, scalars: scalars)
        }
        guard let shape = TensorLayout.broadcastShape(a.shape, b.shape) else {
            preconditionFailure("shapes \(a.shape) and \(b.shape) do not broadcast")
        }
        if b.count == 1 && shape == a.shape {
            let s = b.scalars[0]
            return Tensor(shape: shape, scalars: a.scalars.map { op.apply($0, s) })
        }
        if a.count == 1 && shape == b.shape {
            let s = a.scalars[0]
            return Tensor(shape: shape, scalars: b.scalars.map { op.apply(s, $0) })
        }
        if shape == a.shape, let (outer, channels, inner) = channelBroadcast(b.shape, over: shape) {
            let values = b.scalars
            return mapPlanes(a, outer: outer, channels: channels, inner: inner) { c, source, target, count in
                let s = values[c]
                switch op {
                case .add: for i in 0..<count { target[i] = source[i] + s }
                case .sub: for i in 0..<count { target[i] = source[i] - s }
                case .mul: for i in 0..<count { target[i] = source[i] * s }
                case .div: for i in 0..<count { target[i] = source[i] / s }
                }
            }
        }
        let (values, outShape) = TensorLayout.broadcastBinary(a.scalars, a.shape, b.scalars, b.shape, op.apply)
        return Tensor(shape: outShape, scalars: values)
    }

    /// A fresh tensor of x's shape, x seen as [outer, channels, inner] planes: `body(c, source, target, inner)`
    /// writes each plane of channel c from x's plane, planes in parallel.
    @inline(__always)
    static func mapPlanes(_ x: Tensor, outer: Int, channels: Int, inner: Int,
                          _ body: (_ channel: Int, _ source: UnsafePointer<Float>, _ target: UnsafeMutablePointer<Float>,
                                   _ count: Int) -> Void) -> Tensor {
        x.scalars.withUnsafeBufferPointer { source in
            let start = source.baseAddress.map(UnsafeSendablePointer.init)
            return makePlanes(x.shape, outer: outer, channels: channels, inner: inner) { c, offset, target, count in
                body(c, start!.pointer + offset, target, count)
            }
        }
    }

    /// A fresh tensor of `shape` seen as [outer, channels, inner] planes: `body(c, offset, target, inner)` writes
    /// the plane at element `offset` (of channel c), planes in parallel.
    @inline(__always)
    static func makePlanes(_ shape: [Int], outer: Int, channels: Int, inner: Int,
                           _ body: (_ channel: Int, _ offset: Int, _ target: UnsafeMutablePointer<Float>,
                                    _ count: Int) -> Void) -> Tensor {
        let count = outer * channels * inner
        precondition(count == shape.elementCount, "planes \(outer)×\(channels)×\(inner) do not cover \(shape)")
        let scalars = [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
            guard count > 0 else { return }
            let d = UnsafeMutableSendablePointer(buffer.baseAddress!)
            Parallel.forEachChunk(outer * channels, grain: max(1, (1 << 16) / max(inner, 1))) { planes in
                for plane in planes {
                    body(plane % channels, plane * inner, d.pointer + plane * inner, inner)
                }
            }
            initialized = count
        }
        return Tensor(shape: shape, scalars: scalars)
    }

    /// `body(c)` for every channel, channels in parallel (each call reduces one channel of an [outer, channels,
    /// inner] tensor, so the result does not depend on the thread count).
    @inline(__always)
    static func forEachChannel(_ channels: Int, elements: Int, _ body: (_ channel: Int) -> Void) {
        Parallel.forEachChunk(channels, grain: max(1, (1 << 16) / max(elements / max(channels, 1), 1))) { range in
            for c in range { body(c) }
        }
    }

    /// If `small` varies along exactly one axis of `shape` (e.g. [1, C, 1, 1] against [N, C, H, W]), the sizes
    /// (outer, channels, inner) around that axis.
    static func channelBroadcast(_ small: [Int], over shape: [Int]) -> (Int, Int, Int)? {
        let padded = [Int](repeating: 1, count: shape.count - small.count) + small
        let varying = padded.indices.filter { padded[$0] != 1 }
        guard varying.count == 1, let axis = varying.first, padded[axis] == shape[axis] else { return nil }
        return (shape[..<axis].reduce(1, *), shape[axis], shape[(axis + 1)...].reduce(1, *))
    }

    /// Inference batch normalization: (x − mean) / √(variance + ε) · scale + bias per channel (axis 1).
    public static func batchNorm(_ x: Tensor, scale: Tensor, bias: Tensor, mean: Tensor, variance: Tensor,
                                 epsilon: Float) -> Tensor {
        let (outer, channels, inner) = split(x.shape, at: 1)
        let multiplier = (0..<channels).map { scale.scalars[$0] / (variance.scalars[$0] + epsilon).squareRoot() }
        let shift = (0..<channels).map { bias.scalars[$0] - mean.scalars[$0] * multiplier[$0] }
        return mapPlanes(x, outer: outer, channels: channels, inner: inner) { c, source, target, count in
            let (m, s) = (multiplier[c], shift[c])
            for i in 0..<count { target[i] = source[i] * m + s }
        }
    }
}
