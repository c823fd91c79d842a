import KilnGraph
import KilnTensor
import Testing

/// Three steps of each optimizer on three parameters, against torch.optim (PyTorch 2.15, printed to 9 digits):
/// p₀ = [0.5, −1, 2], gradients below, learning rate 0.1.
private let startingPoint: [Float] = [0.5, -1.0, 2.0]
private let gradientSteps: [[Float]] = [[0.3, -0.2, 1.5], [-0.1, 0.4, 0.25], [0.05, -0.6, -1.0]]

@Suite("optimizers against PyTorch")
struct OptimizerTests {
    /// The parameters after each step of `optimizer`.
    func trajectory<O: Optimizer>(_ optimizer: O) -> [[Float]] {
        var optimizer = optimizer
        // Long enough that the update runs in parallel slices, the first three entries being the checked ones.
        let size = 1 << 17
        var parameters = [Tensor(shape: [size], scalars: startingPoint + [Float](repeating: 0.25, count: size - 3))]
        return gradientSteps.map { gradient in
            let padded = Tensor(shape: [size], scalars: gradient + [Float](repeating: 0.125, count: size - 3))
            optimizer.step(&parameters, gradients: [padded])
            return Array(parameters[0].scalars.prefix(3))
        }
    }

    func expectClose(_ got: [[Float]], _ want: [[Float]], _ name: String) {
        for (step, (g, w)) in zip(got, want).enumerated() {
            let worst = zip(g, w).map { abs($0 - $1) }.max() ?? 0
            #expect(worst < 2e-6, "\(name) step \(step + 1): \(g) against PyTorch's \(w)")
        }
    }

    @Test("Adam, Adam with L2 weight decay and AdamW match torch.optim")
    func adam() {
        expectClose(trajectory(Adam(learningRate: 0.1)),
                    [[0.400000006, -0.899999976, 1.89999998], [0.359978139, -0.936610341, 1.82166719],
                     [0.319435596, -0.902286232, 1.8062129]], "Adam")
        expectClose(trajectory(Adam(learningRate: 0.1, weightDecay: 0.01)),
                    [[0.400000006, -0.900000036, 1.89999998], [0.358439952, -0.933872044, 1.82104635],
                     [0.316188633, -0.897634208, 1.80387104]], "Adam (L2)")
        expectClose(trajectory(Adam(learningRate: 0.1, weightDecay: 0.01, decoupledWeightDecay: true)),
                    [[0.399500012, -0.898999989, 1.898], [0.359078646, -0.934711337, 1.81776929],
                     [0.318177015, -0.899452507, 1.80049729]], "AdamW")
    }

    @Test("SGD with momentum (and weight decay) and Nesterov momentum match torch.optim")
    func sgd() {
        expectClose(trajectory(SGD(learningRate: 0.1, momentum: 0.9, weightDecay: 0.01)),
                    [[0.469500005, -0.978999972, 1.84800005], [0.451580495, -0.999120951, 1.68435204],
                     [0.430001348, -0.9562307, 1.63538456]], "SGD momentum")
        expectClose(trajectory(SGD(learningRate: 0.1, momentum: 0.9, nesterov: true)),
                    [[0.442999989, -0.962000012, 1.71500003], [0.437699974, -1.02180004, 1.546],
                     [0.414429963, -0.925620019, 1.60640001]], "SGD Nesterov")
    }
}
