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

    /// Max pooling walked row by row: for each window row and kernel column, one pass along the output row, so that
    /// neighbouring outputs are independent (a per-window maximum is a chain of dependent compares).
    @inline(__always)
    private static func maxPool(_ x: Tensor, _ a: PoolAttributes, winners: Bool) -> (output: Tensor, winners: [Int32]) {
        let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let shape = try! Op.maxPool(a).outputShape(inputShapes: [x.shape])
        let (oh, ow) = (shape[2], shape[3])
        let g = PoolGeometry(a, height: h, width: w)
        let planes = n * c, count = planes * oh * ow
        // Output columns whose input column for kernel column kj is in bounds, per kj.
        let columns = (0..<g.kernelW).map { kj -> Range<Int> in
            let offset = kj * g.dilationW - g.padLeft  // input column = ox · strideW + offset
            let low = offset >= 0 ? 0 : (-offset + g.strideW - 1) / g.strideW
            let high = w - 1 - offset < 0 ? 0 : (w - 1 - offset) / g.strideW + 1
            return min(low, ow)..<max(min(high, ow), min(low, ow))
        }
        let rows = (0..<oh).map { PoolSpan(start: $0 * g.strideH - g.padTop, kernel: g.kernelH, dilation: g.dilationH,
                                           size: h) }
        // Each output column's first in-bounds input column (−1 if none): a window's winner until a larger cell
        // comes, so that the loop below needs one compare (an all −∞ window still sends its gradient somewhere).
        let firstColumns = (0..<ow).map { ox in
            PoolSpan(start: ox * g.strideW - g.padLeft, kernel: g.kernelW, dilation: g.dilationW, size: w)
        }.map { $0.count > 0 ? $0.first : -1 }
        var indices = [Int32](repeating: -1, count: winners ? count : 0)
        let out = [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
            x.scalars.withUnsafeBufferPointer { xp in
                indices.withUnsafeMutableBufferPointer { ip in
                    let (source, target) = (UnsafeSendablePointer(xp.baseAddress!), UnsafeMutableSendablePointer(buffer.baseAddress!))
                    // (An empty array may still have a base address: the flag decides.)
                    let chosen = winners ? ip.baseAddress.map(UnsafeMutableSendablePointer.init) : nil
                    Parallel.forEachChunk(planes, grain: max(1, 4096 / max(oh * ow, 1))) { range in
                        let gathered = UnsafeMutableSendablePointer(UnsafeMutablePointer<Float>.allocate(capacity: max(ow, 1)))
                        defer { gathered.pointer.deallocate() }
                        for plane in range {
                            let src = source.pointer + plane * h * w
                            for oy in 0..<oh {
                                let cell = (plane * oh + oy) * ow
                                let outRow = target.pointer + cell
                                outRow.initialize(repeating: -Float.infinity, count: ow)
                                let winnerRow = chosen.map { $0.pointer + cell }
                                if let winnerRow, rows[oy].count > 0 {
                                    for ox in 0..<ow where firstColumns[ox] >= 0 {
                                        winnerRow[ox] = Int32(truncatingIfNeeded: rows[oy].first * w + firstColumns[ox])
                                    }
                                }
                                var iy = rows[oy].first
                                for _ in 0..<rows[oy].count {
                                    let line = src + iy * w
                                    for kj in 0..<g.kernelW {
                                        let offset = kj * g.dilationW - g.padLeft
                                        let span = columns[kj]
                                        guard let first = span.first else { continue }
                                        // The candidates of this kernel cell, made contiguous for the vector compare.
                                        let candidates = g.strideW == 1 ? line + first + offset : UnsafePointer(gathered.pointer)
                                        if g.strideW != 1 {
                                            var from = line + first * g.strideW + offset
                                            for k in 0..<span.count {
                                                gathered.pointer[k] = from.pointee
                                                from += g.strideW
                                            }
                                        }
                                        if let winnerRow {
                                            let base = Int32(truncatingIfNeeded: iy * w + first * g.strideW + offset)
                                            keepLarger(candidates, outRow + first, count: span.count,
                                                       winners: winnerRow + first, base: base,
                                                       step: Int32(truncatingIfNeeded: g.strideW))
                                        } else {
                                            keepLarger(candidates, outRow + first, count: span.count)
                                        }
                                    }
                                    iy += g.dilationH
                                }
                            }
                        }
                    }
                }
            }
            initialized = count
        }
        return (Tensor(shape: shape, scalars: out), indices)
    }

    /// best[k] = max(best[k], candidates[k]) for k in 0..<count, eight at a time.
    @inline(__always)
    private static func keepLarger(_ candidates: UnsafePointer<Float>, _ best: UnsafeMutablePointer<Float>, count: Int) {
        var k = 0
        while k + 8 <= count {
            let v = UnsafeRawPointer(candidates + k).loadUnaligned(as: SIMD8<Float>.self)
            let b = UnsafeRawPointer(best + k).loadUnaligned(as: SIMD8<Float>.self)
            UnsafeMutableRawPointer(best + k).storeBytes(of: b.replacing(with: v, where: v .> b), as: SIMD8<Float>.self)
            k += 8
        }
        while k < count { best[k] = candidates[k] > best[k] ? candidates[k] : best[k]; k += 1 }
    }

    /// Where candidates[k] > best[k]: best[k] = candidates[k] and winners[k] = base + k·step; eight at a time (a
    /// scalar compare-and-select compiles to a branch, and which cell wins is unpredictable).
    @inline(__always)
    private static func keepLarger(_ candidates: UnsafePointer<Float>, _ best: UnsafeMutablePointer<Float>, count: Int,
                                   winners: UnsafeMutablePointer<Int32>, base: Int32, step: Int32) {
        var k = 0
        var codes = SIMD8<Int32>(0, 1, 2, 3, 4, 5, 6, 7) &* step &+ base
        while k + 8 <= count {
            let v = UnsafeRawPointer(candidates + k).loadUnaligned(as: SIMD8<Float>.self)
            let b = UnsafeRawPointer(best + k).loadUnaligned(as: SIMD8<Float>.self)
            let w = UnsafeRawPointer(winners + k).loadUnaligned(as: SIMD8<Int32>.self)
            let larger = v .> b
            UnsafeMutableRawPointer(best + k).storeBytes(of: b.replacing(with: v, where: larger), as: SIMD8<Float>.self)
            UnsafeMutableRawPointer(winners + k).storeBytes(of: w.replacing(with: codes, where: larger),
                                                            as: SIMD8<Int32>.self)
            codes &+= 8 &* step
            k += 8
        }
        while k < count {
            if candidates[k] > best[k] {
                best[k] = candidates[k]
                winners[k] = base &+ Int32(truncatingIfNeeded: k) &* step
            }
            k += 1
        }
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
