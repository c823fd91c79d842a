import KilnGraph
@testable import KilnTensor
import Testing

/// Direct 7-loop convolution in Float64: the oracle for every conv path (im2col, 1×1, depthwise, threading).
func naiveConv(_ x: Tensor, _ w: Tensor, _ bias: Tensor?, _ a: ConvAttributes) -> [Double] {
    let (n, c, h, wd) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    let (m, cg, kh, kw) = (w.shape[0], w.shape[1], w.shape[2], w.shape[3])
    let oh = (h + a.pads[0] + a.pads[2] - a.dilations[0] * (kh - 1) - 1) / a.strides[0] + 1
    let ow = (wd + a.pads[1] + a.pads[3] - a.dilations[1] * (kw - 1) - 1) / a.strides[1] + 1
    let mg = m / a.group
    var out = [Double](repeating: 0, count: n * m * oh * ow)
    for b in 0..<n {
        for o in 0..<m {
            let g = o / mg
            for y in 0..<oh {
                for xo in 0..<ow {
                    var sum = Double(bias?.scalars[o] ?? 0)
                    for ci in 0..<cg {
                        for i in 0..<kh {
                            for j in 0..<kw {
                                let iy = y * a.strides[0] - a.pads[0] + i * a.dilations[0]
                                let ix = xo * a.strides[1] - a.pads[1] + j * a.dilations[1]
                                guard iy >= 0, iy < h, ix >= 0, ix < wd else { continue }
                                let xv = x.scalars[((b * c + g * cg + ci) * h + iy) * wd + ix]
                                sum += Double(xv) * Double(w.scalars[((o * cg + ci) * kh + i) * kw + j])
                            }
                        }
                    }
                    out[((b * m + o) * oh + y) * ow + xo] = sum
                }
            }
        }
    }
    return out
}

/// A deterministic pseudo-random generator (SplitMix64) for reproducible test data.
struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

func randomTensor(_ shape: [Int], _ rng: inout SplitMix) -> Tensor {
    Tensor(shape: shape, scalars: (0..<shape.elementCount).map { _ in Float.random(in: -1...1, using: &rng) })
}

/// (batch, channels, height, width, outputs, kernel, stride, pads, dilation, group)
typealias ConvCase = (n: Int, c: Int, h: Int, w: Int, m: Int, k: [Int], s: [Int], p: [Int], d: [Int], g: Int)

let convCases: [ConvCase] = [
    (1, 3, 9, 7, 5, [3, 3], [1, 1], [1, 1, 1, 1], [1, 1], 1),     // plain padded 3×3, batch 1 (split product)
    (5, 3, 9, 7, 5, [3, 3], [1, 1], [1, 1, 1, 1], [1, 1], 1),     // per-image parallel path
    (2, 4, 11, 10, 6, [3, 2], [2, 3], [0, 1, 2, 0], [1, 1], 2),   // grouped, asymmetric everything
    (3, 6, 8, 8, 6, [3, 3], [2, 2], [1, 1, 1, 1], [1, 1], 6),     // depthwise strided
    (2, 4, 7, 9, 8, [3, 3], [1, 1], [2, 2, 2, 2], [2, 2], 4),     // depthwise with multiplier 2, dilated
    (4, 16, 6, 6, 24, [1, 1], [1, 1], [0, 0, 0, 0], [1, 1], 1),   // pointwise (no im2col)
    (1, 16, 6, 6, 40, [1, 1], [1, 1], [0, 0, 0, 0], [1, 1], 1),   // pointwise, batch 1 (split rows)
    (2, 3, 10, 10, 4, [5, 5], [3, 2], [2, 1, 0, 3], [1, 2], 1),   // big kernel, strides and dilation mixed
    (1, 5, 4, 4, 3, [1, 1], [2, 2], [0, 0, 0, 0], [1, 1], 1),     // strided 1×1 (needs im2col)
    (2, 16, 14, 14, 32, [3, 3], [1, 1], [1, 1, 1, 1], [1, 1], 1), // 16-channel blocks (oneDNN's blocked layouts)
    (2, 24, 9, 9, 24, [3, 3], [2, 2], [1, 1, 1, 1], [1, 1], 24),  // depthwise, channels not a multiple of 16
    (2, 32, 8, 8, 48, [1, 1], [1, 1], [0, 0, 0, 0], [1, 1], 1),   // blocked pointwise
    (1, 3, 17, 17, 16, [7, 7], [2, 2], [3, 3, 3, 3], [1, 1], 1),  // a stem: 3 channels, 7×7 stride 2
]

/// A case's input and weight (random, from `rng`) and attributes.
func convCaseOperands(_ t: ConvCase, _ rng: inout SplitMix) -> (x: Tensor, w: Tensor, a: ConvAttributes) {
    (randomTensor([t.n, t.c, t.h, t.w], &rng), randomTensor([t.m, t.c / t.g] + t.k, &rng),
     ConvAttributes(strides: t.s, pads: t.p, dilations: t.d, group: t.g))
}

@Suite("fp32 convolution")
struct ConvTests {
    @Test("oneDNN and Kiln's own loops match the direct Float64 convolution", arguments: convCases.indices)
    func matchesNaive(_ index: Int) {
        let t = convCases[index]
        var rng = SplitMix(state: UInt64(index + 1))
        let (x, w, a) = convCaseOperands(t, &rng)
        let b = randomTensor([t.m], &rng)
        let expected = naiveConv(x, w, b, a)
        for threads in [1, 2, 3] {
            Parallel.threadCount = threads
            for (path, y) in [("oneDNN", FP32.conv2d(x, weight: w, bias: b, a)),
                              ("im2col", FP32.im2colConv2d(x, weight: w, bias: b, a))] {
                #expect(y.shape == (try! Op.conv(a).outputShape(inputShapes: [x.shape, w.shape, b.shape])))
                let worst = zip(y.scalars, expected).map { abs(Double($0) - $1) }.max() ?? 0
                #expect(worst < 1e-4, "case \(index), \(path), \(threads) threads: max error \(worst)")
            }
        }
        Parallel.threadCount = 2
    }

    @Test("oneDNN runs every case (none falls back to Kiln's loops)", arguments: convCases.indices)
    func oneDNNTakesEveryCase(_ index: Int) {
        let t = convCases[index]
        let a = ConvAttributes(strides: t.s, pads: t.p, dilations: t.d, group: t.g)
        let geometry = ConvGeometry(input: [t.n, t.c, t.h, t.w], weight: [t.m, t.c / t.g] + t.k, a)
        #expect(OneDNN.convolution(geometry, bias: true) != nil, "case \(index)")
    }

    @Test("oneDNN's input, weight and bias gradients match Kiln's loops", arguments: convCases.indices)
    func backwardMatchesLoops(_ index: Int) {
        let t = convCases[index]
        var rng = SplitMix(state: UInt64(index + 100))
        let (x, w, a) = convCaseOperands(t, &rng)
        let dy = randomTensor(FP32.conv2d(x, weight: w, bias: nil, a).shape, &rng)
        let fast = FP32.conv2dBackward(x, weight: w, a, gradient: dy, input: true, weight: true, bias: true)
        let loops = FP32.im2colConv2dBackward(x, weight: w, a, gradient: dy, input: true, weight: true, bias: true)
        for (name, got, want) in [("input", fast.input, loops.input), ("weight", fast.weight, loops.weight),
                                  ("bias", fast.bias, loops.bias)] {
            guard let got, let want else {
                Issue.record("case \(index): no \(name) gradient")
                continue
            }
            let scale = want.scalars.map { abs($0) }.max() ?? 1
            let worst = zip(got.scalars, want.scalars).map { abs($0 - $1) }.max() ?? 0
            #expect(worst <= 1e-5 * max(scale, 1), "case \(index) \(name): max difference \(worst) of \(scale)")
        }
        let inputOnly = FP32.conv2dBackward(x, weight: w, a, gradient: dy, input: true, weight: false, bias: false)
        #expect(inputOnly.weight == nil && inputOnly.bias == nil && inputOnly.input?.scalars == fast.input?.scalars)
    }

    @Test("constant weights reordered once give the plain path's results bit for bit, and a changed weight is never stale",
          arguments: convCases.indices)
    func constantWeightsPrepared(_ index: Int) {
        let t = convCases[index]
        var rng = SplitMix(state: UInt64(index + 200))
        var (x, w, a) = convCaseOperands(t, &rng)
        let dy = randomTensor(FP32.conv2d(x, weight: w, bias: nil, a).shape, &rng)
        for round in 0..<2 {
            let plain = FP32.conv2d(x, weight: w, bias: nil, a)
            let plainBackward = FP32.conv2dBackward(x, weight: w, a, gradient: dy, input: true, weight: false, bias: false)
            // The first call remembers the array, the second and third run on the reordered copy.
            for call in 0..<3 {
                #expect(FP32.conv2d(x, weight: w, bias: nil, a, constantWeight: true).scalars == plain.scalars,
                        "case \(index), round \(round), call \(call)")
                let backward = FP32.conv2dBackward(x, weight: w, a, gradient: dy, input: true, weight: false, bias: false,
                                                   constantWeight: true)
                #expect(backward.input?.scalars == plainBackward.input?.scalars, "case \(index), round \(round), call \(call)")
            }
            // A write to the weights copies them (the cache holds the old array): the next round must see new values.
            var scalars = w.scalars
            scalars[0] += 1
            w = Tensor(shape: w.shape, scalars: scalars)
            x = Tensor(shape: x.shape, scalars: x.scalars.map { $0 * 0.5 })
        }
    }
}
