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
            var out = a.scalars
            out.withUnsafeMutableBufferPointer { buffer in
                b.scalars.withUnsafeBufferPointer { other in
                    let p = UnsafeMutableSendablePointer(buffer.baseAddress!), q = UnsafeSendablePointer(other.baseAddress!)
                    Parallel.forEachSlice(buffer.count) { range in
                        switch op {
                        case .add: for i in range { p.pointer[i] += q.pointer[i] }
                        case .sub: for i in range { p.pointer[i] -= q.pointer[i] }
                        case .mul: for i in range { p.pointer[i] *= q.pointer[i] }
                        case .div: for i in range { p.pointer[i] /= q.pointer[i] }
                        }
                    }
                }
            }
            return Tensor(shape: a.shape, scalars: out)
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
            var out = a.scalars
            out.withUnsafeMutableBufferPointer { p in
                for o in 0..<outer {
                    for c in 0..<channels {
                        let s = b.scalars[c]
                        let base = (o * channels + c) * inner
                        for i in base..<(base + inner) { p[i] = op.apply(p[i], s) }
                    }
                }
            }
            return Tensor(shape: shape, scalars: out)
        }
        let (values, outShape) = TensorLayout.broadcastBinary(a.scalars, a.shape, b.scalars, b.shape, op.apply)
        return Tensor(shape: outShape, scalars: values)
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
        let channels = x.shape[1]
        let inner = x.shape[2...].reduce(1, *)
        let multiplier = (0..<channels).map { scale.scalars[$0] / (variance.scalars[$0] + epsilon).squareRoot() }
        let shift = (0..<channels).map { bias.scalars[$0] - mean.scalars[$0] * multiplier[$0] }
        var out = x.scalars
        out.withUnsafeMutableBufferPointer { buffer in
            let p = UnsafeMutableSendablePointer(buffer.baseAddress!)
            Parallel.forEachChunk(x.shape[0] * channels, grain: max(1, (1 << 16) / max(inner, 1))) { planes in
                for plane in planes {
                    let c = plane % channels
                    let (m, s) = (multiplier[c], shift[c])
                    let base = plane * inner
                    for i in base..<(base + inner) { p.pointer[i] = p.pointer[i] * m + s }
                }
            }
        }
        return Tensor(shape: x.shape, scalars: out)
    }
}
