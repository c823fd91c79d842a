import CKilnFP32
import KilnGraph

extension FP32 {
    /// 2-D max pooling of x [N, C, H, W]; padded cells never win.
    public static func maxPool(_ x: Tensor, _ a: PoolAttributes) -> Tensor {
        maxPool(x, a, winners: false).output
    }

    /// Max pooling that also returns each output's winner: the index of its first largest cell within the input
    /// plane (row-major window order; −1 for a window without an in-bounds cell). The backward pass scatters to it.
    public static func maxPoolWithWinners(_ x: Tensor, _ a: PoolAttributes) -> (output: Tensor, winners: [Int32]) {
        maxPool(x, a, winners: true)
    }

    /// Max pooling one plane and one kernel cell at a time (`kiln_max_pool_plane`, in C so that it is compiled for
    /// the machine's vector width): the cell's candidates for every output of the plane are gathered (−∞ where the
    /// cell falls in the padding), then compared with the running maxima across the whole plane — a per-window
    /// maximum is a chain of dependent compares, and a per-row pass leaves short rows (7–14 outputs) to scalar
    /// compares.
    @inline(__always)
    private static func maxPool(_ x: Tensor, _ a: PoolAttributes, winners: Bool) -> (output: Tensor, winners: [Int32]) {
        let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let shape = try! Op.maxPool(a).outputShape(inputShapes: [x.shape])
        let (oh, ow) = (shape[2], shape[3])
        let g = PoolGeometry(a, height: h, width: w)
        let planes = n * c, cells = oh * ow, count = planes * cells
        // Per kernel row and column: the output rows (columns) whose input row (column) is in bounds, as [first, end).
        let rowRanges = (0..<g.kernelH).flatMap {
            inBoundsOutputs(offset: $0 * g.dilationH - g.padTop, stride: g.strideH, size: h, outputs: oh)
        }
        let columnRanges = (0..<g.kernelW).flatMap {
            inBoundsOutputs(offset: $0 * g.dilationW - g.padLeft, stride: g.strideW, size: w, outputs: ow)
        }
        // Output (oy, ox) reads input cell oy·strideH·w + ox·strideW + the kernel cell's offset.
        let origins = (0..<cells).map { Int32(truncatingIfNeeded: ($0 / ow) * g.strideH * w + ($0 % ow) * g.strideW) }
        // Each output's first in-bounds cell (−1 if none): its winner until a larger cell comes, so that an all −∞
        // window still sends its gradient somewhere.
        let firstCells = (0..<cells).map { cell -> Int32 in
            let row = PoolSpan(start: (cell / ow) * g.strideH - g.padTop, kernel: g.kernelH, dilation: g.dilationH, size: h)
            let column = PoolSpan(start: (cell % ow) * g.strideW - g.padLeft, kernel: g.kernelW, dilation: g.dilationW,
                                  size: w)
            return row.count > 0 && column.count > 0 ? Int32(truncatingIfNeeded: row.first * w + column.first) : -1
        }
        var geometry = kiln_pool_shape(
            height: Int64(h), width: Int64(w), out_height: Int64(oh), out_width: Int64(ow), kernel_h: Int64(g.kernelH),
            kernel_w: Int64(g.kernelW), stride_h: Int64(g.strideH), stride_w: Int64(g.strideW),
            dilation_h: Int64(g.dilationH), dilation_w: Int64(g.dilationW), pad_top: Int64(g.padTop),
            pad_left: Int64(g.padLeft))
        var indices = [Int32](repeating: -1, count: winners ? count : 0)
        let out = [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
            guard count > 0 else { return }
            let tables = (rowRanges, columnRanges, origins, firstCells)
            withUnsafePointer(to: &geometry) { shapePointer in
                x.scalars.withUnsafeBufferPointer { xp in
                    indices.withUnsafeMutableBufferPointer { ip in
                        let (source, target) = (UnsafeSendablePointer(xp.baseAddress!), UnsafeMutableSendablePointer(buffer.baseAddress!))
                        // (An empty array may still have a base address: the flag decides.)
                        let chosen = winners ? ip.baseAddress.map(UnsafeMutableSendablePointer.init) : nil
                        let pool = UnsafeSendablePointer(shapePointer)
                        Parallel.forEachChunk(planes, grain: max(1, 4096 / max(cells, 1))) { range in
                            let candidates = UnsafeMutablePointer<Float>.allocate(capacity: max(cells, 1))
                            defer { candidates.deallocate() }
                            for plane in range {
                                kiln_max_pool_plane(pool.pointer, tables.0, tables.1, tables.2, tables.3,
                                                    source.pointer + plane * h * w, target.pointer + plane * cells,
                                                    chosen.map { $0.pointer + plane * cells }, candidates)
                            }
                        }
                    }
                }
            }
            initialized = count
        }
        return (Tensor(shape: shape, scalars: out), indices)
    }

    /// The outputs o in 0..<outputs whose input position o · stride + offset lies within 0..<size, as [first, end].
    private static func inBoundsOutputs(offset: Int, stride: Int, size: Int, outputs: Int) -> [Int64] {
        let low = offset >= 0 ? 0 : (-offset + stride - 1) / stride
        let high = size - 1 - offset < 0 ? 0 : (size - 1 - offset) / stride + 1
        let first = min(low, outputs)
        return [Int64(first), Int64(max(min(high, outputs), first))]
    }

    /// 2-D average pooling of x [N, C, H, W].
    public static func averagePool(_ x: Tensor, _ a: PoolAttributes) -> Tensor {
        let w = x.shape[3], includePad = a.countIncludePad
        return pool(x, a) { window, geometry, plane in
            var sum: Float = 0
            window.forEachOffset(width: w) { sum += plane[$0] }
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
    @inline(__always)
    private static func pool(_ x: Tensor, _ a: PoolAttributes,
                             _ reduce: (PoolWindow, PoolGeometry, UnsafePointer<Float>) -> Float) -> Tensor {
        let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let shape = try! Op.maxPool(a).outputShape(inputShapes: [x.shape])
        let geometry = PoolGeometry(a, height: h, width: w)
        var out = [Float](repeating: 0, count: n * c * shape[2] * shape[3])
        x.scalars.withUnsafeBufferPointer { xp in
            out.withUnsafeMutableBufferPointer { op in
                let result = UncheckedSendable(op)
                forEachPoolWindow(planes: n * c, oh: shape[2], ow: shape[3], geometry) { plane, cell, window in
                    result.value[cell] = reduce(window, geometry, UnsafePointer(xp.baseAddress! + plane * h * w))
                }
            }
        }
        return Tensor(shape: shape, scalars: out)
    }

    /// Calls `body(plane, cell, window)` for every output cell (index `cell` of the [planes][oh][ow] output) of a
    /// pooling op, planes in parallel: a call may write only into its own plane. The windows' in-bounds rows and
    /// columns are found once per op, not per cell.
    @inline(__always)
    static func forEachPoolWindow(planes: Int, oh: Int, ow: Int, _ geometry: PoolGeometry,
                                  _ body: (_ plane: Int, _ cell: Int, _ window: PoolWindow) -> Void) {
        let g = geometry
        let rows = (0..<oh).map { PoolSpan(start: $0 * g.strideH - g.padTop, kernel: g.kernelH, dilation: g.dilationH,
                                           size: g.height) }
        let columns = (0..<ow).map { PoolSpan(start: $0 * g.strideW - g.padLeft, kernel: g.kernelW,
                                              dilation: g.dilationW, size: g.width) }
        rows.withUnsafeBufferPointer { rowSpans in
            columns.withUnsafeBufferPointer { columnSpans in
                let spans = UncheckedSendable((rowSpans, columnSpans))
                Parallel.forEachChunk(planes, grain: max(1, 4096 / max(oh * ow, 1))) { range in
                    let (rowSpans, columnSpans) = spans.value
                    for plane in range {
                        var cell = plane * oh * ow
                        for oy in 0..<oh {
                            for ox in 0..<ow {
                                body(plane, cell, PoolWindow(rows: rowSpans[oy], columns: columnSpans[ox]))
                                cell += 1
                            }
                        }
                    }
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

/// One window along one axis: where it starts (padding included) and its in-bounds positions
/// first, first + dilation, … (`count` of them).
struct PoolSpan {
    let start: Int, first: Int, count: Int, dilation: Int

    /// Positions start + k·dilation (k in 0..<kernel) within 0..<size.
    init(start: Int, kernel: Int, dilation: Int, size: Int) {
        // First k with start + k·d ≥ 0 and first k with start + k·d ≥ size, both clamped to 0…kernel.
        let low = start >= 0 ? 0 : min(kernel, (-start + dilation - 1) / dilation)
        let end = start >= size ? 0 : min(kernel, (size - start + dilation - 1) / dilation)
        (self.start, self.dilation) = (start, dilation)
        count = max(0, end - low)
        first = start + low * dilation
    }
}

/// The input cells of one pooling window: its in-bounds rows and columns.
struct PoolWindow {
    let rowSpan: PoolSpan, columnSpan: PoolSpan

    init(rows: PoolSpan, columns: PoolSpan) { (rowSpan, columnSpan) = (rows, columns) }

    var rowCount: Int { rowSpan.count }
    var columnCount: Int { columnSpan.count }

    /// Calls `body(iy · width + ix)` for every in-bounds cell (iy, ix), row by row (plain counting loops: a
    /// stride sequence per cell costs more than the cell's work).
    @inline(__always)
    func forEachOffset(width: Int, _ body: (Int) -> Void) {
        var row = rowSpan.first * width
        for _ in 0..<rowSpan.count {
            var offset = row + columnSpan.first
            for _ in 0..<columnSpan.count {
                body(offset)
                offset += columnSpan.dilation
            }
            row += rowSpan.dilation * width
        }
    }

    /// Window size counting padding cells but not cells beyond the padding (count_include_pad).
    func paddedCount(_ g: PoolGeometry) -> Int {
        let rowEnd = min(rowSpan.start + g.kernelH, g.height + g.padBottom)
        let columnEnd = min(columnSpan.start + g.kernelW, g.width + g.padRight)
        return max(0, rowEnd - rowSpan.start) * max(0, columnEnd - columnSpan.start)
    }
}
