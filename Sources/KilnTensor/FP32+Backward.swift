import KilnGraph

extension FP32 {
    /// Sums a broadcast result back to the shape of an operand (the gradient rule of broadcasting).
    public static func sumToShape(_ t: Tensor, _ shape: [Int]) -> Tensor {
        if t.shape == shape { return t }
        let strides = TensorLayout.broadcastStrides(from: shape, to: t.shape)
        var out = [Float](repeating: 0, count: shape.elementCount)
        t.scalars.withUnsafeBufferPointer { source in
            out.withUnsafeMutableBufferPointer { target in
                TensorLayout.walk(shape: t.shape, sources: [(0, strides)]) { index, offsets in
                    target[offsets[0]] += source[index]
                }
            }
        }
        return Tensor(shape: shape, scalars: out)
    }

    /// Gradient of max pooling: each window's gradient goes to its (first) largest in-bounds cell.
    public static func maxPoolBackward(_ x: Tensor, _ a: PoolAttributes, gradient: Tensor) -> Tensor {
        let (planes, h, w) = (x.shape[0] * x.shape[1], x.shape[2], x.shape[3])
        var dx = [Float](repeating: 0, count: x.count)
        x.scalars.withUnsafeBufferPointer { xp in
            gradient.scalars.withUnsafeBufferPointer { gp in
                dx.withUnsafeMutableBufferPointer { dp in
                    let result = UncheckedSendable(dp)
                    forEachPoolWindow(planes: planes, oh: gradient.shape[2], ow: gradient.shape[3],
                                      PoolGeometry(a, height: h, width: w)) { plane, cell, window in
                        let base = plane * h * w
                        var best = -Float.infinity, at = -1
                        window.forEachOffset(width: w) { offset in
                            if xp[base + offset] > best || at < 0 { (best, at) = (xp[base + offset], base + offset) }
                        }
                        if at >= 0 { result.value[at] += gp[cell] }
                    }
                }
            }
        }
        return Tensor(shape: x.shape, scalars: dx)
    }

    /// Gradient of average pooling: each window's gradient is shared by its counted cells.
    public static func averagePoolBackward(inputShape: [Int], _ a: PoolAttributes, gradient: Tensor) -> Tensor {
        let (planes, h, w) = (inputShape[0] * inputShape[1], inputShape[2], inputShape[3])
        let geometry = PoolGeometry(a, height: h, width: w), includePad = a.countIncludePad
        var dx = [Float](repeating: 0, count: inputShape.elementCount)
        gradient.scalars.withUnsafeBufferPointer { gp in
            dx.withUnsafeMutableBufferPointer { dp in
                let result = UncheckedSendable(dp)
                forEachPoolWindow(planes: planes, oh: gradient.shape[2], ow: gradient.shape[3], geometry) { plane, cell, window in
                    let count = includePad ? window.paddedCount(geometry) : window.rowCount * window.columnCount
                    guard count > 0 else { return }
                    let share = gp[cell] / Float(count)
                    let base = plane * h * w
                    window.forEachOffset(width: w) { result.value[base + $0] += share }
                }
            }
        }
        return Tensor(shape: inputShape, scalars: dx)
    }

    /// Gradient of global average pooling: each plane's gradient spread evenly over its cells.
    public static func globalAveragePoolBackward(_ gradient: Tensor, inputShape: [Int]) -> Tensor {
        let planes = inputShape[0] * inputShape[1], size = inputShape[2] * inputShape[3]
        var dx = [Float](repeating: 0, count: planes * size)
        gradient.scalars.withUnsafeBufferPointer { gp in
            dx.withUnsafeMutableBufferPointer { dp in
                for plane in 0..<planes {
                    let share = gp[plane] / Float(size)
                    for i in (plane * size)..<((plane + 1) * size) { dp[i] = share }
                }
            }
        }
        return Tensor(shape: inputShape, scalars: dx)
    }

    /// Gradient of nearest upsampling: each input cell collects the gradients of its copies.
    public static func upsampleNearestBackward(_ gradient: Tensor, inputShape: [Int], scaleH: Int, scaleW: Int) -> Tensor {
        let (planes, h, w) = (inputShape[0] * inputShape[1], inputShape[2], inputShape[3])
        let (oh, ow) = (h * scaleH, w * scaleW)
        var dx = [Float](repeating: 0, count: inputShape.elementCount)
        for plane in 0..<planes {
            for oy in 0..<oh {
                for ox in 0..<ow {
                    dx[(plane * h + oy / scaleH) * w + ox / scaleW] += gradient.scalars[(plane * oh + oy) * ow + ox]
                }
            }
        }
        return Tensor(shape: inputShape, scalars: dx)
    }

    /// Gradient of softmax along `axis`: dx = y · (dy − Σ dy·y).
    public static func softmaxBackward(output y: Tensor, gradient dy: Tensor, axis: Int) -> Tensor {
        let (outer, size, inner) = split(y.shape, at: axis)
        var dx = [Float](repeating: 0, count: y.count)
        for o in 0..<outer {
            for i in 0..<inner {
                let base = o * size * inner + i
                var dot: Float = 0
                for j in 0..<size { dot += dy.scalars[base + j * inner] * y.scalars[base + j * inner] }
                for j in 0..<size {
                    let k = base + j * inner
                    dx[k] = y.scalars[k] * (dy.scalars[k] - dot)
                }
            }
        }
        return Tensor(shape: y.shape, scalars: dx)
    }

    /// Scatters a slice's gradient back into a zero tensor of the input's shape.
    public static func sliceBackward(_ gradient: Tensor, inputShape: [Int], _ a: SliceAttributes) -> Tensor {
        var dx = [Float](repeating: 0, count: inputShape.elementCount)
        let inStrides = inputShape.strides
        var base = 0
        for axis in inputShape.indices { base += a.starts[axis] * inStrides[axis] }
        let strides = inputShape.indices.map { inStrides[$0] * a.steps[$0] }
        gradient.scalars.withUnsafeBufferPointer { g in
            TensorLayout.walk(shape: a.counts, sources: [(base, strides)]) { index, offsets in
                dx[offsets[0]] += g[index]
            }
        }
        return Tensor(shape: inputShape, scalars: dx)
    }

    /// Per-channel (axis 1) mean and biased variance of x [N, C, ...] over every other axis, in Float64 sums.
    public static func channelMoments(_ x: Tensor) -> (mean: [Float], variance: [Float]) {
        let (outer, channels, inner) = split(x.shape, at: 1)
        let count = Double(outer * inner)
        var mean = [Float](repeating: 0, count: channels), variance = [Float](repeating: 0, count: channels)
        x.scalars.withUnsafeBufferPointer { p in
            for c in 0..<channels {
                var sum = 0.0
                for o in 0..<outer {
                    let base = (o * channels + c) * inner
                    for i in 0..<inner { sum += Double(p[base + i]) }
                }
                let mu = sum / count
                var squares = 0.0
                for o in 0..<outer {
                    let base = (o * channels + c) * inner
                    for i in 0..<inner {
                        let d = Double(p[base + i]) - mu
                        squares += d * d
                    }
                }
                mean[c] = Float(mu)
                variance[c] = Float(squares / count)
            }
        }
        return (mean, variance)
    }
}
