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

    /// Gradient of max pooling: each output's gradient goes to its winner (`maxPoolWithWinners`). Each plane is
    /// zeroed by the thread that scatters into it (a serial fill of the whole gradient first took longer than the
    /// scatter: ResNet-18's is 26 MB at batch 8).
    public static func maxPoolBackward(inputShape: [Int], winners: [Int32], gradient: Tensor) -> Tensor {
        let planes = inputShape[0] * inputShape[1], plane = inputShape[2] * inputShape[3]
        let cells = gradient.shape[2] * gradient.shape[3]
        let dx = [Float](unsafeUninitializedCapacity: planes * plane) { dp, initialized in
            winners.withUnsafeBufferPointer { wp in
                gradient.scalars.withUnsafeBufferPointer { gp in
                    guard let first = dp.baseAddress else { return }
                    // (An empty array may still have a base address; with no cells nothing is read.)
                    let (w, g, d) = (wp.baseAddress.map(UnsafeSendablePointer.init),
                                     gp.baseAddress.map(UnsafeSendablePointer.init), UnsafeMutableSendablePointer(first))
                    Parallel.forEachChunk(planes, grain: max(1, 4096 / max(cells, plane, 1))) { range in
                        for p in range {
                            let target = d.pointer + p * plane
                            target.initialize(repeating: 0, count: plane)
                            guard let w, let g else { continue }
                            for cell in (p * cells)..<((p + 1) * cells) where w.pointer[cell] >= 0 {
                                target[Int(w.pointer[cell])] += g.pointer[cell]
                            }
                        }
                    }
                }
            }
            initialized = planes * plane
        }
        return Tensor(shape: inputShape, scalars: dx)
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
        gradient.scalars.withUnsafeBufferPointer { gp in
            dx.withUnsafeMutableBufferPointer { dp in
                guard dp.count > 0 else { return }
                let (g, d) = (UnsafeSendablePointer(gp.baseAddress!), UnsafeMutableSendablePointer(dp.baseAddress!))
                Parallel.forEachChunk(planes, grain: max(1, 65536 / max(oh * ow, 1))) { range in
                    for plane in range {
                        for oy in 0..<oh {
                            let line = g.pointer + (plane * oh + oy) * ow
                            let target = d.pointer + (plane * h + oy / scaleH) * w
                            for ix in 0..<w {
                                var sum: Float = 0
                                for k in 0..<scaleW { sum += line[ix * scaleW + k] }
                                target[ix] += sum
                            }
                        }
                    }
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
        guard x.count > 0 else { return (mean, variance) }
        x.scalars.withUnsafeBufferPointer { p in
            mean.withUnsafeMutableBufferPointer { mp in
                variance.withUnsafeMutableBufferPointer { vp in
                    let source = UnsafeSendablePointer(p.baseAddress!)
                    let (means, variances) = (UnsafeMutableSendablePointer(mp.baseAddress!),
                                              UnsafeMutableSendablePointer(vp.baseAddress!))
                    forEachChannel(channels, elements: x.count) { c in
                        var sum = 0.0
                        for o in 0..<outer { sum += doubleSum(source.pointer + (o * channels + c) * inner, inner) }
                        let mu = sum / count
                        var squares = 0.0
                        for o in 0..<outer {
                            squares += squaredDeviations(source.pointer + (o * channels + c) * inner, inner, from: mu)
                        }
                        means.pointer[c] = Float(mu)
                        variances.pointer[c] = Float(squares / count)
                    }
                }
            }
        }
        return (mean, variance)
    }

    /// Σ p[i] for i in 0..<n in Double, four running sums (one dependent Double add per element is latency-bound).
    @inline(__always)
    static func doubleSum(_ p: UnsafePointer<Float>, _ n: Int) -> Double {
        var (s0, s1, s2, s3) = (0.0, 0.0, 0.0, 0.0)
        var i = 0
        while i + 4 <= n {
            s0 += Double(p[i]); s1 += Double(p[i + 1]); s2 += Double(p[i + 2]); s3 += Double(p[i + 3])
            i += 4
        }
        while i < n { s0 += Double(p[i]); i += 1 }
        return (s0 + s1) + (s2 + s3)
    }

    /// Σ (p[i] − mu)² for i in 0..<n in Double, four running sums.
    @inline(__always)
    static func squaredDeviations(_ p: UnsafePointer<Float>, _ n: Int, from mu: Double) -> Double {
        var (s0, s1, s2, s3) = (0.0, 0.0, 0.0, 0.0)
        var i = 0
        while i + 4 <= n {
            let (d0, d1) = (Double(p[i]) - mu, Double(p[i + 1]) - mu)
            let (d2, d3) = (Double(p[i + 2]) - mu, Double(p[i + 3]) - mu)
            s0 += d0 * d0; s1 += d1 * d1; s2 += d2 * d2; s3 += d3 * d3
            i += 4
        }
        while i < n { let d = Double(p[i]) - mu; s0 += d * d; i += 1 }
        return (s0 + s1) + (s2 + s3)
    }

    /// Per channel of x and y seen as [outer, channels, inner]: (Σ x, Σ x·y), channels in parallel; each channel
    /// summed plane by plane in order (one Float partial sum per plane).
    static func channelSums(_ x: Tensor, times y: Tensor) -> (sums: [Float], products: [Float]) {
        let (outer, channels, inner) = split(x.shape, at: 1)
        precondition(x.shape == y.shape, "channel sums of \(x.shape) and \(y.shape)")
        var sums = [Float](repeating: 0, count: channels), products = [Float](repeating: 0, count: channels)
        guard x.count > 0 else { return (sums, products) }
        x.scalars.withUnsafeBufferPointer { xp in
            y.scalars.withUnsafeBufferPointer { yp in
                sums.withUnsafeMutableBufferPointer { sp in
                    products.withUnsafeMutableBufferPointer { pp in
                        let (xs, ys) = (UnsafeSendablePointer(xp.baseAddress!), UnsafeSendablePointer(yp.baseAddress!))
                        let (ss, ps) = (UnsafeMutableSendablePointer(sp.baseAddress!),
                                        UnsafeMutableSendablePointer(pp.baseAddress!))
                        forEachChannel(channels, elements: x.count) { c in
                            var (sum, product): (Float, Float) = (0, 0)
                            for o in 0..<outer {
                                let (a, b) = (xs.pointer + (o * channels + c) * inner, ys.pointer + (o * channels + c) * inner)
                                var (planeSum, planeProduct): (Float, Float) = (0, 0)
                                for i in 0..<inner {
                                    planeSum += a[i]
                                    planeProduct += a[i] * b[i]
                                }
                                sum += planeSum
                                product += planeProduct
                            }
                            ss.pointer[c] = sum
                            ps.pointer[c] = product
                        }
                    }
                }
            }
        }
        return (sums, products)
    }
}
