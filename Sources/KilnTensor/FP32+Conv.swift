import KilnGraph

/// The fp32 reference ops: the executable definition of every IR op, on OpenBLAS where it pays.
public enum FP32 {}

extension FP32 {
    /// 2-D convolution of x [N, C, H, W] with weight [M, C/group, kH, kW] and optional bias [M].
    ///
    /// Runs on oneDNN; a shape it refuses takes `im2colConv2d`. `constantWeight`: the weight is a frozen model's
    /// (a graph constant), used again unchanged, so oneDNN's reordered copy of it is kept from the second call on.
    public static func conv2d(_ x: Tensor, weight: Tensor, bias: Tensor?, _ a: ConvAttributes,
                              constantWeight: Bool = false) -> Tensor {
        let geometry = ConvGeometry(input: x.shape, weight: weight.shape, a)
        var done = false
        let out = [Float](unsafeUninitializedCapacity: geometry.outputCount) { buffer, count in
            done = x.scalars.withUnsafeBufferPointer { xp in
                withOptionalPointer(bias?.scalars) { bp in
                    OneDNN.forward(geometry, xp.baseAddress!, weights: weight.scalars, constant: constantWeight,
                                   bias: bp, buffer.baseAddress!)
                }
            }
            count = geometry.outputCount
        }
        if !done { return im2colConv2d(x, weight: weight, bias: bias, a) }
        return Tensor(shape: [geometry.n, geometry.m, geometry.oh, geometry.ow], scalars: out)
    }

    /// `conv2d` on Kiln's own loops: depthwise convs run direct loops; the rest lower to im2col + sgemm (1×1
    /// stride-1 convs skip im2col). The path for shapes oneDNN refuses, and the tests' second opinion.
    static func im2colConv2d(_ x: Tensor, weight: Tensor, bias: Tensor?, _ a: ConvAttributes) -> Tensor {
        _ = blasConfigured
        let geometry = ConvGeometry(input: x.shape, weight: weight.shape, a)
        var out = [Float](repeating: 0, count: geometry.outputCount)
        x.scalars.withUnsafeBufferPointer { xp in
            weight.scalars.withUnsafeBufferPointer { wp in
                out.withUnsafeMutableBufferPointer { op in
                    if geometry.isDepthwise {
                        depthwise(geometry, xp.baseAddress!, wp.baseAddress!, op.baseAddress!)
                    } else {
                        lowered(geometry, xp.baseAddress!, wp.baseAddress!, op.baseAddress!)
                    }
                    if let bias {
                        addChannelBias(bias.scalars, to: op.baseAddress!, images: geometry.n,
                                       channels: geometry.m, plane: geometry.outputPlane)
                    }
                }
            }
        }
        return Tensor(shape: [geometry.n, geometry.m, geometry.oh, geometry.ow], scalars: out)
    }

    /// Calls `body` with a pointer to `values`' storage, or nil without values.
    static func withOptionalPointer<R>(_ values: [Float]?, _ body: (UnsafePointer<Float>?) -> R) -> R {
        guard let values else { return body(nil) }
        return values.withUnsafeBufferPointer { body($0.baseAddress!) }
    }

    /// Adds bias[c] to every element of plane c of each image in an [N, C, plane] buffer.
    static func addChannelBias(_ bias: [Float], to out: UnsafeMutablePointer<Float>, images: Int, channels: Int,
                               plane: Int) {
        let outAddress = UnsafeMutableSendablePointer(out)
        Parallel.forEachChunk(images * channels, grain: max(1, 4096 / max(plane, 1))) { range in
            for item in range {
                let b = bias[item % channels]
                let p = outAddress.pointer + item * plane
                for i in 0..<plane { p[i] += b }
            }
        }
    }

    /// Direct depthwise convolution (group == C, M a multiple of C), parallel over output planes.
    private static func depthwise(_ g: ConvGeometry, _ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>,
                                  _ out: UnsafeMutablePointer<Float>) {
        let multiplier = g.m / g.c
        let xs = UnsafeSendablePointer(x), ws = UnsafeSendablePointer(w), os = UnsafeMutableSendablePointer(out)
        Parallel.forEachChunk(g.n * g.m) { range in
            for plane in range {
                let image = plane / g.m, channel = plane % g.m
                let src = xs.pointer + (image * g.c + channel / multiplier) * g.h * g.w
                let dst = os.pointer + plane * g.outputPlane
                let kernel = ws.pointer + channel * g.kh * g.kw
                for ki in 0..<g.kh {
                    for kj in 0..<g.kw {
                        let weight = kernel[ki * g.kw + kj]
                        let columns = g.validColumns(kj)
                        if columns.isEmpty { continue }
                        let columnOffset = kj * g.dw - g.pl
                        for oy in 0..<g.oh {
                            let iy = oy * g.sh - g.pt + ki * g.dh
                            if iy < 0 || iy >= g.h { continue }
                            let row = src + iy * g.w + columnOffset
                            let outRow = dst + oy * g.ow
                            if g.sw == 1 {
                                for ox in columns { outRow[ox] += weight * row[ox] }
                            } else {
                                for ox in columns { outRow[ox] += weight * row[ox * g.sw] }
                            }
                        }
                    }
                }
            }
        }
    }

    /// Convolution as one sgemm per (image, group): out[Mg, P] = W[Mg, K] · col[K, P].
    private static func lowered(_ g: ConvGeometry, _ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>,
                                _ out: UnsafeMutablePointer<Float>) {
        let k = g.cg * g.kh * g.kw
        let p = g.outputPlane
        let mg = g.m / g.group
        let items = g.n * g.group
        let xs = UnsafeSendablePointer(x), ws = UnsafeSendablePointer(w), os = UnsafeMutableSendablePointer(out)
        func source(_ item: Int) -> UnsafePointer<Float> {
            let image = item / g.group, group = item % g.group
            return xs.pointer + (image * g.c + group * g.cg) * g.h * g.w
        }
        func destination(_ item: Int) -> UnsafeMutablePointer<Float> {
            let image = item / g.group, group = item % g.group
            return os.pointer + (image * g.m + group * mg) * p
        }
        func weights(_ item: Int) -> UnsafePointer<Float> { ws.pointer + (item % g.group) * mg * k }

        if items >= Parallel.threadCount || Parallel.threadCount == 1 {
            Parallel.forEachChunk(items) { range in
                let col = g.isPointwise ? nil : UnsafeMutablePointer<Float>.allocate(capacity: k * p)
                defer { col?.deallocate() }
                for item in range {
                    let b: UnsafePointer<Float>
                    if let col {
                        g.im2col(source(item), into: col, rows: 0..<k)
                        b = UnsafePointer(col)
                    } else {
                        b = source(item)
                    }
                    BLAS.sgemm(m: mg, n: p, k: k, a: weights(item), lda: k, b: b, ldb: p, c: destination(item),
                               ldc: p)
                }
            }
            return
        }
        // Few images: share one col buffer and split both im2col and the product across threads.
        let col = g.isPointwise ? nil : UnsafeMutablePointer<Float>.allocate(capacity: k * p)
        defer { col?.deallocate() }
        for item in 0..<items {
            let b: UnsafePointer<Float>
            if let col {
                let cs = UnsafeMutableSendablePointer(col)
                let src = UnsafeSendablePointer(source(item))
                Parallel.forEachChunk(k) { rows in g.im2col(src.pointer, into: cs.pointer, rows: rows) }
                b = UnsafePointer(col)
            } else {
                b = source(item)
            }
            let bs = UnsafeSendablePointer(b), dst = UnsafeMutableSendablePointer(destination(item))
            let wts = UnsafeSendablePointer(weights(item))
            if mg >= 4 * Parallel.threadCount {
                Parallel.forEachChunk(mg) { rows in
                    BLAS.sgemm(m: rows.count, n: p, k: k, a: wts.pointer + rows.lowerBound * k, lda: k,
                               b: bs.pointer, ldb: p, c: dst.pointer + rows.lowerBound * p, ldc: p)
                }
            } else {
                Parallel.forEachChunk(p, grain: 64) { columns in
                    BLAS.sgemm(m: mg, n: columns.count, k: k, a: wts.pointer, lda: k,
                               b: bs.pointer + columns.lowerBound, ldb: p,
                               c: dst.pointer + columns.lowerBound, ldc: p)
                }
            }
        }
    }
}

/// Sizes of one convolution, derived once from the input and weight shapes.
struct ConvGeometry {
    let n, c, h, w: Int
    let m, cg, kh, kw: Int
    let oh, ow: Int
    let sh, sw, dh, dw: Int
    let pt, pl, pb, pr: Int
    let group: Int

    init(input: [Int], weight: [Int], _ a: ConvAttributes) {
        (n, c, h, w) = (input[0], input[1], input[2], input[3])
        (m, cg, kh, kw) = (weight[0], weight[1], weight[2], weight[3])
        (sh, sw, dh, dw) = (a.strides[0], a.strides[1], a.dilations[0], a.dilations[1])
        (pt, pl, pb, pr) = (a.pads[0], a.pads[1], a.pads[2], a.pads[3])
        group = a.group
        oh = (h + a.pads[0] + a.pads[2] - dh * (kh - 1) - 1) / sh + 1
        ow = (w + a.pads[1] + a.pads[3] - dw * (kw - 1) - 1) / sw + 1
    }

    var outputPlane: Int { oh * ow }
    var outputCount: Int { n * m * oh * ow }
    var isDepthwise: Bool { group == c && cg == 1 && group > 1 }
    var isPointwise: Bool {
        kh == 1 && kw == 1 && sh == 1 && sw == 1 && pt == 0 && pl == 0 && oh == h && ow == w
    }

    /// Output columns whose input column for kernel column `kj` lies inside the image.
    func validColumns(_ kj: Int) -> Range<Int> {
        let offset = kj * dw - pl  // input column = ox * sw + offset
        let low = offset >= 0 ? 0 : (-offset + sw - 1) / sw
        let high = w - 1 - offset < 0 ? 0 : (w - 1 - offset) / sw + 1
        return min(low, ow)..<max(min(high, ow), min(low, ow))
    }

    /// Writes rows `rows` of the [cg·kH·kW, oH·oW] patch matrix of one image's group.
    func im2col(_ src: UnsafePointer<Float>, into col: UnsafeMutablePointer<Float>, rows: Range<Int>) {
        let p = oh * ow
        for row in rows {
            let kj = row % kw, ki = (row / kw) % kh, ci = row / (kw * kh)
            let plane = src + ci * h * w
            let dst = col + row * p
            let columns = validColumns(kj)
            let offset = kj * dw - pl
            for oy in 0..<oh {
                let out = dst + oy * ow
                let iy = oy * sh - pt + ki * dh
                if iy < 0 || iy >= h || columns.isEmpty {
                    out.update(repeating: 0, count: ow)
                    continue
                }
                if columns.lowerBound > 0 { out.update(repeating: 0, count: columns.lowerBound) }
                if columns.upperBound < ow {
                    (out + columns.upperBound).update(repeating: 0, count: ow - columns.upperBound)
                }
                let line = plane + iy * w + offset
                if sw == 1 {
                    (out + columns.lowerBound).update(from: line + columns.lowerBound, count: columns.count)
                } else {
                    for ox in columns { out[ox] = line[ox * sw] }
                }
            }
        }
    }
}

/// A pointer that may cross into `Parallel` work items (each writes a disjoint part).
struct UnsafeMutableSendablePointer<T>: @unchecked Sendable {
    let pointer: UnsafeMutablePointer<T>
    init(_ pointer: UnsafeMutablePointer<T>) { self.pointer = pointer }
}

/// A read-only pointer that may cross into `Parallel` work items.
struct UnsafeSendablePointer<T>: @unchecked Sendable {
    let pointer: UnsafePointer<T>
    init(_ pointer: UnsafePointer<T>) { self.pointer = pointer }
}
