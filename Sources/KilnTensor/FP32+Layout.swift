import KilnGraph

extension FP32 {
    /// Softmax along `axis`, shifted by the maximum for stability.
    public static func softmax(_ x: Tensor, axis: Int) -> Tensor {
        let (outer, size, inner) = split(x.shape, at: axis)
        var out = x.scalars
        out.withUnsafeMutableBufferPointer { p in
            for o in 0..<outer {
                for i in 0..<inner {
                    let base = o * size * inner + i
                    var top = -Float.infinity
                    for j in 0..<size { top = max(top, p[base + j * inner]) }
                    var sum: Float = 0
                    for j in 0..<size {
                        let e = exponential(p[base + j * inner] - top)
                        p[base + j * inner] = e
                        sum += e
                    }
                    for j in 0..<size { p[base + j * inner] /= sum }
                }
            }
        }
        return Tensor(shape: x.shape, scalars: out)
    }

    /// Mean over `axes`, keeping them as size 1 or dropping them.
    public static func reduceMean(_ x: Tensor, axes: [Int], keepDims: Bool) -> Tensor {
        let kept = x.shape.indices.map { axes.contains($0) ? 1 : x.shape[$0] }
        let keptStrides = kept.strides
        // Reading an input element at index i adds it to output Σ i[d]·stride[d] over kept axes.
        let strides = x.shape.indices.map { axes.contains($0) ? 0 : keptStrides[$0] }
        var sums = [Double](repeating: 0, count: kept.elementCount)
        x.scalars.withUnsafeBufferPointer { xp in
            TensorLayout.walk(shape: x.shape, sources: [(0, strides)]) { input, offsets in
                sums[offsets[0]] += Double(xp[input])
            }
        }
        let divisor = Double(axes.reduce(1) { $0 * x.shape[$1] })
        let shape = keepDims ? kept : x.shape.indices.filter { !axes.contains($0) }.map { x.shape[$0] }
        return Tensor(shape: shape, scalars: sums.map { Float($0 / divisor) })
    }

    /// Constant, reflect or edge padding; negative amounts crop.
    public static func pad(_ x: Tensor, _ a: PadAttributes) -> Tensor {
        let shape = try! Op.pad(a).outputShape(inputShapes: [x.shape])
        var out = [Float](repeating: a.value, count: shape.elementCount)
        forEachPadSource(x.shape, a, output: shape) { o, source in out[o] = x.scalars[source] }
        return Tensor(shape: shape, scalars: out)
    }

    /// Gradient of `pad` with respect to its input: each output gradient returns to the cell it was copied from.
    public static func padBackward(_ gradient: Tensor, inputShape: [Int], _ a: PadAttributes) -> Tensor {
        var dx = [Float](repeating: 0, count: inputShape.elementCount)
        forEachPadSource(inputShape, a, output: gradient.shape) { o, source in dx[source] += gradient.scalars[o] }
        return Tensor(shape: inputShape, scalars: dx)
    }

    /// Calls `body(outputOffset, sourceOffset)` for every padded output cell copied from the input (constant
    /// fill cells are skipped).
    static func forEachPadSource(_ inputShape: [Int], _ a: PadAttributes, output shape: [Int], _ body: (Int, Int) -> Void) {
        let rank = inputShape.count
        if rank == 4, a.pads[0] == 0, a.pads[1] == 0, a.pads[4] == 0, a.pads[5] == 0 {
            spatialPadSources(inputShape, a, output: shape, body)
            return
        }
        // Per axis: the source index of each output index, or -1 for the constant fill.
        let sourceIndex: [[Int]] = (0..<rank).map { axis in
            (0..<shape[axis]).map { padSource($0, before: a.pads[axis], size: inputShape[axis], a.mode) }
        }
        let inStrides = inputShape.strides
        let total = shape.elementCount
        var index = [Int](repeating: 0, count: rank)
        for o in 0..<total {
            var source = 0
            var inside = true
            for axis in 0..<rank {
                let s = sourceIndex[axis][index[axis]]
                if s < 0 { inside = false; break }
                source += s * inStrides[axis]
            }
            if inside { body(o, source) }
            var axis = rank - 1
            while axis >= 0 {
                index[axis] += 1
                if index[axis] < shape[axis] { break }
                index[axis] = 0
                axis -= 1
            }
        }
    }

    /// The input index that output index `o` of a padded axis copies, or -1 for the constant fill.
    static func padSource(_ o: Int, before: Int, size: Int, _ mode: PadAttributes.Mode) -> Int {
        var i = o - before
        if i >= 0 && i < size { return i }
        switch mode {
        case .constant: return -1
        case .edge: return min(max(i, 0), size - 1)
        case .reflect:
            let period = 2 * (size - 1)
            if period == 0 { return 0 }
            i = ((i % period) + period) % period
            return i < size ? i : period - i
        }
    }

    /// `forEachPadSource` for padding of H and W only: per row, one source row index and a column map.
    private static func spatialPadSources(_ inputShape: [Int], _ a: PadAttributes, output shape: [Int],
                                          _ body: (Int, Int) -> Void) {
        let (planes, h, w) = (inputShape[0] * inputShape[1], inputShape[2], inputShape[3])
        let (oh, ow) = (shape[2], shape[3])
        let rows = (0..<oh).map { padSource($0, before: a.pads[2], size: h, a.mode) }
        let columns = (0..<ow).map { padSource($0, before: a.pads[3], size: w, a.mode) }
        for plane in 0..<planes {
            for oy in 0..<oh where rows[oy] >= 0 {
                let sourceRow = (plane * h + rows[oy]) * w, outputRow = (plane * oh + oy) * ow
                for ox in 0..<ow where columns[ox] >= 0 { body(outputRow + ox, sourceRow + columns[ox]) }
            }
        }
    }

    /// Nearest-neighbour upsampling of x [N, C, H, W] by integer factors.
    public static func upsampleNearest(_ x: Tensor, scaleH: Int, scaleW: Int) -> Tensor {
        let (planes, h, w) = (x.shape[0] * x.shape[1], x.shape[2], x.shape[3])
        let (oh, ow) = (h * scaleH, w * scaleW)
        let count = planes * oh * ow
        let out = [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
            x.scalars.withUnsafeBufferPointer { source in
                guard count > 0 else { return }
                let (s, d) = (UnsafeSendablePointer(source.baseAddress!), UnsafeMutableSendablePointer(buffer.baseAddress!))
                Parallel.forEachChunk(planes, grain: max(1, 65536 / max(oh * ow, 1))) { range in
                    for plane in range {
                        for iy in 0..<h {
                            let line = s.pointer + (plane * h + iy) * w
                            let first = d.pointer + (plane * oh + iy * scaleH) * ow
                            for ix in 0..<w {
                                let v = line[ix]
                                for k in 0..<scaleW { first[ix * scaleW + k] = v }
                            }
                            for k in 1..<max(scaleH, 1) { (first + k * ow).update(from: first, count: ow) }
                        }
                    }
                }
            }
            initialized = count
        }
        return Tensor(shape: [x.shape[0], x.shape[1], oh, ow], scalars: out)
    }

    /// Bilinear resize of x [N, C, H, W] to [N, C, height, width] (`ResizeCoordinates.linearTap` on each axis).
    public static func resizeLinear(_ x: Tensor, height: Int, width: Int, coordinates: ResizeCoordinates) -> Tensor {
        let (planes, h, w) = (x.shape[0] * x.shape[1], x.shape[2], x.shape[3])
        let rows = (0..<height).map { coordinates.linearTap($0, input: h, output: height) }
        let columns = (0..<width).map { coordinates.linearTap($0, input: w, output: width) }
        var out = [Float](repeating: 0, count: planes * height * width)
        for plane in 0..<planes {
            let base = plane * h * w
            for (oy, r) in rows.enumerated() {
                for (ox, c) in columns.enumerated() {
                    let a = x.scalars[base + r.first * w + c.first], b = x.scalars[base + r.first * w + c.second]
                    let d = x.scalars[base + r.second * w + c.first], e = x.scalars[base + r.second * w + c.second]
                    let top = (1 - c.fraction) * a + c.fraction * b, bottom = (1 - c.fraction) * d + c.fraction * e
                    out[(plane * height + oy) * width + ox] = (1 - r.fraction) * top + r.fraction * bottom
                }
            }
        }
        return Tensor(shape: [x.shape[0], x.shape[1], height, width], scalars: out)
    }

    /// Gradient of `resizeLinear`: each output cell's gradient goes back to its four input cells by their weights.
    public static func resizeLinearBackward(_ gradient: Tensor, inputShape: [Int], coordinates: ResizeCoordinates) -> Tensor {
        let (planes, h, w) = (inputShape[0] * inputShape[1], inputShape[2], inputShape[3])
        let (height, width) = (gradient.shape[2], gradient.shape[3])
        let rows = (0..<height).map { coordinates.linearTap($0, input: h, output: height) }
        let columns = (0..<width).map { coordinates.linearTap($0, input: w, output: width) }
        var dx = [Float](repeating: 0, count: inputShape.elementCount)
        for plane in 0..<planes {
            let base = plane * h * w
            for (oy, r) in rows.enumerated() {
                for (ox, c) in columns.enumerated() {
                    let g = gradient.scalars[(plane * height + oy) * width + ox]
                    dx[base + r.first * w + c.first] += (1 - r.fraction) * (1 - c.fraction) * g
                    dx[base + r.first * w + c.second] += (1 - r.fraction) * c.fraction * g
                    dx[base + r.second * w + c.first] += r.fraction * (1 - c.fraction) * g
                    dx[base + r.second * w + c.second] += r.fraction * c.fraction * g
                }
            }
        }
        return Tensor(shape: inputShape, scalars: dx)
    }

    /// x [N, C, H, W] spread to [N, C, (H−1)·sh + 1, (W−1)·sw + 1], zeros between its pixels (backward: the strided
    /// subsample, `insertZerosBackward`).
    public static func insertZeros(_ x: Tensor, strideH: Int, strideW: Int) -> Tensor {
        let (planes, h, w) = (x.shape[0] * x.shape[1], x.shape[2], x.shape[3])
        let (oh, ow) = ((h - 1) * strideH + 1, (w - 1) * strideW + 1)
        var out = [Float](repeating: 0, count: planes * oh * ow)
        for plane in 0..<planes {
            for y in 0..<h {
                for x0 in 0..<w { out[(plane * oh + y * strideH) * ow + x0 * strideW] = x.scalars[(plane * h + y) * w + x0] }
            }
        }
        return Tensor(shape: [x.shape[0], x.shape[1], oh, ow], scalars: out)
    }

    /// Gradient of `insertZeros`: the gradient at the cells that hold input pixels.
    public static func insertZerosBackward(_ gradient: Tensor, inputShape: [Int], strideH: Int, strideW: Int) -> Tensor {
        let (planes, h, w) = (inputShape[0] * inputShape[1], inputShape[2], inputShape[3])
        let (oh, ow) = (gradient.shape[2], gradient.shape[3])
        var dx = [Float](repeating: 0, count: inputShape.elementCount)
        for plane in 0..<planes {
            for y in 0..<h {
                for x0 in 0..<w { dx[(plane * h + y) * w + x0] = gradient.scalars[(plane * oh + y * strideH) * ow + x0 * strideW] }
            }
        }
        return Tensor(shape: inputShape, scalars: dx)
    }

    /// Sizes before, along and after `axis`.
    static func split(_ shape: [Int], at axis: Int) -> (Int, Int, Int) {
        (shape[..<axis].reduce(1, *), shape[axis], shape[(axis + 1)...].reduce(1, *))
    }
}
