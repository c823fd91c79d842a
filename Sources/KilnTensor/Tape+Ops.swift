import KilnGraph

/// The differentiable ops: each forward next to its one backward rule.
extension Tape {
    // MARK: - Layers

    /// 2-D convolution; gradients to input, weight and bias.
    public func conv2d(_ x: Variable, _ w: Variable, _ b: Variable?, _ a: ConvAttributes) -> Variable {
        let y = FP32.conv2d(x.value, weight: w.value, bias: b?.value, a)
        let (xv, wv) = (x.value, w.value)
        return record(y, inputs: [x, w] + (b.map { [$0] } ?? [])) { dy, needs in
            let g = FP32.conv2dBackward(xv, weight: wv, a, gradient: dy, input: needs[0], weight: needs[1],
                                        bias: needs.count > 2 && needs[2])
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
                var values = dy.scalars
                values.withUnsafeMutableBufferPointer { d in
                    for o in 0..<outer {
                        for c in 0..<channels {
                            let factor = gamma[c] * inverse[c]
                            let base = (o * channels + c) * inner
                            for i in base..<(base + inner) { d[i] *= factor }
                        }
                    }
                }
                dx = Tensor(shape: xv.shape, scalars: values)
            }
            guard needs[1] || needs[2] else { return [dx, nil, nil] }
            var dGamma = [Float](repeating: 0, count: channels), dBeta = [Float](repeating: 0, count: channels)
            dy.scalars.withUnsafeBufferPointer { d in
                xv.scalars.withUnsafeBufferPointer { x in
                    for o in 0..<outer {
                        for c in 0..<channels {
                            let base = (o * channels + c) * inner
                            var sumD: Float = 0, sumDX: Float = 0
                            for i in base..<(base + inner) {
                                sumD += d[i]
                                sumDX += d[i] * x[i]
                            }
                            dBeta[c] += sumD
                            dGamma[c] += (sumDX - mean.scalars[c] * sumD) * inverse[c]
                        }
                    }
                }
            }
            return [dx, Tensor(shape: [channels], scalars: dGamma), Tensor(shape: [channels], scalars: dBeta)]
        }
    }

    /// Batch normalization with the batch's own per-channel statistics (training behaviour), differentiated
    /// through the mean and variance; `scale`/`bias` nil means no affine transform.
    public func batchNormTraining(_ x: Variable, scale: Variable?, bias: Variable?, epsilon: Float) -> Variable {
        let (mean, variance) = FP32.channelMoments(x.value)
        let (outer, channels, inner) = FP32.split(x.shape, at: 1)
        let inverse = variance.map { 1 / ($0 + epsilon).squareRoot() }
        var normalized = x.value
        normalized.scalars.withUnsafeMutableBufferPointer { p in
            for o in 0..<outer { for c in 0..<channels {
                let base = (o * channels + c) * inner
                for i in base..<(base + inner) { p[i] = (p[i] - mean[c]) * inverse[c] }
            } }
        }
        var y = normalized
        if let scale, let bias {
            y.scalars.withUnsafeMutableBufferPointer { p in
                for o in 0..<outer { for c in 0..<channels {
                    let base = (o * channels + c) * inner
                    for i in base..<(base + inner) { p[i] = p[i] * scale.value.scalars[c] + bias.value.scalars[c] }
                } }
            }
        }
        let gamma = scale?.value.scalars ?? [Float](repeating: 1, count: channels)
        let count = Float(outer * inner)
        let inputs = [x] + (scale.map { [$0] } ?? []) + (bias.map { [$0] } ?? [])
        return record(y, inputs: inputs) { dy, needs in
            var dGamma = [Float](repeating: 0, count: channels), dBeta = [Float](repeating: 0, count: channels)
            for o in 0..<outer { for c in 0..<channels {
                let base = (o * channels + c) * inner
                for i in base..<(base + inner) {
                    dBeta[c] += dy.scalars[i]
                    dGamma[c] += dy.scalars[i] * normalized.scalars[i]
                }
            } }
            var dx: Tensor?
            if needs[0] {
                // dx = γ/σ · (dy − mean(dy) − x̂ · mean(dy · x̂))
                var values = [Float](repeating: 0, count: normalized.count)
                for o in 0..<outer { for c in 0..<channels {
                    let base = (o * channels + c) * inner
                    let meanDy = dBeta[c] / count, meanDyX = dGamma[c] / count
                    for i in base..<(base + inner) {
                        values[i] = gamma[c] * inverse[c] * (dy.scalars[i] - meanDy - normalized.scalars[i] * meanDyX)
                    }
                } }
                dx = Tensor(shape: normalized.shape, scalars: values)
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
            var dx = dy
            dx.scalars.withUnsafeMutableBufferPointer { buffer in
                xv.scalars.withUnsafeBufferPointer { inputBuffer in
                    y.scalars.withUnsafeBufferPointer { outputBuffer in
                        let (gradients, inputs, outputs) = (UnsafeMutableSendablePointer(buffer.baseAddress!),
                                                            UnsafeSendablePointer(inputBuffer.baseAddress!),
                                                            UnsafeSendablePointer(outputBuffer.baseAddress!))
                        Parallel.forEachSlice(buffer.count) { range in
                        let (d, input, output) = (gradients.pointer, inputs.pointer, outputs.pointer)
                        let indices = range
                        switch f {
                        case .relu:
                            for i in indices { d[i] = input[i] <= 0 ? 0 : d[i] }  // a select, not a branch
                        case .clip(let lo, let hi):
                            for i in indices { d[i] = input[i] <= lo || input[i] >= hi ? 0 : d[i] }
                        case .leakyRelu(let alpha):
                            for i in indices where input[i] < 0 { d[i] *= alpha }
                        case .sigmoid:
                            for i in indices { d[i] *= output[i] * (1 - output[i]) }
                        case .tanh:
                            for i in indices { d[i] *= 1 - output[i] * output[i] }
                        case .hardSigmoid(let alpha, let beta):
                            for i in indices {
                                let u = alpha * input[i] + beta
                                d[i] = u > 0 && u < 1 ? d[i] * alpha : 0
                            }
                        case .hardSwish:
                            for i in indices {
                                let v = input[i]
                                d[i] *= v <= -3 ? 0 : v >= 3 ? 1 : (2 * v + 3) / 6
                            }
                        }
                        }
                    }
                }
            }
            return [dx]
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
        let xv = x.value
        return record(FP32.maxPool(xv, a), inputs: [x]) { dy, _ in [FP32.maxPoolBackward(xv, a, gradient: dy)] }
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
        reduceMean(x, axes: [2, 3], keepDims: true)
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
            func swapLast(_ t: Tensor) -> Tensor {
                let rank = t.rank
                let perm = Array(0..<(rank - 2)) + [rank - 1, rank - 2]
                let (values, shape) = TensorLayout.transpose(t.scalars, shape: t.shape, perm: perm)
                return Tensor(shape: shape, scalars: values)
            }
            let da = needs[0] ? FP32.sumToShape(FP32.matMul(dy, swapLast(bv)), av.shape) : nil
            let db = needs[1] ? FP32.sumToShape(FP32.matMul(swapLast(av), dy), bv.shape) : nil
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

    // MARK: - Reductions and losses

    /// Per-channel (axis 1) mean and biased variance of x [N, C, ...] over all other axes, each [C].
    public func channelMoments(_ x: Variable) -> (mean: Variable, variance: Variable) {
        let (meanValues, varianceValues) = FP32.channelMoments(x.value)
        let xv = x.value
        let (outer, channels, inner) = FP32.split(xv.shape, at: 1)
        let count = Float(outer * inner)
        let mean = record(Tensor(shape: [channels], scalars: meanValues), inputs: [x]) { dy, _ in
            var dx = [Float](repeating: 0, count: xv.count)
            for o in 0..<outer { for c in 0..<channels {
                let base = (o * channels + c) * inner
                let share = dy.scalars[c] / count
                for i in base..<(base + inner) { dx[i] = share }
            } }
            return [Tensor(shape: xv.shape, scalars: dx)]
        }
        let variance = record(Tensor(shape: [channels], scalars: varianceValues), inputs: [x]) { dy, _ in
            var dx = [Float](repeating: 0, count: xv.count)
            for o in 0..<outer { for c in 0..<channels {
                let base = (o * channels + c) * inner
                let factor = 2 * dy.scalars[c] / count
                for i in base..<(base + inner) { dx[i] = factor * (xv.scalars[i] - meanValues[c]) }
            } }
            return [Tensor(shape: xv.shape, scalars: dx)]
        }
        return (mean, variance)
    }

    /// Sum of all elements, as a scalar.
    public func sum(_ x: Variable) -> Variable {
        let shape = x.shape
        let total = x.value.scalars.reduce(0.0) { $0 + Double($1) }
        return record(Tensor(scalar: Float(total)), inputs: [x]) { dy, _ in
            [Tensor(shape: shape, repeating: dy.scalars[0])]
        }
    }

    /// Elementwise √(x + ε).
    public func squareRoot(_ x: Variable, epsilon: Float = 0) -> Variable {
        let y = Tensor(shape: x.shape, scalars: x.value.scalars.map { ($0 + epsilon).squareRoot() })
        return record(y, inputs: [x]) { dy, _ in
            [Tensor(shape: y.shape, scalars: zip(dy.scalars, y.scalars).map { $0 / (2 * $1) })]
        }
    }

    /// x · factor.
    public func scale(_ x: Variable, by factor: Float) -> Variable {
        record(Tensor(shape: x.shape, scalars: x.value.scalars.map { $0 * factor }), inputs: [x]) { dy, _ in
            [Tensor(shape: dy.shape, scalars: dy.scalars.map { $0 * factor })]
        }
    }

    /// Mean squared error between two tensors of one shape, as a scalar.
    public func meanSquaredError(_ a: Variable, _ b: Variable) -> Variable {
        let difference = zip(a.value.scalars, b.value.scalars).map { $0 - $1 }
        let n = Float(difference.count)
        let loss = difference.reduce(0.0) { $0 + Double($1) * Double($1) } / Double(n)
        let shape = a.shape
        return record(Tensor(scalar: Float(loss)), inputs: [a, b]) { dy, needs in
            let g = difference.map { 2 * $0 * dy.scalars[0] / n }
            return [needs[0] ? Tensor(shape: shape, scalars: g) : nil,
                    needs[1] ? Tensor(shape: shape, scalars: g.map { -$0 }) : nil]
        }
    }

    /// KL(softmax(target/T) ‖ softmax(logits/T)) · T², averaged over rows of [N, classes] logits (distillation loss).
    public func klDivergence(logits: Variable, target: Variable, temperature: Float = 1) -> Variable {
        let (rows, classes) = (logits.shape[0], logits.shape[1])
        func probabilities(_ t: Tensor) -> [Float] {
            FP32.softmax(Tensor(shape: t.shape, scalars: t.scalars.map { $0 / temperature }), axis: 1).scalars
        }
        let p = probabilities(target.value), q = probabilities(logits.value)
        var loss = 0.0
        for i in 0..<(rows * classes) where p[i] > 0 { loss += Double(p[i]) * (log(Double(p[i])) - log(Double(max(q[i], 1e-30)))) }
        let factor = temperature * temperature / Float(rows)
        let shape = logits.shape
        return record(Tensor(scalar: Float(loss) * factor), inputs: [logits, target]) { dy, needs in
            // d/dlogits = (q − p) · T / N; d/dtarget = T/N · p ⊙ (log p − log q − KLrow)
            let scale = dy.scalars[0] * temperature / Float(rows)
            let dLogits = needs[0] ? Tensor(shape: shape, scalars: (0..<(rows * classes)).map { (q[$0] - p[$0]) * scale }) : nil
            var dTarget: Tensor?
            if needs[1] {
                var values = [Float](repeating: 0, count: rows * classes)
                for r in 0..<rows {
                    var row = 0.0
                    for j in 0..<classes where p[r * classes + j] > 0 {
                        row += Double(p[r * classes + j]) * (log(Double(p[r * classes + j])) - log(Double(max(q[r * classes + j], 1e-30))))
                    }
                    for j in 0..<classes {
                        let k = r * classes + j
                        let term = p[k] > 0 ? log(Double(p[k])) - log(Double(max(q[k], 1e-30))) - row : 0
                        values[k] = Float(Double(p[k]) * term) * scale
                    }
                }
                dTarget = Tensor(shape: shape, scalars: values)
            }
            return [dLogits, dTarget]
        }
    }

    // MARK: - Quantization

    /// Fake quantization with the straight-through estimator: y = s · (clamp(round(x/s) + z, lo, hi) − z); the
    /// gradient passes where x is inside the representable range and is zero outside.
    public func fakeQuantize(_ x: Variable, scale s: Float, zeroPoint z: Float, levels: ClosedRange<Float>) -> Variable {
        let xv = x.value
        let y = Tensor(shape: xv.shape, scalars: xv.scalars.map { v in
            s * (min(max((v / s).rounded(.toNearestOrEven) + z, levels.lowerBound), levels.upperBound) - z)
        })
        return record(y, inputs: [x]) { dy, _ in
            [Tensor(shape: xv.shape, scalars: zip(dy.scalars, xv.scalars).map { d, v in
                let q = (v / s).rounded(.toNearestOrEven) + z
                return q >= levels.lowerBound && q <= levels.upperBound ? d : 0
            })]
        }
    }

    /// Learned-step-size quantization (LSQ): y = s · (clamp(round(x/s) + z, lo, hi) − z) with step `step` ([1] for
    /// per-tensor, or [C] per channel along `axis`) learned. Gradients: straight-through to x inside the range;
    /// to s, (round(x/s) − x/s) inside and the clamp bound (minus z) outside, times `gradientScale`.
    /// `quantized` (QDrop) keeps the quantized value only where it is true and passes x through elsewhere.
    public func lsqQuantize(_ x: Variable, step: Variable, zeroPoint z: Float, levels: ClosedRange<Float>,
                            axis: Int = 0, gradientScale: Float = 1, quantized mask: [Bool]? = nil) -> Variable {
        let xv = x.value
        precondition(mask == nil || mask!.count == xv.count, "one QDrop choice per element")
        let perChannel = step.value.count > 1
        let (_, channels, inner) = perChannel ? FP32.split(xv.shape, at: axis) : (1, 1, xv.count)
        let steps = step.value.scalars
        let grid = LSQGrid(zeroPoint: z, levels: levels)
        let count = xv.count
        let keep = mask.map { $0.map { Float($0 ? 1 : 0) } } ?? [Float](repeating: 1, count: count)
        // Runs of elements sharing one step: the whole tensor, or each channel plane.
        let runLength = perChannel ? inner : count
        let y = [Float](unsafeUninitializedCapacity: count) { out, initialized in
            xv.scalars.withUnsafeBufferPointer { source in
                keep.withUnsafeBufferPointer { keep in
                    for start in stride(from: 0, to: count, by: runLength) {
                        let s = steps[perChannel ? (start / inner) % channels : 0]
                        grid.forward(source.baseAddress! + start, keep.baseAddress! + start, out.baseAddress! + start,
                                     count: runLength, step: s)
                    }
                }
            }
            initialized = count
        }
        let stepShape = step.shape
        return record(Tensor(shape: xv.shape, scalars: y), inputs: [x, step]) { dy, needs in
            var dx = [Float](repeating: 0, count: count)
            var ds = [Float](repeating: 0, count: steps.count)
            dy.scalars.withUnsafeBufferPointer { g in
                xv.scalars.withUnsafeBufferPointer { source in
                    keep.withUnsafeBufferPointer { keep in
                        dx.withUnsafeMutableBufferPointer { dx in
                            for start in stride(from: 0, to: count, by: runLength) {
                                let k = perChannel ? (start / inner) % channels : 0
                                ds[k] += grid.backward(source.baseAddress! + start, keep.baseAddress! + start, g.baseAddress! + start,
                                                       dx.baseAddress! + start, count: runLength, step: steps[k])
                            }
                        }
                    }
                }
            }
            return [needs[0] ? Tensor(shape: xv.shape, scalars: dx) : nil,
                    needs[1] ? Tensor(shape: stepShape, scalars: ds.map { $0 * gradientScale }) : nil]
        }
    }

    /// AdaRound's rectified sigmoid h(V) = clamp(σ(V)·(ζ − γ) + γ, 0, 1) with ζ = 1.1, γ = −0.1: soft rounding bits.
    public func rectifiedSigmoid(_ v: Variable) -> Variable {
        let (zeta, gamma): (Float, Float) = (1.1, -0.1)
        let sigma = v.value.scalars.map { 1 / (1 + exponential(-$0)) }
        let y = Tensor(shape: v.shape, scalars: sigma.map { min(max($0 * (zeta - gamma) + gamma, 0), 1) })
        return record(y, inputs: [v]) { dy, _ in
            [Tensor(shape: dy.shape, scalars: (0..<dy.count).map { i in
                let h = sigma[i] * (zeta - gamma) + gamma
                return h > 0 && h < 1 ? dy.scalars[i] * sigma[i] * (1 - sigma[i]) * (zeta - gamma) : 0
            })]
        }
    }

    /// Weights rebuilt from frozen integer floors and soft bits with a learned per-channel step (Genie-M):
    /// w = step[c] · clamp(floor + bits, lowest[c], highest[c]). Gradients to the bits (inside the range) and to
    /// the step.
    public func softQuantizedWeights(floor: Tensor, bits: Variable, step: Variable, lowest: [Float], highest: [Float]) -> Variable {
        let channels = step.value.count
        precondition(lowest.count == channels && highest.count == channels, "one level range per channel")
        let inner = floor.count / channels
        let steps = step.value.scalars, bitValues = bits.value.scalars
        let levelsValue = (0..<floor.count).map { i in
            min(max(floor.scalars[i] + bitValues[i], lowest[i / inner]), highest[i / inner])
        }
        let y = Tensor(shape: floor.shape, scalars: levelsValue.enumerated().map { $1 * steps[$0 / inner] })
        let stepShape = step.shape
        return record(y, inputs: [bits, step]) { dy, needs in
            var dBits = [Float](repeating: 0, count: floor.count), dStep = [Float](repeating: 0, count: channels)
            for i in 0..<floor.count {
                let c = i / inner
                dStep[c] += dy.scalars[i] * levelsValue[i]
                let raw = floor.scalars[i] + bitValues[i]
                if raw >= lowest[c] && raw <= highest[c] { dBits[i] = dy.scalars[i] * steps[c] }
            }
            return [needs[0] ? Tensor(shape: floor.shape, scalars: dBits) : nil,
                    needs[1] ? Tensor(shape: stepShape, scalars: dStep) : nil]
        }
    }

    /// AdaRound's rounding regulariser Σ 1 − |2h − 1|^β, pushing soft bits h to 0 or 1.
    public func roundingRegularizer(_ h: Variable, beta: Float) -> Variable {
        let hv = h.value.scalars
        let total = hv.reduce(0.0) { $0 + Double(1 - pow(abs(2 * $1 - 1), beta)) }
        return record(Tensor(scalar: Float(total)), inputs: [h]) { dy, _ in
            [Tensor(shape: h.shape, scalars: hv.map { x in
                let u = 2 * x - 1
                guard u != 0 else { return 0 }
                return -dy.scalars[0] * beta * pow(abs(u), beta - 1) * (u > 0 ? 2 : -2)
            })]
        }
    }
}

/// The LSQ forward and backward over a run of elements sharing one step, eight lanes at a time. x/s is clamped
/// just outside the levels before rounding (same result), so rounding half to even by adding and subtracting
/// 1.5·2^23 is exact.
struct LSQGrid {
    let zeroPoint: Float
    let low: Float, high: Float
    let below: Float, above: Float

    init(zeroPoint z: Float, levels: ClosedRange<Float>) {
        zeroPoint = z
        (low, high) = (levels.lowerBound, levels.upperBound)
        (below, above) = (low - z - 1, high - z + 1)
    }

    typealias Lanes = SIMD8<Float>
    static let magic = Lanes(repeating: 12_582_912)

    /// Clamped x/s and its rounding.
    @inline(__always)
    func scaled(_ x: Lanes, _ step: Float) -> (scaled: Lanes, rounded: Lanes) {
        let t = clamp(x / step, below, above)
        return (t, (t + LSQGrid.magic) - LSQGrid.magic)
    }

    /// Lane-wise clamp (the standard library's pointwise min/max are not inlined).
    @inline(__always)
    func clamp(_ x: Lanes, _ lower: Float, _ upper: Float) -> Lanes {
        var y = x
        y.replace(with: lower, where: y .< lower)
        y.replace(with: upper, where: y .> upper)
        return y
    }

    /// out = keep ? s·(clamp(round(x/s) + z) − z) : x.
    func forward(_ x: UnsafePointer<Float>, _ keep: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, count: Int, step: Float) {
        var i = 0
        while i < count {
            let n = min(8, count - i)
            let v = load(x + i, n), k = load(keep + i, n)
            let q = clamp(scaled(v, step).rounded + zeroPoint, low, high)
            var result = (q - zeroPoint) * step
            result.replace(with: v, where: k .== 0)
            store(result, out + i, n)
            i += n
        }
    }

    /// Writes dL/dx and returns dL/ds (before any gradient scale).
    func backward(_ x: UnsafePointer<Float>, _ keep: UnsafePointer<Float>, _ dy: UnsafePointer<Float>, _ dx: UnsafeMutablePointer<Float>,
                  count: Int, step: Float) -> Float {
        var stepGradient = Lanes()
        let lowLanes = Lanes(repeating: low), highLanes = Lanes(repeating: high)
        var i = 0
        while i < count {
            let n = min(8, count - i)
            let v = load(x + i, n), k = load(keep + i, n), g = load(dy + i, n)
            let (t, r) = scaled(v, step)
            let q = r + zeroPoint
            let under = q .< lowLanes, over = q .> highLanes
            let inside = .!(under .| over)
            // Inside: dx = g, ds = g·(round − scaled); outside: dx = 0, ds = g·(bound − z). Dropped: dx = g, ds = 0.
            var local = r - t
            local.replace(with: low - zeroPoint, where: under)
            local.replace(with: high - zeroPoint, where: over)
            stepGradient += k * g * local
            var pass = Lanes(repeating: 0)
            pass.replace(with: 1, where: inside)
            store(g * (k * pass + (1 - k)), dx + i, n)
            i += n
        }
        return stepGradient.sum()
    }

    @inline(__always)
    func load(_ p: UnsafePointer<Float>, _ n: Int) -> Lanes {
        if n == 8 { return UnsafeRawPointer(p).loadUnaligned(as: Lanes.self) }
        var lanes = Lanes()
        for j in 0..<n { lanes[j] = p[j] }
        return lanes
    }

    @inline(__always)
    func store(_ lanes: Lanes, _ p: UnsafeMutablePointer<Float>, _ n: Int) {
        if n == 8 {
            UnsafeMutableRawPointer(p).storeBytes(of: lanes, as: Lanes.self)
            return
        }
        for j in 0..<n { p[j] = lanes[j] }
    }
}

#if canImport(Glibc)
import Glibc
#endif
