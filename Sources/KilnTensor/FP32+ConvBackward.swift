import KilnGraph

extension FP32 {
    /// Gradients of `conv2d` with respect to its input, weight and bias (each computed only if asked for).
    ///
    /// Runs on oneDNN; a shape it refuses takes Kiln's own loops (`im2colConv2dBackward`). `constantWeight` as
    /// for `conv2d`.
    public static func conv2dBackward(_ x: Tensor, weight: Tensor, _ a: ConvAttributes, gradient dy: Tensor,
                                      input needInput: Bool, weight needWeight: Bool, bias needBias: Bool,
                                      constantWeight: Bool = false)
        -> (input: Tensor?, weight: Tensor?, bias: Tensor?)
    {
        let g = ConvGeometry(input: x.shape, weight: weight.shape, a)
        var done = true
        var dx: [Float]?, dw: [Float]?
        dy.scalars.withUnsafeBufferPointer { gp in
            if needInput {
                dx = [Float](unsafeUninitializedCapacity: x.count) { buffer, count in
                    done = OneDNN.backwardData(g, weights: weight.scalars, constant: constantWeight, gp.baseAddress!,
                                               buffer.baseAddress!)
                    count = x.count
                }
            }
            if needWeight && done {
                dw = [Float](unsafeUninitializedCapacity: weight.count) { buffer, count in
                    done = x.scalars.withUnsafeBufferPointer { xp in
                        OneDNN.backwardWeights(g, xp.baseAddress!, gp.baseAddress!, buffer.baseAddress!)
                    }
                    count = weight.count
                }
            }
        }
        if !done {
            return im2colConv2dBackward(x, weight: weight, a, gradient: dy, input: needInput, weight: needWeight,
                                        bias: needBias)
        }
        return (dx.map { Tensor(shape: x.shape, scalars: $0) }, dw.map { Tensor(shape: weight.shape, scalars: $0) },
                needBias ? biasGradient(g, dy) : nil)
    }

    /// `conv2dBackward` on Kiln's own loops (direct depthwise, im2col + sgemm + col2im otherwise).
    static func im2colConv2dBackward(_ x: Tensor, weight: Tensor, _ a: ConvAttributes, gradient dy: Tensor,
                                     input needInput: Bool, weight needWeight: Bool, bias needBias: Bool)
        -> (input: Tensor?, weight: Tensor?, bias: Tensor?)
    {
        _ = blasConfigured
        let g = ConvGeometry(input: x.shape, weight: weight.shape, a)
        var dx: [Float]? = needInput ? [Float](repeating: 0, count: x.count) : nil
        var dw: [Float]? = needWeight ? [Float](repeating: 0, count: weight.count) : nil
        x.scalars.withUnsafeBufferPointer { xp in
            weight.scalars.withUnsafeBufferPointer { wp in
                dy.scalars.withUnsafeBufferPointer { gp in
                    let xs = UnsafeSendablePointer(xp.baseAddress!), ws = UnsafeSendablePointer(wp.baseAddress!)
                    let gs = UnsafeSendablePointer(gp.baseAddress!)
                    if g.isDepthwise {
                        depthwiseBackward(g, xs.pointer, ws.pointer, gs.pointer, &dx, &dw)
                    } else {
                        loweredBackward(g, xs.pointer, ws.pointer, gs.pointer, &dx, &dw)
                    }
                }
            }
        }
        return (dx.map { Tensor(shape: x.shape, scalars: $0) }, dw.map { Tensor(shape: weight.shape, scalars: $0) },
                needBias ? biasGradient(g, dy) : nil)
    }

    /// The bias gradient: the output gradient summed over images and pixels, per channel.
    private static func biasGradient(_ g: ConvGeometry, _ dy: Tensor) -> Tensor {
        var sums = [Float](repeating: 0, count: g.m)
        dy.scalars.withUnsafeBufferPointer { gp in
            for image in 0..<g.n {
                for channel in 0..<g.m {
                    let base = (image * g.m + channel) * g.outputPlane
                    var s: Float = 0
                    for i in 0..<g.outputPlane { s += gp[base + i] }
                    sums[channel] += s
                }
            }
        }
        return Tensor(shape: [g.m], scalars: sums)
    }

    /// dX = col2im(Wᵀ · dY) and dW = Σ dY · colᵀ per (image, group), parallel over images with per-worker dW.
    private static func loweredBackward(_ g: ConvGeometry, _ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>,
                                        _ dy: UnsafePointer<Float>, _ dx: inout [Float]?, _ dw: inout [Float]?) {
        let k = g.cg * g.kh * g.kw, p = g.outputPlane, mg = g.m / g.group
        let items = g.n * g.group
        let workers = max(1, min(Parallel.threadCount, items))
        let needInput = dx != nil, needWeight = dw != nil
        let weightCount = g.m * k
        var partial = [Float](repeating: 0, count: needWeight ? workers * weightCount : 1)
        var dxBuffer = dx ?? [0]
        let xs = UnsafeSendablePointer(x), ws = UnsafeSendablePointer(w), gs = UnsafeSendablePointer(dy)
        partial.withUnsafeMutableBufferPointer { partialBuffer in
            dxBuffer.withUnsafeMutableBufferPointer { dxp in
                let ps = UnsafeMutableSendablePointer(partialBuffer.baseAddress!)
                let dxs = UnsafeMutableSendablePointer(dxp.baseAddress!)
                Parallel.forEachChunk(workers) { chunk in
                    let worker = chunk.lowerBound
                    let start = items * worker / workers, end = items * (worker + 1) / workers
                    let col = UnsafeMutablePointer<Float>.allocate(capacity: k * p)
                    defer { col.deallocate() }
                    for item in start..<end {
                        let image = item / g.group, group = item % g.group
                        let source = xs.pointer + (image * g.c + group * g.cg) * g.h * g.w
                        let gradient = gs.pointer + (image * g.m + group * mg) * p
                        let weights = ws.pointer + group * mg * k
                        if needWeight {
                            let b: UnsafePointer<Float>
                            if g.isPointwise {
                                b = source
                            } else {
                                g.im2col(source, into: col, rows: 0..<k)
                                b = UnsafePointer(col)
                            }
                            BLAS.sgemm(transB: true, m: mg, n: k, k: p, a: gradient, lda: p, b: b, ldb: p, beta: 1,
                                       c: ps.pointer + worker * weightCount + group * mg * k, ldc: k)
                        }
                        if needInput {
                            let target = dxs.pointer + (image * g.c + group * g.cg) * g.h * g.w
                            if g.isPointwise {
                                BLAS.sgemm(transA: true, m: k, n: p, k: mg, a: weights, lda: k, b: gradient, ldb: p, beta: 1,
                                           c: target, ldc: p)
                            } else {
                                BLAS.sgemm(transA: true, m: k, n: p, k: mg, a: weights, lda: k, b: gradient, ldb: p,
                                           c: col, ldc: p)
                                g.col2im(col, into: target)
                            }
                        }
                    }
                }
            }
        }
        if needInput { dx = dxBuffer }
        if needWeight {
            var total = [Float](repeating: 0, count: weightCount)
            for worker in 0..<workers {
                for i in 0..<weightCount { total[i] += partial[worker * weightCount + i] }
            }
            dw = total
        }
    }

    /// Direct depthwise backward, parallel over channels (each channel's dX plane and dW row are its own).
    private static func depthwiseBackward(_ g: ConvGeometry, _ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>,
                                          _ dy: UnsafePointer<Float>, _ dx: inout [Float]?, _ dw: inout [Float]?) {
        let multiplier = g.m / g.c
        let needInput = dx != nil, needWeight = dw != nil
        var dxBuffer = dx ?? [0], dwBuffer = dw ?? [0]
        let xs = UnsafeSendablePointer(x), ws = UnsafeSendablePointer(w), gs = UnsafeSendablePointer(dy)
        dxBuffer.withUnsafeMutableBufferPointer { dxp in
            dwBuffer.withUnsafeMutableBufferPointer { dwp in
                let dxs = UnsafeMutableSendablePointer(dxp.baseAddress!)
                let dws = UnsafeMutableSendablePointer(dwp.baseAddress!)
                Parallel.forEachChunk(g.c) { channels in
                    for inputChannel in channels {
                        for channel in (inputChannel * multiplier)..<((inputChannel + 1) * multiplier) {
                            for image in 0..<g.n {
                                let source = xs.pointer + (image * g.c + inputChannel) * g.h * g.w
                                let target = dxs.pointer + (image * g.c + inputChannel) * g.h * g.w
                                let gradient = gs.pointer + (image * g.m + channel) * g.outputPlane
                                for ki in 0..<g.kh {
                                    for kj in 0..<g.kw {
                                        let columns = g.validColumns(kj)
                                        if columns.isEmpty { continue }
                                        let offset = kj * g.dw - g.pl
                                        let weight = ws.pointer[(channel * g.kh + ki) * g.kw + kj]
                                        var weightGradient: Float = 0
                                        for oy in 0..<g.oh {
                                            let iy = oy * g.sh - g.pt + ki * g.dh
                                            if iy < 0 || iy >= g.h { continue }
                                            let row = iy * g.w + offset
                                            let gradientRow = gradient + oy * g.ow
                                            for ox in columns {
                                                let d = gradientRow[ox]
                                                if needWeight { weightGradient += d * source[row + ox * g.sw] }
                                                if needInput { target[row + ox * g.sw] += d * weight }
                                            }
                                        }
                                        if needWeight { dws.pointer[(channel * g.kh + ki) * g.kw + kj] += weightGradient }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        if needInput { dx = dxBuffer }
        if needWeight { dw = dwBuffer }
    }
}

extension ConvGeometry {
    /// Adds a [cg·kH·kW, oH·oW] patch-matrix gradient back onto the image it was gathered from (inverse of im2col).
    func col2im(_ col: UnsafePointer<Float>, into image: UnsafeMutablePointer<Float>) {
        let p = oh * ow
        for row in 0..<(cg * kh * kw) {
            let kj = row % kw, ki = (row / kw) % kh, ci = row / (kw * kh)
            let plane = image + ci * h * w
            let source = col + row * p
            let columns = validColumns(kj)
            if columns.isEmpty { continue }
            let offset = kj * dw - pl
            for oy in 0..<oh {
                let iy = oy * sh - pt + ki * dh
                if iy < 0 || iy >= h { continue }
                let line = plane + iy * w + offset
                let values = source + oy * ow
                if sw == 1 {
                    for ox in columns { line[ox] += values[ox] }
                } else {
                    for ox in columns { line[ox * sw] += values[ox] }
                }
            }
        }
    }
}
