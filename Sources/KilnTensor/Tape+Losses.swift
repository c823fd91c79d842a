import KilnGraph

/// Differentiable reductions and losses.
extension Tape {
    /// Per-channel (axis 1) mean and biased variance of x [N, C, ...] over all other axes, each [C].
    public func channelMoments(_ x: Variable) -> (mean: Variable, variance: Variable) {
        let (meanValues, varianceValues) = FP32.channelMoments(x.value)
        let xv = x.value
        let (outer, channels, inner) = FP32.split(xv.shape, at: 1)
        let count = Float(outer * inner)
        let mean = record(Tensor(shape: [channels], scalars: meanValues), inputs: [x]) { dy, _ in
            let shares = dy.scalars.map { $0 / count }
            return [FP32.makePlanes(xv.shape, outer: outer, channels: channels, inner: inner) { c, _, target, n in
                target.initialize(repeating: shares[c], count: n)
            }]
        }
        let variance = record(Tensor(shape: [channels], scalars: varianceValues), inputs: [x]) { dy, _ in
            let factors = dy.scalars.map { 2 * $0 / count }
            return [FP32.mapPlanes(xv, outer: outer, channels: channels, inner: inner) { c, source, target, n in
                let (factor, mu) = (factors[c], meanValues[c])
                for i in 0..<n { target[i] = factor * (source[i] - mu) }
            }]
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
}

#if canImport(Glibc)
import Glibc
#endif
