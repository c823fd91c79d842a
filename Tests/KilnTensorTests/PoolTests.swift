import KilnGraph
import KilnTensor
import Testing

/// Max pooling by the definition: each window's in-bounds cells in row-major order, the first largest wins.
func naiveMaxPool(_ x: Tensor, _ a: PoolAttributes) -> (values: [Float], winners: [Int32]) {
    let (planes, h, w) = (x.shape[0] * x.shape[1], x.shape[2], x.shape[3])
    let shape = try! Op.maxPool(a).outputShape(inputShapes: [x.shape])
    var values: [Float] = [], winners: [Int32] = []
    for plane in 0..<planes {
        for oy in 0..<shape[2] {
            for ox in 0..<shape[3] {
                var best = -Float.infinity, at: Int32 = -1
                for ki in 0..<a.kernel[0] {
                    for kj in 0..<a.kernel[1] {
                        let iy = oy * a.strides[0] - a.pads[0] + ki * a.dilations[0]
                        let ix = ox * a.strides[1] - a.pads[1] + kj * a.dilations[1]
                        guard iy >= 0, iy < h, ix >= 0, ix < w else { continue }
                        let v = x.scalars[(plane * h + iy) * w + ix]
                        if v > best || at < 0 { (best, at) = (v, Int32(iy * w + ix)) }
                    }
                }
                values.append(best)
                winners.append(at)
            }
        }
    }
    return (values, winners)
}

@Suite("fp32 pooling")
struct PoolTests {
    @Test("max pooling and its winners match the definition (ties, padding, strides, dilation, ceil mode)",
          arguments: [
              PoolAttributes(kernel: [2, 2], strides: [2, 2]),
              PoolAttributes(kernel: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1]),
              PoolAttributes(kernel: [3, 2], strides: [1, 3], pads: [2, 0, 1, 1], dilations: [2, 1]),
              PoolAttributes(kernel: [2, 2], strides: [2, 2], ceilMode: true),
              PoolAttributes(kernel: [3, 3], strides: [1, 1], pads: [1, 1, 1, 1]),
          ])
    func maxPoolWinners(_ a: PoolAttributes) {
        // Few distinct values, so that windows hold ties; a wide plane, so that the eight-wide compare runs.
        var rng = SplitMix(state: 7)
        let x = Tensor(shape: [2, 3, 9, 37], scalars: (0..<(2 * 3 * 9 * 37)).map { _ in Float(Int.random(in: -3...3, using: &rng)) })
        let expected = naiveMaxPool(x, a)
        let (y, winners) = FP32.maxPoolWithWinners(x, a)
        #expect(y.scalars == expected.values)
        #expect(winners == expected.winners)
        #expect(FP32.maxPool(x, a).scalars == expected.values)
    }
}
