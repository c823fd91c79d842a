/// Portable Swift int8 kernels: the reference every SIMD kernel is tested against.
///
/// Activations are uint8; 4-D tensors are NHWC in memory (logical NCHW shapes), 2-D tensors [N, K].
enum ReferenceKernels {
    /// Geometry of one image tensor: batch, channels, height, width (NHWC in memory).
    struct Image {
        var n, c, h, w: Int
        init(_ shape: [Int], batch: Int) {
            if shape.count == 4 {
                (n, c, h, w) = (batch, shape[1], shape[2], shape[3])
            } else {
                (n, c, h, w) = (batch, shape.dropFirst().reduce(1, *), 1, 1)
            }
        }
    }

    /// Convolution (and gemm as a 1×1 conv) with requantization and clamp.
    static func conv(_ layer: ConvLayer, _ x: UnsafePointer<UInt8>, _ xi: Image, _ inQ: Quantization,
                     _ y: UnsafeMutablePointer<UInt8>, _ yi: Image, _ outQ: Quantization,
                     scratch: UnsafeMutablePointer<UInt8>) {
        let (kh, kw) = (layer.kernel[0], layer.kernel[1])
        let group = layer.group
        let cg = xi.c / group, mg = layer.outputChannels / group
        let k = kh * kw * cg
        let zeroPoint = UInt8(truncatingIfNeeded: inQ.zeroPoint)
        layer.weights.withUnsafeBufferPointer { weights in
            for b in 0..<xi.n {
                for oy in 0..<yi.h {
                    for ox in 0..<yi.w {
                        let out = y + ((b * yi.h + oy) * yi.w + ox) * yi.c
                        for g in 0..<group {
                            // Gather the receptive field [kH][kW][cg]; padding holds the input zero point.
                            var p = 0
                            for i in 0..<kh {
                                let iy = oy * layer.strides[0] - layer.pads[0] + i * layer.dilations[0]
                                for j in 0..<kw {
                                    let ix = ox * layer.strides[1] - layer.pads[1] + j * layer.dilations[1]
                                    if iy >= 0 && iy < xi.h && ix >= 0 && ix < xi.w {
                                        (scratch + p).update(from: x + ((b * xi.h + iy) * xi.w + ix) * xi.c + g * cg, count: cg)
                                    } else {
                                        (scratch + p).update(repeating: zeroPoint, count: cg)
                                    }
                                    p += cg
                                }
                            }
                            for m in 0..<mg {
                                let channel = g * mg + m
                                let row = weights.baseAddress! + channel * k
                                var acc = layer.bias[channel]
                                for t in 0..<k { acc &+= Int32(scratch[t]) &* Int32(row[t]) }
                                out[channel] = Requantize.level(acc, multiplier: layer.multipliers[channel],
                                                                zeroPoint: outQ.zeroPoint, clamp: layer.clamp)
                            }
                        }
                    }
                }
            }
        }
    }

    /// Requantized elementwise sum: q = clamp(round((sa(qa − za) + sb(qb − zb)) / so) + zo).
    static func add(_ a: UnsafePointer<UInt8>, _ qa: Quantization, _ b: UnsafePointer<UInt8>, _ qb: Quantization,
                    _ y: UnsafeMutablePointer<UInt8>, _ qy: Quantization, count: Int, clamp: ClosedRange<Int32>) {
        for i in 0..<count {
            let real = Requantize.dequantize(a[i], qa) + Requantize.dequantize(b[i], qb)
            y[i] = UInt8(min(max(Int32(Requantize.quantize(real, qy)), clamp.lowerBound), clamp.upperBound))
        }
    }

    /// Requantized product of `a` ([N, H, W, C] in memory) and `b` of the same size or, with `broadcast`, [N, C]
    /// (one value per image and channel).
    static func mul(_ a: UnsafePointer<UInt8>, _ qa: Quantization, _ b: UnsafePointer<UInt8>, _ qb: Quantization,
                    _ y: UnsafeMutablePointer<UInt8>, _ qy: Quantization, _ image: Image, broadcast: Bool, maxLevel: Int32) {
        let multiplier = qa.scale * qb.scale / qy.scale
        let pixels = image.h * image.w
        for n in 0..<image.n {
            for p in 0..<pixels {
                for c in 0..<image.c {
                    let i = (n * pixels + p) * image.c + c
                    let product = (Int32(a[i]) - qa.zeroPoint) * (Int32(b[broadcast ? n * image.c + c : i]) - qb.zeroPoint)
                    y[i] = Requantize.level(product, multiplier: multiplier, zeroPoint: qy.zeroPoint, clamp: 0...maxLevel)
                }
            }
        }
    }

    /// Max pooling over the in-bounds cells of each window.
    static func maxPool(_ p: PoolWindow, _ x: UnsafePointer<UInt8>, _ xi: Image, _ y: UnsafeMutablePointer<UInt8>, _ yi: Image) {
        forEachWindow(p, xi, yi) { b, oy, ox, rows, columns in
            let out = y + ((b * yi.h + oy) * yi.w + ox) * yi.c
            for c in 0..<xi.c {
                var best: UInt8 = 0
                for iy in rows { for ix in columns { best = max(best, x[((b * xi.h + iy) * xi.w + ix) * xi.c + c]) } }
                out[c] = best
            }
        }
    }

    /// Average pooling, requantized from the input to the output quantization.
    static func averagePool(_ p: PoolWindow, _ x: UnsafePointer<UInt8>, _ xi: Image, _ inQ: Quantization,
                            _ y: UnsafeMutablePointer<UInt8>, _ yi: Image, _ outQ: Quantization, maxLevel: Int32) {
        forEachWindow(p, xi, yi) { b, oy, ox, rows, columns in
            let out = y + ((b * yi.h + oy) * yi.w + ox) * yi.c
            let cells = rows.count * columns.count
            let divisor = p.countIncludePad ? paddedCount(p, oy: oy, ox: ox, xi) : cells
            for c in 0..<xi.c {
                var sum: Int32 = 0
                for iy in rows { for ix in columns { sum += Int32(x[((b * xi.h + iy) * xi.w + ix) * xi.c + c]) } }
                out[c] = averageLevel(sum: sum, cells: cells, divisor: divisor, inQ, outQ, maxLevel: maxLevel)
            }
        }
    }

    /// Mean over H and W of each channel, requantized; output [N, C] (as [N, C, 1, 1]).
    static func globalAveragePool(_ x: UnsafePointer<UInt8>, _ xi: Image, _ inQ: Quantization,
                                  _ y: UnsafeMutablePointer<UInt8>, _ outQ: Quantization, maxLevel: Int32) {
        let cells = xi.h * xi.w
        // The sum is an accumulator like a conv's, requantized by the one scheme (as onnxruntime's
        // QLinearGlobalAveragePool does).
        let multiplier = inQ.scale / (outQ.scale * Float(cells))
        for b in 0..<xi.n {
            for c in 0..<xi.c {
                var sum: Int32 = 0
                for pixel in 0..<cells { sum += Int32(x[(b * cells + pixel) * xi.c + c]) }
                y[b * xi.c + c] = Requantize.level(sum - Int32(cells) * inQ.zeroPoint, multiplier: multiplier,
                                                   zeroPoint: outQ.zeroPoint, clamp: 0...maxLevel)
            }
        }
    }

    /// The output level of an average: real = si · (sum − cells · zi) / divisor, quantized to the output.
    @inline(__always)
    static func averageLevel(sum: Int32, cells: Int, divisor: Int, _ inQ: Quantization, _ outQ: Quantization,
                             maxLevel: Int32) -> UInt8 {
        let real = inQ.scale * Float(sum - Int32(cells) * inQ.zeroPoint) / Float(divisor)
        return Requantize.quantize(real, outQ, maxLevel: maxLevel)
    }

    /// Calls `body(image, oy, ox, rows, columns)` with the in-bounds rows and columns of every window.
    static func forEachWindow(_ p: PoolWindow, _ xi: Image, _ yi: Image,
                              _ body: (Int, Int, Int, Range<Int>, Range<Int>) -> Void) {
        for b in 0..<xi.n {
            for oy in 0..<yi.h {
                let y0 = oy * p.strides[0] - p.pads[0]
                let rows = max(y0, 0)..<max(min(y0 + p.kernel[0], xi.h), max(y0, 0))
                for ox in 0..<yi.w {
                    let x0 = ox * p.strides[1] - p.pads[1]
                    let columns = max(x0, 0)..<max(min(x0 + p.kernel[1], xi.w), max(x0, 0))
                    body(b, oy, ox, rows, columns)
                }
            }
        }
    }

    /// Window size counting padding but not cells beyond it (count_include_pad).
    static func paddedCount(_ p: PoolWindow, oy: Int, ox: Int, _ xi: Image) -> Int {
        let y0 = oy * p.strides[0] - p.pads[0], x0 = ox * p.strides[1] - p.pads[1]
        let rows = min(y0 + p.kernel[0], xi.h + p.pads[2]) - y0
        let columns = min(x0 + p.kernel[1], xi.w + p.pads[3]) - x0
        return max(rows, 0) * max(columns, 0)
    }

    /// Memory offset of logical (NCHW-order) element `i` of one sample of a tensor of `shape` (NHWC if 4-D).
    @inline(__always)
    static func memoryOffset(_ i: Int, _ shape: [Int]) -> Int {
        guard shape.count == 4 else { return i }
        let plane = shape[2] * shape[3]
        return (i % plane) * shape[1] + i / plane
    }
}
