import KilnGraph

extension FP32 {
    /// 2-D max pooling of x [N, C, H, W]; padded cells never win.
    public static func maxPool(_ x: Tensor, _ a: PoolAttributes) -> Tensor {
        let w = x.shape[3]
        return pool(x, a) { window, plane in
            var best = -Float.infinity
            for iy in window.rows { for ix in window.columns { best = max(best, plane[iy * w + ix]) } }
            return best
        }
    }

    /// 2-D average pooling of x [N, C, H, W].
    public static func averagePool(_ x: Tensor, _ a: PoolAttributes) -> Tensor {
        let (h, w) = (x.shape[2], x.shape[3])
        return pool(x, a) { window, plane in
            var sum: Float = 0
            for iy in window.rows { for ix in window.columns { sum += plane[iy * w + ix] } }
            let count = a.countIncludePad ? window.paddedCount(height: h, width: w, pads: a.pads)
                                          : window.rows.count * window.columns.count
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
                             _ reduce: (PoolWindow, UnsafeBufferPointer<Float>) -> Float) -> Tensor {
        let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let shape = try! Op.maxPool(a).outputShape(inputShapes: [x.shape])
        let (oh, ow) = (shape[2], shape[3])
        var out = [Float](repeating: 0, count: n * c * oh * ow)
        x.scalars.withUnsafeBufferPointer { xp in
            out.withUnsafeMutableBufferPointer { op in
                for plane in 0..<(n * c) {
                    let source = UnsafeBufferPointer(rebasing: xp[(plane * h * w)..<((plane + 1) * h * w)])
                    for oy in 0..<oh {
                        for ox in 0..<ow {
                            let window = PoolWindow(oy: oy, ox: ox, a: a, height: h, width: w)
                            op[(plane * oh + oy) * ow + ox] = reduce(window, source)
                        }
                    }
                }
            }
        }
        return Tensor(shape: shape, scalars: out)
    }
}

/// The input cells of one pooling window, as row and column index lists (dilation makes them strided).
struct PoolWindow {
    let rows: [Int]
    let columns: [Int]
    let rowStart: Int, columnStart: Int
    let a: PoolAttributes

    init(oy: Int, ox: Int, a: PoolAttributes, height: Int, width: Int) {
        self.a = a
        rowStart = oy * a.strides[0] - a.pads[0]
        columnStart = ox * a.strides[1] - a.pads[1]
        rows = PoolWindow.inBounds(start: rowStart, kernel: a.kernel[0], dilation: a.dilations[0], size: height)
        columns = PoolWindow.inBounds(start: columnStart, kernel: a.kernel[1], dilation: a.dilations[1],
                                      size: width)
    }

    private static func inBounds(start: Int, kernel: Int, dilation: Int, size: Int) -> [Int] {
        (0..<kernel).map { start + $0 * dilation }.filter { $0 >= 0 && $0 < size }
    }

    /// Window size counting padding cells but not cells beyond the padding (count_include_pad).
    func paddedCount(height: Int, width: Int, pads: [Int]) -> Int {
        let rowEnd = min(rowStart + a.kernel[0], height + pads[2])
        let columnEnd = min(columnStart + a.kernel[1], width + pads[3])
        return max(0, rowEnd - rowStart) * max(0, columnEnd - columnStart)
    }
}
