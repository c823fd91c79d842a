import Foundation
import KilnGraph
import KilnTensor
import Testing

/// Checks a tape op's backward rule against central finite differences of L = Σ r ⊙ f(inputs), r fixed random.
struct GradientCheck {
    var epsilon: Float = 1e-2
    var relativeTolerance: Double = 2e-2
    var absoluteTolerance: Double = 2e-3
    /// At most this many elements of each input are perturbed (spread evenly).
    var samples = 48

    /// Returns a description of each mismatch; empty when every checked partial derivative agrees.
    func run(_ inputs: [Tensor], differentiate: Set<Int>? = nil, seed: UInt64 = 1,
             _ f: (Tape, [Variable]) -> Variable) -> [String] {
        var rng = SplitMix(state: seed)
        let probe = f(Tape(), inputs.map { Tape().constant($0) })
        let weights = (0..<probe.value.count).map { _ in Float.random(in: -1...1, using: &rng) }
        func loss(_ values: [Tensor]) -> Double {
            let tape = Tape()
            let y = f(tape, values.map { tape.constant($0) })
            return zip(y.value.scalars, weights).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
        }
        let tape = Tape()
        let variables = inputs.map { tape.leaf($0) }
        let y = f(tape, variables)
        let analytic = tape.gradients(of: y, seed: Tensor(shape: y.shape, scalars: weights), withRespectTo: variables)
        var problems: [String] = []
        for (index, input) in inputs.enumerated() where differentiate?.contains(index) ?? true {
            guard let gradient = analytic[index] else {
                problems.append("input \(index): no gradient")
                continue
            }
            let step = max(1, input.count / samples)
            for element in stride(from: 0, to: input.count, by: step) {
                var plus = inputs, minus = inputs
                plus[index].scalars[element] += epsilon
                minus[index].scalars[element] -= epsilon
                let numeric = (loss(plus) - loss(minus)) / Double(2 * epsilon)
                let exact = Double(gradient.scalars[element])
                if abs(numeric - exact) > absoluteTolerance + relativeTolerance * max(abs(numeric), abs(exact)) {
                    problems.append("input \(index)[\(element)]: backward \(exact), finite difference \(numeric)")
                }
            }
        }
        return problems
    }
}

/// Random values in ±range whose magnitudes stay at least `gap` away from each of `kinks` (so non-smooth ops are
/// differentiable at every sample).
func awayFromKinks(_ shape: [Int], seed: UInt64, range: Float = 2, kinks: [Float] = [0], gap: Float = 0.05) -> Tensor {
    var rng = SplitMix(state: seed)
    return Tensor(shape: shape, scalars: (0..<shape.elementCount).map { _ in
        var v: Float
        repeat { v = Float.random(in: -range...range, using: &rng) } while kinks.contains { abs(v - $0) < gap }
        return v
    })
}

@Suite("backward rules against finite differences")
struct GradientTests {
    let check = GradientCheck()

    @Test("the checker itself catches a wrong backward rule")
    func checkerCatchesErrors() {
        let problems = check.run([awayFromKinks([2, 3], seed: 1)]) { tape, v in
            tape.record(v[0].value, inputs: [v[0]]) { dy, _ in [Tensor(shape: dy.shape, scalars: dy.scalars.map { $0 * 1.1 })] }
        }
        #expect(problems.count == 6)
    }

    @Test("conv2d: plain, strided+padded, grouped, depthwise with multiplier, dilated, pointwise",
          arguments: [
              ([2, 3, 5, 7], [4, 3, 3, 3], ConvAttributes(strides: [1, 1], pads: [1, 1, 1, 1])),
              ([2, 3, 7, 6], [5, 3, 3, 2], ConvAttributes(strides: [2, 3], pads: [1, 0, 2, 1])),
              ([1, 4, 6, 5], [6, 2, 3, 3], ConvAttributes(strides: [1, 1], pads: [1, 1, 1, 1], group: 2)),
              ([2, 3, 7, 7], [6, 1, 3, 3], ConvAttributes(strides: [2, 2], pads: [1, 1, 1, 1], group: 3)),
              ([1, 2, 9, 8], [3, 2, 3, 3], ConvAttributes(strides: [1, 1], pads: [2, 2, 2, 2], dilations: [2, 3])),
              ([3, 5, 4, 3], [7, 5, 1, 1], ConvAttributes()),
          ])
    func conv(_ x: [Int], _ w: [Int], _ a: ConvAttributes) {
        let inputs = [awayFromKinks(x, seed: 1), awayFromKinks(w, seed: 2), awayFromKinks([w[0]], seed: 3)]
        let problems = check.run(inputs) { tape, v in tape.conv2d(v[0], v[1], v[2], a) }
        #expect(problems.isEmpty, "\(problems.prefix(5))")
    }

    @Test("batch norm with frozen statistics")
    func batchNormFrozen() {
        let mean = awayFromKinks([3], seed: 4), variance = Tensor(shape: [3], scalars: [0.5, 1.5, 2])
        let problems = check.run([awayFromKinks([2, 3, 4, 5], seed: 1), awayFromKinks([3], seed: 2), awayFromKinks([3], seed: 3)]) { tape, v in
            tape.batchNorm(v[0], scale: v[1], bias: v[2], mean: mean, variance: variance, epsilon: 1e-5)
        }
        #expect(problems.isEmpty, "\(problems.prefix(5))")
    }

    @Test("batch norm with batch statistics, with and without affine parameters")
    func batchNormTraining() {
        let problems = check.run([awayFromKinks([3, 2, 3, 5], seed: 1), awayFromKinks([2], seed: 2), awayFromKinks([2], seed: 3)]) { tape, v in
            tape.batchNormTraining(v[0], scale: v[1], bias: v[2], epsilon: 1e-5)
        }
        #expect(problems.isEmpty, "\(problems.prefix(5))")
        let plain = check.run([awayFromKinks([4, 3, 2, 3], seed: 5)]) { tape, v in
            tape.batchNormTraining(v[0], scale: nil, bias: nil, epsilon: 1e-5)
        }
        #expect(plain.isEmpty, "\(plain.prefix(5))")
    }

    @Test("activations", arguments: [
        (Activation.relu, [Float(0)]), (.relu6, [0, 6]), (.clip(min: -1, max: 1.5), [-1, 1.5]),
        (.leakyRelu(alpha: 0.1), [0]), (.tanh, []), (.sigmoid, []), (.hardSigmoid(alpha: 0.2, beta: 0.5), [-2.5, 2.5]),
        (.hardSwish, [-3, 3]), (.silu, []), (.gelu, []), (.elu(alpha: 0.7), [0]), (.softplus, []), (.erf, []),
        (.squareRoot, []),
    ])
    func activations(_ f: Activation, _ kinks: [Float]) {
        let drawn = awayFromKinks([3, 5, 7], seed: 9, range: 7, kinks: kinks, gap: 0.05)
        // The square root is defined on positive inputs only.
        let x = f == .squareRoot ? Tensor(shape: drawn.shape, scalars: drawn.scalars.map { abs($0) + 0.5 }) : drawn
        let problems = check.run([x]) { tape, v in tape.activation(v[0], f) }
        #expect(problems.isEmpty, "\(f): \(problems.prefix(5))")
    }

    @Test("broadcasting add, sub, mul, div", arguments: BinaryOp.allCases)
    func binary(_ op: BinaryOp) {
        var b = awayFromKinks([3, 1, 4], seed: 2, range: 2, kinks: [0], gap: 0.5)
        if op != .div { b = awayFromKinks([3, 1, 4], seed: 2) }
        let problems = check.run([awayFromKinks([2, 3, 5, 4], seed: 1), b]) { tape, v in tape.binary(v[0], v[1], op) }
        #expect(problems.isEmpty, "\(op): \(problems.prefix(5))")
    }

    @Test("max, average and global average pooling")
    func pooling() {
        // Distinct values spaced well apart so the max of every window is unambiguous.
        var rng = SplitMix(state: 5)
        let x = Tensor(shape: [2, 2, 5, 6], scalars: (0..<120).map { Float($0) * 0.1 }.shuffled(using: &rng))
        let maxPool = PoolAttributes(kernel: [3, 2], strides: [2, 2], pads: [1, 0, 1, 1], ceilMode: true)
        #expect(check.run([x]) { tape, v in tape.maxPool(v[0], maxPool) }.isEmpty)
        let average = PoolAttributes(kernel: [3, 3], strides: [2, 1], pads: [1, 1, 1, 1], countIncludePad: true)
        #expect(check.run([x]) { tape, v in tape.averagePool(v[0], average) }.isEmpty)
        let exclusive = PoolAttributes(kernel: [2, 3], strides: [1, 2], pads: [0, 1, 1, 1])
        #expect(check.run([x]) { tape, v in tape.averagePool(v[0], exclusive) }.isEmpty)
        #expect(check.run([x]) { tape, v in tape.globalAveragePool(v[0]) }.isEmpty)
    }

    @Test("matrix products, 2-D and batched with broadcasting")
    func matMul() {
        #expect(check.run([awayFromKinks([3, 5], seed: 1), awayFromKinks([5, 4], seed: 2)]) { tape, v in tape.matMul(v[0], v[1]) }.isEmpty)
        let problems = check.run([awayFromKinks([2, 3, 5], seed: 1), awayFromKinks([5, 2], seed: 2)]) { tape, v in tape.matMul(v[0], v[1]) }
        #expect(problems.isEmpty, "\(problems.prefix(5))")
    }

    @Test("matrix products with transposed operands equal products of explicit transposes (row-split and batched)")
    func matMulTransposed() {
        func transposed(_ t: Tensor) -> Tensor {
            let rank = t.rank
            let (values, shape) = TensorLayout.transpose(t.scalars, shape: t.shape,
                                                         perm: Array(0..<(rank - 2)) + [rank - 1, rank - 2])
            return Tensor(shape: shape, scalars: values)
        }
        // (a as stored, b as stored): 2-D with enough rows to split across threads, then batched with broadcasting.
        let cases: [([Int], [Int])] = [([9, 7], [7, 5]), ([2, 3, 6, 4], [4, 5]), ([3, 4], [2, 4, 6])]
        for (index, (aShape, bShape)) in cases.enumerated() {
            let a = awayFromKinks(aShape, seed: UInt64(10 + index)), b = awayFromKinks(bShape, seed: UInt64(20 + index))
            let plain = FP32.matMul(a, b)
            for (ta, tb) in [(true, false), (false, true), (true, true)] {
                let got = FP32.matMul(ta ? transposed(a) : a, tb ? transposed(b) : b, transposeA: ta, transposeB: tb)
                #expect(got.shape == plain.shape, "case \(index) \(ta) \(tb)")
                let worst = zip(got.scalars, plain.scalars).map { abs($0 - $1) }.max() ?? 0
                #expect(worst < 1e-5, "case \(index), transposed a \(ta) b \(tb): max difference \(worst)")
            }
        }
    }

    @Test("layout ops: reshape, transpose, concat, slice, gather")
    func layout() {
        let x = awayFromKinks([2, 3, 4], seed: 1)
        #expect(check.run([x]) { tape, v in tape.reshape(v[0], [6, 4]) }.isEmpty)
        #expect(check.run([x]) { tape, v in tape.transpose(v[0], perm: [2, 0, 1]) }.isEmpty)
        #expect(check.run([x, awayFromKinks([2, 2, 4], seed: 2)]) { tape, v in tape.concat(v, axis: 1) }.isEmpty)
        let crop = SliceAttributes(starts: [1, 2, 0], counts: [1, 2, 2], steps: [1, -1, 2])
        #expect(check.run([x]) { tape, v in tape.slice(v[0], crop) }.isEmpty)
        #expect(check.run([x]) { tape, v in tape.gather(v[0], axis: 2, indices: IntTensor(shape: [3], values: [3, 0, 3])) }.isEmpty)
    }

    @Test("padding (constant, reflect, edge), nearest upsampling, zero insertion and bilinear resize", arguments: [PadAttributes.Mode.constant, .reflect, .edge])
    func padding(_ mode: PadAttributes.Mode) {
        let x = awayFromKinks([1, 2, 4, 5], seed: 3)
        let a = PadAttributes(pads: [0, 0, 1, 2, 0, 0, 2, 1], mode: mode, value: 0.5)
        let problems = check.run([x]) { tape, v in tape.pad(v[0], a) }
        #expect(problems.isEmpty, "\(mode): \(problems.prefix(5))")
        #expect(check.run([x]) { tape, v in tape.upsampleNearest(v[0], scaleH: 2, scaleW: 2) }.isEmpty)
        #expect(check.run([x]) { tape, v in tape.insertZeros(v[0], strideH: 2, strideW: 3) }.isEmpty)
        for coordinates in ResizeCoordinates.allCases {
            #expect(check.run([x]) { tape, v in tape.resizeLinear(v[0], height: 7, width: 3, coordinates: coordinates) }.isEmpty, "\(coordinates)")
        }
    }

    @Test("softmax, means, variances, sums, square roots")
    func reductions() {
        let x = awayFromKinks([3, 4, 2, 3], seed: 4)
        #expect(check.run([x]) { tape, v in tape.softmax(v[0], axis: 1) }.isEmpty)
        #expect(check.run([x]) { tape, v in tape.reduceMean(v[0], axes: [0, 2], keepDims: false) }.isEmpty)
        #expect(check.run([x]) { tape, v in tape.channelMoments(v[0]).mean }.isEmpty)
        #expect(check.run([x]) { tape, v in tape.channelMoments(v[0]).variance }.isEmpty)
        #expect(check.run([x]) { tape, v in tape.sum(v[0]) }.isEmpty)
        let positive = Tensor(shape: [7], scalars: [0.3, 1, 2, 4, 0.8, 1.5, 3])
        #expect(check.run([positive]) { tape, v in tape.squareRoot(v[0], epsilon: 1e-3) }.isEmpty)
    }

    @Test("MSE and KL-divergence losses, gradients to both arguments")
    func losses() {
        let a = awayFromKinks([4, 5], seed: 1), b = awayFromKinks([4, 5], seed: 2)
        #expect(check.run([a, b]) { tape, v in tape.meanSquaredError(v[0], v[1]) }.isEmpty)
        let problems = check.run([a, b]) { tape, v in tape.klDivergence(logits: v[0], target: v[1], temperature: 2) }
        #expect(problems.isEmpty, "\(problems.prefix(5))")
    }

    @Test("AdaRound soft bits, soft-quantized weights with learned step, rounding regulariser")
    func quantizationSmoothParts() {
        let v = awayFromKinks([3, 4], seed: 1, range: 2)
        #expect(check.run([v]) { tape, x in tape.rectifiedSigmoid(x[0]) }.isEmpty)
        let floor = Tensor(shape: [3, 4], scalars: (0..<12).map { Float($0 % 7) - 3 })
        let bits = Tensor(shape: [3, 4], scalars: (0..<12).map { 0.2 + Float($0 % 5) * 0.15 })
        let step = Tensor(shape: [3], scalars: [0.1, 0.05, 0.2])
        let problems = check.run([bits, step]) { tape, x in
            tape.softQuantizedWeights(floor: floor, bits: x[0], step: x[1], lowest: [-127, -2, -8], highest: [127, 1, 7])
        }
        #expect(problems.isEmpty, "\(problems.prefix(5))")
        let h = Tensor(shape: [6], scalars: [0.1, 0.3, 0.45, 0.6, 0.8, 0.95])
        #expect(check.run([h]) { tape, x in tape.roundingRegularizer(x[0], beta: 4) }.isEmpty)
    }

    @Test("fake quantization passes gradients straight through inside the range only")
    func straightThrough() {
        let tape = Tape()
        let x = tape.leaf(Tensor(shape: [5], scalars: [-3, -0.26, 0.1, 0.74, 2]))
        let y = tape.fakeQuantize(x, scale: 0.25, zeroPoint: 2, levels: 0...5)
        #expect(y.value.scalars == [-0.5, -0.25, 0, 0.75, 0.75])
        let g = tape.gradients(of: y, seed: Tensor(shape: [5], repeating: 1), withRespectTo: [x])[0]!
        #expect(g.scalars == [0, 1, 1, 1, 0])
    }

    @Test("LSQ: step gradient is round(x/s) − x/s inside the range and the clamp level outside")
    func learnedStepSize() {
        let tape = Tape()
        let x = tape.leaf(Tensor(shape: [4], scalars: [0.33, -0.9, 5, -5]))
        let s = tape.leaf(Tensor(shape: [1], scalars: [0.5]))
        let y = tape.lsqQuantize(x, step: s, zeroPoint: 0, levels: -4...3)
        #expect(y.value.scalars == [0.5, -1, 1.5, -2])
        let g = tape.gradients(of: y, seed: Tensor(shape: [4], repeating: 1), withRespectTo: [x, s])
        #expect(g[0]!.scalars == [1, 1, 0, 0])
        let expected: Float = (1 - 0.66) + (-2 + 1.8) + 3 + (-4)
        #expect(abs(g[1]!.scalars[0] - expected) < 1e-5)

        // QDrop: dropped elements pass through unquantized, with gradient 1 to x and none to the step.
        let dropped = Tape()
        let x2 = dropped.leaf(x.value), s2 = dropped.leaf(s.value)
        let y2 = dropped.lsqQuantize(x2, step: s2, zeroPoint: 0, levels: -4...3, quantized: [true, false, false, true])
        #expect(y2.value.scalars == [0.5, -0.9, 5, -2])
        let g2 = dropped.gradients(of: y2, seed: Tensor(shape: [4], repeating: 1), withRespectTo: [x2, s2])
        #expect(g2[0]!.scalars == [1, 1, 1, 0])
        #expect(abs(g2[1]!.scalars[0] - ((1 - 0.66) - 4)) < 1e-5)
    }

    @Test("LSQ on large tensors, per tensor and per channel (runs not a multiple of eight): the definition's values and gradients, the same bits on 1, 2 and 3 threads")
    func learnedStepSizeLarge() {
        var rng = SplitMix(state: 31)
        let shape = [3, 5, 37, 41]  // per channel along axis 1: runs of 37·41 = 1517 elements
        let x = Tensor(shape: shape, scalars: (0..<shape.elementCount).map { _ in Float.random(in: -3...3, using: &rng) })
        let dy = Tensor(shape: shape, scalars: (0..<shape.elementCount).map { _ in Float.random(in: -1...1, using: &rng) })
        let mask = (0..<shape.elementCount).map { $0 % 7 != 3 }
        for steps in [[Float(0.37)], [0.2, 0.31, 0.45, 0.5, 0.77]] {
            var runs: [(y: [Float], dx: [Float], ds: [Float])] = []
            for threads in [1, 2, 3] {
                Parallel.threadCount = threads
                let tape = Tape()
                let xv = tape.leaf(x), s = tape.leaf(Tensor(shape: [steps.count], scalars: steps))
                let y = tape.lsqQuantize(xv, step: s, zeroPoint: 1, levels: -8...7, axis: 1, quantized: mask)
                let g = tape.gradients(of: y, seed: dy, withRespectTo: [xv, s])
                runs.append((y.value.scalars, g[0]!.scalars, g[1]!.scalars))
            }
            Parallel.threadCount = 2
            #expect(runs[1].y == runs[0].y && runs[2].y == runs[0].y, "\(steps.count) steps: values depend on threads")
            #expect(runs[1].dx == runs[0].dx && runs[2].dx == runs[0].dx, "\(steps.count) steps: dx depends on threads")
            #expect(runs[1].ds == runs[0].ds && runs[2].ds == runs[0].ds, "\(steps.count) steps: ds depends on threads")
            // The definition, element by element, the step gradient summed in Double.
            var ds = [Double](repeating: 0, count: steps.count)
            var worst: Float = 0
            for i in 0..<x.count {
                let c = steps.count == 1 ? 0 : (i / (37 * 41)) % 5
                let step = steps[c], v = x.scalars[i], scaled = v / step
                let q = scaled.rounded(.toNearestOrEven) + 1
                let clamped = min(max(q, -8), 7)
                let value = mask[i] ? step * (clamped - 1) : v
                worst = max(worst, abs(value - runs[0].y[i]))
                let inside = q >= -8 && q <= 7
                #expect(runs[0].dx[i] == (mask[i] && !inside ? 0 : dy.scalars[i]), "dx[\(i)]")
                if mask[i] {
                    let local = inside ? Double(scaled.rounded(.toNearestOrEven) - scaled) : Double(q < -8 ? -9 : 6)
                    ds[c] += Double(dy.scalars[i]) * local
                }
            }
            #expect(worst < 1e-6, "\(steps.count) steps: values off by \(worst)")
            for c in 0..<steps.count {
                #expect(abs(Double(runs[0].ds[c]) - ds[c]) <= 1e-3 * max(1, abs(ds[c])), "step \(c): \(runs[0].ds[c]) against \(ds[c])")
            }
        }
    }

    @Test("Bernoulli draws: the requested rate, reproducible by seed")
    func bernoulliDraws() {
        var a = SeededGenerator(seed: 9), b = SeededGenerator(seed: 9)
        let draws = a.bernoulli(count: 100_000, probability: 0.3)
        #expect(draws == b.bernoulli(count: 100_000, probability: 0.3))
        let rate = Double(draws.filter { $0 }.count) / 100_000
        #expect(abs(rate - 0.3) < 0.01)
        #expect(a.bernoulli(count: 1000, probability: 0).allSatisfy { !$0 })
        #expect(a.bernoulli(count: 1000, probability: 1).allSatisfy { $0 })
    }

    @Test("a whole imported teacher on the tape: input gradient matches finite differences")
    func wholeGraph() throws {
        var graph = Graph(name: "block")
        let x = graph.addInput(name: "x", shape: [batchDimension, 2, 6, 6])
        let w = graph.addConstant(name: "w", awayFromKinks([4, 2, 3, 3], seed: 1))
        let stats = (0..<4).map { _ in graph.addConstant(name: "s", awayFromKinks([4], seed: 7, range: 1)) }
        var bnInputs = stats
        bnInputs[3] = graph.addConstant(name: "var", Tensor(shape: [4], scalars: [0.5, 1, 1.5, 2]))
        let c = try graph.addNode(name: "conv", op: .conv(ConvAttributes(strides: [2, 2], pads: [1, 1, 1, 1])), inputs: [x, w])
        let n = try graph.addNode(name: "bn", op: .batchNorm(epsilon: 1e-5), inputs: [c] + bnInputs)
        let r = try graph.addNode(name: "tanh", op: .activation(.tanh), inputs: [n])
        let p = try graph.addNode(name: "gap", op: .globalAveragePool, inputs: [r])
        graph.outputs = [try graph.addNode(name: "flat", op: .reshape(shape: [batchDimension, 4]), inputs: [p])]
        let problems = check.run([awayFromKinks([3, 2, 6, 6], seed: 2)]) { tape, v in
            try! tape.run(graph, inputs: v)[0]
        }
        #expect(problems.isEmpty, "\(problems.prefix(5))")
        // The tape's forward equals the interpreter's.
        let input = awayFromKinks([3, 2, 6, 6], seed: 2)
        let tape = Tape()
        let onTape = try tape.run(graph, inputs: [tape.constant(input)])[0].value
        let reference = try Interpreter(graph).run([input])[0]
        #expect(zip(onTape.scalars, reference.scalars).allSatisfy { abs($0 - $1) < 1e-6 })
    }
}
