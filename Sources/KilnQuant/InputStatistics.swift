import KilnGraph
import KilnTensor

/// The per-channel mean and the standard deviation of the real inputs a teacher was trained on, read back from the
/// running statistics of its first BatchNorm (the one right after the convolution that reads the input).
///
/// The BatchNorm's running mean of channel k is E[conv_k(x)] = b_k + Σ_c μ_c Σ_taps W_k,c,tap · f_tap, where f_tap
/// is the share of output positions at which the tap lies inside the image (the rest read zero padding): a linear
/// system in the input means μ_c, solved by least squares over the K ≥ C output channels. Its running variance is
/// wᵀ Σ w over the flattened filter w, with the input covariance between two taps modelled as
/// σ² · ρ^distance · (κ between different channels): for each ρ and κ on a grid, σ² follows by least squares, and
/// the best fit wins. Exact for the mean (up to the data's spatial non-stationarity), a model fit for σ.
public struct InputStatistics: Sendable, Equatable {
    /// Estimated mean of each input channel.
    public var mean: [Float]
    /// Estimated standard deviation (one for every channel).
    public var std: Float
    /// Fitted correlation between neighbouring pixels, and between channels.
    public var neighbourCorrelation: Float
    public var channelCorrelation: Float

    /// The estimate for `graph` (BatchNorm not yet folded), nil when its input does not go straight into a
    /// one-group convolution followed by a BatchNorm, or the fit is degenerate.
    public static func estimate(_ teacher: Graph) -> InputStatistics? {
        var graph = teacher
        graph.foldPadIntoConv()
        guard graph.inputs.count == 1 else { return nil }
        let input = graph.inputs[0]
        let shape = graph[input].shape
        guard shape.count == 4 else { return nil }
        let readers = graph.consumers()
        guard let convIndex = readers[input]?.first, readers[input]?.count == 1,
              case .conv(let attributes) = graph.nodes[convIndex].op, attributes.group == 1,
              let weight = graph.constants[graph.nodes[convIndex].inputs[1]], weight.shape.count == 4 else { return nil }
        let conv = graph.nodes[convIndex]
        guard let bnIndex = readers[conv.output]?.first, readers[conv.output]?.count == 1,
              case .batchNorm = graph.nodes[bnIndex].op,
              let runningMean = graph.constants[graph.nodes[bnIndex].inputs[3]],
              let runningVariance = graph.constants[graph.nodes[bnIndex].inputs[4]] else { return nil }
        let (k, c, kh, kw) = (weight.shape[0], weight.shape[1], weight.shape[2], weight.shape[3])
        guard c == shape[1], k >= c, runningMean.count == k, runningVariance.count == k else { return nil }
        let bias = conv.inputs.count > 2 ? graph.constants[conv.inputs[2]]?.scalars : nil
        let w = weight.scalars
        func at(_ o: Int, _ ch: Int, _ i: Int, _ j: Int) -> Double { Double(w[((o * c + ch) * kh + i) * kw + j]) }

        // Share of output positions at which each tap reads inside the image.
        let (h, width) = (shape[2], shape[3])
        let (outH, outW) = ((h + attributes.pads[0] + attributes.pads[2] - attributes.dilations[0] * (kh - 1) - 1) / attributes.strides[0] + 1,
                            (width + attributes.pads[1] + attributes.pads[3] - attributes.dilations[1] * (kw - 1) - 1) / attributes.strides[1] + 1)
        guard outH >= 1, outW >= 1 else { return nil }
        func inside(_ tap: Int, _ axis: Int, _ size: Int, _ out: Int) -> Double {
            let offset = tap * attributes.dilations[axis] - attributes.pads[axis]
            let count = (0..<out).filter { (0..<size).contains($0 * attributes.strides[axis] + offset) }.count
            return Double(count) / Double(out)
        }
        let rowShare = (0..<kh).map { inside($0, 0, h, outH) }, columnShare = (0..<kw).map { inside($0, 1, width, outW) }

        // Mean: least squares A μ = m − b with A[o][ch] = Σ_taps W · share.
        var a = [Double](repeating: 0, count: k * c), target = [Double](repeating: 0, count: k)
        for o in 0..<k {
            target[o] = Double(runningMean.scalars[o]) - Double(bias?[o] ?? 0)
            for ch in 0..<c {
                for i in 0..<kh { for j in 0..<kw { a[o * c + ch] += at(o, ch, i, j) * rowShare[i] * columnShare[j] } }
            }
        }
        guard let mean = leastSquares(a, rows: k, columns: c, target) else { return nil }

        // σ: for each (ρ, κ), variance_k ≈ σ² · g_k with g_k = wᵀ M(ρ, κ) w; σ² by least squares, best fit kept.
        let taps = (0..<c).flatMap { ch in (0..<kh).flatMap { i in (0..<kw).map { j in (ch, i, j) } } }
        var distances = [Double](repeating: 0, count: taps.count * taps.count)
        var sameChannel = [Bool](repeating: false, count: taps.count * taps.count)
        for (p, t) in taps.enumerated() {
            for (q, u) in taps.enumerated() {
                let dy = Double((t.1 - u.1) * attributes.dilations[0]), dx = Double((t.2 - u.2) * attributes.dilations[1])
                distances[p * taps.count + q] = (dy * dy + dx * dx).squareRoot()
                sameChannel[p * taps.count + q] = t.0 == u.0
            }
        }
        let filters = (0..<k).map { o in taps.map { at(o, $0.0, $0.1, $0.2) } }
        let variance = runningVariance.scalars.map(Double.init)
        var best: (error: Double, sigma2: Double, rho: Double, kappa: Double)?
        let n = taps.count
        for rhoStep in 0..<50 {
            let rho = Double(rhoStep) / 50
            let decay = distances.map { pow(rho, $0) }
            for kappaStep in (c == 1 ? [10] : Array(0...10)) {
                let kappa = Double(kappaStep) / 10
                let covariance = (0..<(n * n)).map { decay[$0] * (sameChannel[$0] ? 1 : kappa) }
                var g = [Double](repeating: 0, count: k)
                for o in 0..<k {
                    let f = filters[o]
                    var sum = 0.0
                    for p in 0..<n where f[p] != 0 {
                        var row = 0.0
                        for q in 0..<n { row += covariance[p * n + q] * f[q] }
                        sum += f[p] * row
                    }
                    g[o] = sum
                }
                let gg = g.reduce(0) { $0 + $1 * $1 }
                guard gg > 0 else { continue }
                let sigma2 = max(zip(g, variance).reduce(0) { $0 + $1.0 * $1.1 } / gg, 0)
                let error = zip(g, variance).reduce(0) { $0 + ($1.0 * sigma2 - $1.1) * ($1.0 * sigma2 - $1.1) }
                if best == nil || error < best!.error { best = (error, sigma2, rho, kappa) }
            }
        }
        guard let best, best.sigma2 > 0, mean.allSatisfy(\.isFinite) else { return nil }
        return InputStatistics(mean: mean.map(Float.init), std: Float(best.sigma2.squareRoot()),
                               neighbourCorrelation: Float(best.rho), channelCorrelation: Float(best.kappa))
    }

    /// Solves min ‖A x − b‖ for A [rows][columns] (rows ≥ columns) by the normal equations; nil if singular.
    static func leastSquares(_ a: [Double], rows: Int, columns: Int, _ b: [Double]) -> [Double]? {
        var m = [Double](repeating: 0, count: columns * (columns + 1))
        for i in 0..<columns {
            for j in 0..<columns { m[i * (columns + 1) + j] = (0..<rows).reduce(0) { $0 + a[$1 * columns + i] * a[$1 * columns + j] } }
            m[i * (columns + 1) + columns] = (0..<rows).reduce(0) { $0 + a[$1 * columns + i] * b[$1] }
        }
        // Gaussian elimination with partial pivoting on the augmented matrix.
        for col in 0..<columns {
            guard let pivot = (col..<columns).max(by: { abs(m[$0 * (columns + 1) + col]) < abs(m[$1 * (columns + 1) + col]) }),
                  abs(m[pivot * (columns + 1) + col]) > 1e-12 else { return nil }
            for j in 0...columns { m.swapAt(col * (columns + 1) + j, pivot * (columns + 1) + j) }
            for row in 0..<columns where row != col {
                let factor = m[row * (columns + 1) + col] / m[col * (columns + 1) + col]
                for j in col...columns { m[row * (columns + 1) + j] -= factor * m[col * (columns + 1) + j] }
            }
        }
        return (0..<columns).map { m[$0 * (columns + 1) + columns] / m[$0 * (columns + 1) + $0] }
    }
}

#if canImport(Glibc)
import Glibc
#endif
