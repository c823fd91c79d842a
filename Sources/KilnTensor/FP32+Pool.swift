import KilnGraph

extension FP32 {
    /// 2-D max pooling of x [N, C, H, W]; padded cells never win.
    public static func maxPool(_ x: Tensor, _ a: PoolAttributes) -> Tensor {
        let w = x.shape[3]
        return pool(x, a) { window, _, plane in
            var best = -Float.infinity
            for iy in window.rows { for ix in window.columns { best = max(best, plane[iy * w + ix]) } }
            return best
        }
    }

    /// 2-D average pooling of x [N, C, H, W].
    public static func averagePool(_ x: Tensor, _ a: PoolAttributes) -> Tensor {
        let w = x.shape[3], includePad = a.countIncludePad
        return pool(x, a) { window, geometry, plane in
            var sum: Float = 0
            for iy in window.rows { for ix in window.columns { sum += plane[iy * w + ix] } }
            let count = includePad ? window.paddedCount(geometry) : window.rowCount * window.columnCount
            return count > 0 ? sum / Float(count) : 0
        }
    }

    /// Mean over H and W of x [N, C, H, W], as [N, C, 1, 1].
    public static func globalAveragePool(_ x: Tensor) -> Tensor {
        let planes = x.shape[0] * x.shape[1]
        let size = x.shape[2] * x.shape[3]
        var out = [Float](repeating: 0, count: planes)
        x.scalars.withUnsafeBufferPointer { xp in
            for plane in 0..<planes {
                var sum: Float = 0
                for i in 0..<size { sum += xp[plane * size + i] }
                out[plane] = sum / Float(size)
            }
        }
        return Tensor(shape: [x.shape[0], x.shape[1], 1, 1], scalars: out)
    }

    /// Shared window walk of the pooling ops; `reduce` sees the in-bounds parts of one window.
    private static func pool(_ x: Tensor, _ a: PoolAttributes,
                             _ reduce: (PoolWindow, PoolGeometry, UnsafeBufferPointer<Float>) -> Float) -> Tensor {
        let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let shape = try! Op.maxPool(a).outputShape(inputShapes: [x.shape])
        let geometry = PoolGeometry(a, height: h, width: w)
        var out = [Float](repeating: 0, count: n * c * shape[2] * shape[3])
        x.scalars.withUnsafeBufferPointer { xp in
            out.withUnsafeMutableBufferPointer { op in
                let result = UncheckedSendable(op)
                forEachPoolWindow(planes: n * c, oh: shape[2], ow: shape[3], geometry) { plane, cell, window in
                    result.value[cell] = reduce(window, geometry, UnsafeBufferPointer(rebasing: xp[(plane * h * w)..<((plane + 1) * h * w)]))
                }
            }
        }
        return Tensor(shape: shape, scalars: out)
    }

    /// Calls `body(plane, cell, window)` for every output cell (index `cell` of the [planes][oh][ow] output) of a
    /// pooling op, planes in parallel: a call may write only into its own plane.
    @inline(__always)
    static func forEachPoolWindow(planes: Int, oh: Int, ow: Int, _ geometry: PoolGeometry,
                                  _ body: (_ plane: Int, _ cell: Int, _ window: PoolWindow) -> Void) {
        Parallel.forEachChunk(planes, grain: max(1, 4096 / max(oh * ow, 1))) { range in
            for plane in range {
                for oy in 0..<oh {
                    for ox in 0..<ow { body(plane, (plane * oh + oy) * ow + ox, PoolWindow(oy: oy, ox: ox, geometry)) }
                }
            }
        }
    }
}

/// A pooling op's window geometry as plain integers, read once per op (the attributes hold arrays, which the
/// per-window walk must not copy).
struct PoolGeometry {
    let kernelH: Int, kernelW: Int, strideH: Int, strideW: Int, dilationH: Int, dilationW: Int
    let padTop: Int, padLeft: Int, padBottom: Int, padRight: Int
    let height: Int, width: Int

    init(_ a: PoolAttributes, height: Int, width: Int) {
        (kernelH, kernelW, strideH, strideW) = (a.kernel[0], a.kernel[1], a.strides[0], a.strides[1])
        (dilationH, dilationW) = (a.dilations[0], a.dilations[1])
        (padTop, padLeft, padBottom, padRight) = (a.pads[0], a.pads[1], a.pads[2], a.pads[3])
        (self.height, self.width) = (height, width)
    }
}

/// The input cells of one pooling window: the in-bounds rows and columns (strided by the dilation), without
/// allocating.
struct PoolWindow {
    let rows: StrideTo<Int>
    let columns: StrideTo<Int>
    let rowCount: Int, columnCount: Int
    let rowStart: Int, columnStart: Int

    init(oy: Int, ox: Int, _ g: PoolGeometry) {
        rowStart = oy * g.strideH - g.padTop
        columnStart = ox * g.strideW - g.padLeft
        (rows, rowCount) = PoolWindow.inBounds(start: rowStart, kernel: g.kernelH, dilation: g.dilationH, size: g.height)
        (columns, columnCount) = PoolWindow.inBounds(start: columnStart, kernel: g.kernelW, dilation: g.dilationW, size: g.width)
    }

    /// Positions start + k·dilation (k in 0..<kernel) within 0..<size, and how many there are.
    private static func inBounds(start: Int, kernel: Int, dilation: Int, size: Int) -> (StrideTo<Int>, Int) {
        // First k with start + k·d ≥ 0 and first k with start + k·d ≥ size, both clamped to 0…kernel.
        let first = start >= 0 ? 0 : min(kernel, (-start + dilation - 1) / dilation)
        let end = start >= size ? 0 : min(kernel, (size - start + dilation - 1) / dilation)
        let count = max(0, end - first)
        return (stride(from: start + first * dilation, to: start + (first + count) * dilation, by: dilation), count)
    }

    /// Window size counting padding cells but not cells beyond the padding (count_include_pad).
    func paddedCount(_ g: PoolGeometry) -> Int {
        let rowEnd = min(rowStart + g.kernelH, g.height + g.padBottom)
        let columnEnd = min(columnStart + g.kernelW, g.width + g.padRight)
        return max(0, rowEnd - rowStart) * max(0, columnEnd - columnStart)
    }
}
