import KilnGraph

/// The differentiable ops: each forward next to its one backward rule.
extension Tape {
    // MARK: - Layers

    /// 2-D convolution; gradients to input, weight and bias.
    public func conv2d(_ x: Variable, _ w: Variable, _ b: Variable?, _ a: ConvAttributes) -> Variable {
        // A weight no gradient is wanted for is a frozen model's (the teacher in synthesis): oneDNN keeps its
        // reordered copy across steps.
        let constant = !w.requiresGradient
        let y = FP32.conv2d(x.value, weight: w.value, bias: b?.value, a, constantWeight: constant)
        let (xv, wv) = (x.value, w.value)
        return record(y, inputs: [x, w] + (b.map { [$0] } ?? [])) { dy, needs in
            let g = FP32.conv2dBackward(xv, weight: wv, a, gradient: dy, input: needs[0], weight: needs[1],
                                        bias: needs.count > 2 && needs[2], constantWeight: constant)
            return [g.input, g.weight] + (needs.count > 2 ? [g.bias] : [])
        }
    }

    /// Batch normalization with frozen running statistics (inference behaviour); gradients to x, scale and bias.
    public func batchNorm(_ x: Variable, scale: Variable, bias: Variable, mean: Tensor, variance: Tensor,
                          epsilon: Float) -> Variable {
        let y = FP32.batchNorm(x.value, scale: scale.value, bias: bias.value, mean: mean, variance: variance, epsilon: epsilon)
        let xv = x.value, gamma = scale.value.scalars
        let inverse = variance.scalars.map { 1 / ($0 + epsilon).squareRoot() }
        return record(y, inputs: [x, scale, bias]) { dy, needs in
            let (outer, channels, inner) = FP32.split(xv.shape, at: 1)
            var dx: Tensor?
            if needs[0] {
                dx = FP32.mapPlanes(dy, outer: outer, channels: channels, inner: inner) { c, source, target, count in
                    let factor = gamma[c] * inverse[c]
                    for i in 0..<count { target[i] = source[i] * factor }
                }
            }
            guard needs[1] || needs[2] else { return [dx, nil, nil] }
            let (sumD, sumDX) = FP32.channelSums(dy, times: xv)
            let dGamma = (0..<channels).map { (sumDX[$0] - mean.scalars[$0] * sumD[$0]) * inverse[$0] }
            return [dx, Tensor(shape: [channels], scalars: dGamma), Tensor(shape: [channels], scalars: sumD)]
        }
    }

    /// Batch normalization with the batch's own per-channel statistics (training behaviour), differentiated
    /// through the mean and variance; `scale`/`bias` nil means no affine transform.
    public func batchNormTraining(_ x: Variable, scale: Variable?, bias: Variable?, epsilon: Float) -> Variable {
        let (mean, variance) = FP32.channelMoments(x.value)
        let (outer, channels, inner) = FP32.split(x.shape, at: 1)
        let inverse = variance.map { 1 / ($0 + epsilon).squareRoot() }
        let normalized = FP32.mapPlanes(x.value, outer: outer, channels: channels, inner: inner) { c, source, target, n in
            let (mu, k) = (mean[c], inverse[c])
            for i in 0..<n { target[i] = (source[i] - mu) * k }
        }
        var y = normalized
        if let scale, let bias {
            let (g, b) = (scale.value.scalars, bias.value.scalars)
            y = FP32.mapPlanes(normalized, outer: outer, channels: channels, inner: inner) { c, source, target, n in
                let (gc, bc) = (g[c], b[c])
                for i in 0..<n { target[i] = source[i] * gc + bc }
            }
        }
        let gamma = scale?.value.scalars ?? [Float](repeating: 1, count: channels)
        let count = Float(outer * inner)
        let inputs = [x] + (scale.map { [$0] } ?? []) + (bias.map { [$0] } ?? [])
        return record(y, inputs: inputs) { dy, needs in
            let (dBeta, dGamma) = FP32.channelSums(dy, times: normalized)
            var dx: Tensor?
            if needs[0] {
                // dx = γ/σ · (dy − mean(dy) − x̂ · mean(dy · x̂))
                dx = dy.scalars.withUnsafeBufferPointer { dp in
                    normalized.scalars.withUnsafeBufferPointer { np in
                        let (d, h) = (dp.baseAddress.map(UnsafeSendablePointer.init), np.baseAddress.map(UnsafeSendablePointer.init))
                        return FP32.makePlanes(normalized.shape, outer: outer, channels: channels, inner: inner) { c, offset, target, n in
                            let (meanDy, meanDyX, factor) = (dBeta[c] / count, dGamma[c] / count, gamma[c] * inverse[c])
                            let (g, xh) = (d!.pointer + offset, h!.pointer + offset)
                            for i in 0..<n { target[i] = factor * (g[i] - meanDy - xh[i] * meanDyX) }
                        }
                    }
                }
            }
            var result: [Tensor?] = [dx]
            if needs.count > 1 {
                result.append(Tensor(shape: [channels], scalars: dGamma))
                result.append(Tensor(shape: [channels], scalars: dBeta))
            }
            return result
        }
    }

    /// A pointwise activation.
    public func activation(_ x: Variable, _ f: Activation) -> Variable {
        let y = FP32.activation(x.value, f)
        let xv = x.value
        return record(y, inputs: [x]) { dy, _ in
            // One pass: dy and the forward tensors read, the gradient written into a fresh tensor (no copy of dy).
            let count = dy.count
            guard count > 0 else { return [dy] }
            let scalars = [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
                dy.scalars.withUnsafeBufferPointer { gradientBuffer in
                    xv.scalars.withUnsafeBufferPointer { inputBuffer in
                        y.scalars.withUnsafeBufferPointer { outputBuffer in
                            let (results, gradients, inputs, outputs) = (UnsafeMutableSendablePointer(buffer.baseAddress!),
                                                                         UnsafeSendablePointer(gradientBuffer.baseAddress!),
                                                                         UnsafeSendablePointer(inputBuffer.baseAddress!),
                                                                         UnsafeSendablePointer(outputBuffer.baseAddress!))
                            Parallel.forEachSlice(count) { indices in
                            let (d, g, input, output) = (results.pointer, gradients.pointer, inputs.pointer, outputs.pointer)
                            switch f {
                            // g[i] is read before the select so that the loops vectorize (a conditional load
                            // compiles to a branch per element).
                            case .relu:
                                for i in indices { let gi = g[i]; d[i] = input[i] <= 0 ? 0 : gi }
                            case .clip(let lo, let hi):
                                for i in indices { let gi = g[i], v = input[i]; d[i] = v <= lo || v >= hi ? 0 : gi }
                            case .leakyRelu(let alpha):
                                for i in indices { let gi = g[i]; d[i] = input[i] < 0 ? gi * alpha : gi }
                            case .sigmoid:
                                for i in indices { d[i] = g[i] * (output[i] * (1 - output[i])) }
                            case .tanh:
                                for i in indices { d[i] = g[i] * (1 - output[i] * output[i]) }
                            case .hardSigmoid(let alpha, let beta):
                                for i in indices {
                                    let u = alpha * input[i] + beta
                                    d[i] = u > 0 && u < 1 ? g[i] * alpha : 0
                                }
                            case .hardSwish:
                                for i in indices {
                                    let v = input[i]
                                    d[i] = g[i] * (v <= -3 ? 0 : v >= 3 ? 1 : (2 * v + 3) / 6)
                                }
                            case .silu:
                                for i in indices {
                                    let s = 1 / (1 + exponential(-input[i]))
                                    d[i] = g[i] * (s * (1 + input[i] * (1 - s)))
                                }
                            case .gelu:
                                for i in indices {
                                    let v = input[i]
                                    let cdf = 0.5 * (1 + errorFunction(v * 0.70710678118654752))
                                    d[i] = g[i] * (cdf + v * 0.39894228040143268 * exponential(-0.5 * v * v))
                                }
                            case .elu(let alpha):
                                for i in indices { d[i] = input[i] <= 0 ? g[i] * (output[i] + alpha) : g[i] }
                            case .softplus:
                                for i in indices { d[i] = g[i] * (1 / (1 + exponential(-input[i]))) }
                            case .erf:
                                for i in indices { d[i] = g[i] * (1.1283791670955126 * exponential(-input[i] * input[i])) }
                            case .squareRoot:
                                for i in indices { d[i] = g[i] * (0.5 / output[i]) }
                            }
                            }
                        }
                    }
                }
                initialized = count
            }
            return [Tensor(shape: dy.shape, scalars: scalars)]
        }
    }

    /// Broadcasting add, sub, mul or div.
    public func binary(_ a: Variable, _ b: Variable, _ op: BinaryOp) -> Variable {
        let y = FP32.binary(a.value, b.value, op)
        let (av, bv) = (a.value, b.value)
        return record(y, inputs: [a, b]) { dy, needs in
            func broadcast(_ t: Tensor) -> [Float] {
                t.shape == dy.shape ? t.scalars : TensorLayout.expand(t.scalars, from: t.shape, to: dy.shape)
            }
            var da: Tensor?, db: Tensor?
            switch op {
            case .add:
                if needs[0] { da = FP32.sumToShape(dy, av.shape) }
                if needs[1] { db = FP32.sumToShape(dy, bv.shape) }
            case .sub:
                if needs[0] { da = FP32.sumToShape(dy, av.shape) }
                if needs[1] { db = FP32.sumToShape(Tensor(shape: dy.shape, scalars: dy.scalars.map { -$0 }), bv.shape) }
            case .mul:
                if needs[0] { da = FP32.sumToShape(Tensor(shape: dy.shape, scalars: zip(dy.scalars, broadcast(bv)).map(*)), av.shape) }
                if needs[1] { db = FP32.sumToShape(Tensor(shape: dy.shape, scalars: zip(dy.scalars, broadcast(av)).map(*)), bv.shape) }
            case .div:
                let bb = broadcast(bv)
                if needs[0] { da = FP32.sumToShape(Tensor(shape: dy.shape, scalars: zip(dy.scalars, bb).map(/)), av.shape) }
                if needs[1] {
                    let aa = broadcast(av)
                    db = FP32.sumToShape(Tensor(shape: dy.shape, scalars: (0..<dy.count).map { -dy.scalars[$0] * aa[$0] / (bb[$0] * bb[$0]) }), bv.shape)
                }
            }
            return [da, db]
        }
    }

    /// 2-D max pooling.
    public func maxPool(_ x: Variable, _ a: PoolAttributes) -> Variable {
        let (y, winners) = FP32.maxPoolWithWinners(x.value, a)
        let shape = x.shape
        return record(y, inputs: [x]) { dy, _ in [FP32.maxPoolBackward(inputShape: shape, winners: winners, gradient: dy)] }
    }

    /// 2-D average pooling.
    public func averagePool(_ x: Variable, _ a: PoolAttributes) -> Variable {
        let shape = x.shape
        return record(FP32.averagePool(x.value, a), inputs: [x]) { dy, _ in
            [FP32.averagePoolBackward(inputShape: shape, a, gradient: dy)]
        }
    }

    /// Mean over H and W, as [N, C, 1, 1].
    public func globalAveragePool(_ x: Variable) -> Variable {
        let shape = x.shape
        return record(FP32.globalAveragePool(x.value), inputs: [x]) { dy, _ in
            [FP32.globalAveragePoolBackward(dy, inputShape: shape)]
        }
    }

    /// Mean over `axes`.
    public func reduceMean(_ x: Variable, axes: [Int], keepDims: Bool) -> Variable {
        let shape = x.shape
        let kept = shape.indices.map { axes.contains($0) ? 1 : shape[$0] }
        let count = Float(axes.reduce(1) { $0 * shape[$1] })
        return record(FP32.reduceMean(x.value, axes: axes, keepDims: keepDims), inputs: [x]) { dy, _ in
            let spread = TensorLayout.expand(dy.scalars, from: kept, to: shape)
            return [Tensor(shape: shape, scalars: spread.map { $0 / count })]
        }
    }

    /// Matrix product with broadcast leading dimensions.
    public func matMul(_ a: Variable, _ b: Variable) -> Variable {
        let (av, bv) = (a.value, b.value)
        return record(FP32.matMul(av, bv), inputs: [a, b]) { dy, needs in
            // dA = dY · Bᵀ and dB = Aᵀ · dY with the transposes left to sgemm: a generator's linear layer has 10⁸
            // weights, and a transposed copy of them cost more than the product.
            let da = needs[0] ? FP32.sumToShape(FP32.matMul(dy, bv, transposeB: true), av.shape) : nil
            let db = needs[1] ? FP32.sumToShape(FP32.matMul(av, dy, transposeA: true), bv.shape) : nil
            return [da, db]
        }
    }

    /// Same elements, new (concrete) shape.
    public func reshape(_ x: Variable, _ shape: [Int]) -> Variable {
        let original = x.shape
        return record(x.value.reshaped(to: shape), inputs: [x]) { dy, _ in [dy.reshaped(to: original)] }
    }

    /// Dimension permutation.
    public func transpose(_ x: Variable, perm: [Int]) -> Variable {
        let (values, shape) = TensorLayout.transpose(x.value.scalars, shape: x.shape, perm: perm)
        var inverse = [Int](repeating: 0, count: perm.count)
        for (i, p) in perm.enumerated() { inverse[p] = i }
        return record(Tensor(shape: shape, scalars: values), inputs: [x]) { dy, _ in
            let (back, original) = TensorLayout.transpose(dy.scalars, shape: dy.shape, perm: inverse)
            return [Tensor(shape: original, scalars: back)]
        }
    }

    /// Join along `axis`.
    public func concat(_ xs: [Variable], axis: Int) -> Variable {
        let (values, shape) = TensorLayout.concat(xs.map { ($0.value.scalars, $0.shape) }, axis: axis)
        let shapes = xs.map(\.shape)
        return record(Tensor(shape: shape, scalars: values), inputs: xs) { dy, needs in
            var start = 0
            return shapes.enumerated().map { index, part in
                defer { start += part[axis] }
                guard needs[index] else { return nil }
                var starts = [Int](repeating: 0, count: part.count)
                starts[axis] = start
                return Tensor(shape: part, scalars: TensorLayout.slice(dy.scalars, shape: dy.shape, starts: starts,
                                                                       counts: part, steps: [Int](repeating: 1, count: part.count)))
            }
        }
    }

    /// Strided slice (crop).
    public func slice(_ x: Variable, _ a: SliceAttributes) -> Variable {
        let shape = x.shape
        let y = Tensor(shape: a.counts, scalars: TensorLayout.slice(x.value.scalars, shape: shape, starts: a.starts,
                                                                    counts: a.counts, steps: a.steps))
        return record(y, inputs: [x]) { dy, _ in [FP32.sliceBackward(dy, inputShape: shape, a)] }
    }

    /// Constant, reflect or edge padding.
    public func pad(_ x: Variable, _ a: PadAttributes) -> Variable {
        let shape = x.shape
        return record(FP32.pad(x.value, a), inputs: [x]) { dy, _ in [FP32.padBackward(dy, inputShape: shape, a)] }
    }

    /// Bilinear resize.
    public func resizeLinear(_ x: Variable, height: Int, width: Int, coordinates: ResizeCoordinates) -> Variable {
        let shape = x.shape
        return record(FP32.resizeLinear(x.value, height: height, width: width, coordinates: coordinates), inputs: [x]) { dy, _ in
            [FP32.resizeLinearBackward(dy, inputShape: shape, coordinates: coordinates)]
        }
    }

    /// Zeros inserted between pixels (the first half of a transposed convolution).
    public func insertZeros(_ x: Variable, strideH: Int, strideW: Int) -> Variable {
        let shape = x.shape
        return record(FP32.insertZeros(x.value, strideH: strideH, strideW: strideW), inputs: [x]) { dy, _ in
            [FP32.insertZerosBackward(dy, inputShape: shape, strideH: strideH, strideW: strideW)]
        }
    }

    /// Nearest-neighbour upsampling by integer factors.
    public func upsampleNearest(_ x: Variable, scaleH: Int, scaleW: Int) -> Variable {
        let shape = x.shape
        return record(FP32.upsampleNearest(x.value, scaleH: scaleH, scaleW: scaleW), inputs: [x]) { dy, _ in
            [FP32.upsampleNearestBackward(dy, inputShape: shape, scaleH: scaleH, scaleW: scaleW)]
        }
    }

    /// Softmax along `axis`.
    public func softmax(_ x: Variable, axis: Int) -> Variable {
        let y = FP32.softmax(x.value, axis: axis)
        return record(y, inputs: [x]) { dy, _ in [FP32.softmaxBackward(output: y, gradient: dy, axis: axis)] }
    }

    /// Entries picked along `axis` by constant indices.
    public func gather(_ x: Variable, axis: Int, indices: IntTensor) -> Variable {
        let shape = x.shape
        let positions = indices.values.map { Int($0) }
        let (values, outShape) = TensorLayout.gather(x.value.scalars, shape: shape, axis: axis, indices: positions,
                                                     indicesShape: indices.shape)
        return record(Tensor(shape: outShape, scalars: values), inputs: [x]) { dy, _ in
            let (outer, size, inner) = FP32.split(shape, at: axis)
            var dx = [Float](repeating: 0, count: shape.elementCount)
            for o in 0..<outer {
                for (k, index) in positions.enumerated() {
                    for i in 0..<inner { dx[(o * size + index) * inner + i] += dy.scalars[(o * positions.count + k) * inner + i] }
                }
            }
            return [Tensor(shape: shape, scalars: dx)]
        }
    }
}
