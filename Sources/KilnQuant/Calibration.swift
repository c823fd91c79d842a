import KilnGraph
import KilnStudent
import KilnTensor

/// How an activation's quantization range is chosen from the calibration data.
public enum RangeMethod: Hashable, Sendable, CustomStringConvertible {
    /// The observed minimum and maximum.
    case minmax
    /// The given percentile of the values at each end (e.g. 99.99 clips the top and bottom 0.01%).
    case percentile(Double)
    /// The clipping range that minimises the expected quantization mean squared error.
    case mse

    public var description: String {
        switch self {
        case .minmax: return "minmax"
        case .percentile(let p): return "percentile(\(p))"
        case .mse: return "mse"
        }
    }
}

/// Per-value statistics of activations seen on calibration data: exact range plus a histogram over it.
struct ActivationStatistics {
    static let bins = 2048
    var low: Float = .infinity
    var high: Float = -.infinity
    var histogram: [Double] = []

    mutating func observeRange(_ values: [Float]) {
        for v in values where v.isFinite {
            low = min(low, v)
            high = max(high, v)
        }
    }

    mutating func observeHistogram(_ values: [Float]) {
        if histogram.isEmpty { histogram = [Double](repeating: 0, count: Self.bins) }
        guard high > low else {
            histogram[0] += Double(values.count)
            return
        }
        let scale = Float(Self.bins) / (high - low)
        for v in values where v.isFinite {
            let bin = min(max(Int((v - low) * scale), 0), Self.bins - 1)
            histogram[bin] += 1
        }
    }

    /// The clipping range [lo, hi] chosen by `method` for `levels` + 1 quantization levels; always contains 0.
    func range(_ method: RangeMethod, levels: Int = 255) -> (Float, Float) {
        guard low.isFinite, high.isFinite else { return (0, 0) }
        switch method {
        case .minmax:
            return (min(low, 0), max(high, 0))
        case .percentile(let p):
            guard !histogram.isEmpty, high > low else { return (min(low, 0), max(high, 0)) }
            let total = histogram.reduce(0, +)
            let tail = total * (100 - p) / 100
            let width = (high - low) / Float(Self.bins)
            var lo = low, hi = high
            var sum = 0.0
            for (i, c) in histogram.enumerated() {
                sum += c
                if sum > tail { lo = low + Float(i) * width; break }
            }
            sum = 0
            for (i, c) in histogram.enumerated().reversed() {
                sum += c
                if sum > tail { hi = low + Float(i + 1) * width; break }
            }
            return (min(lo, 0), max(hi, 0))
        case .mse:
            guard !histogram.isEmpty, high > low else { return (min(low, 0), max(high, 0)) }
            let (lo0, hi0) = (min(low, 0), max(high, 0))
            let width = (high - low) / Float(Self.bins)
            var best = (lo0, hi0), bestError = Double.infinity
            for step in 0...80 {
                let alpha = 1 - Float(step) / 100
                let (lo, hi) = (lo0 * alpha, hi0 * alpha)
                let scale = Double(hi - lo) / Double(levels)
                var error = 0.0
                for (i, c) in histogram.enumerated() where c > 0 {
                    let v = Double(low + (Float(i) + 0.5) * width)
                    if v < Double(lo) {
                        error += c * (v - Double(lo)) * (v - Double(lo))
                    } else if v > Double(hi) {
                        error += c * (v - Double(hi)) * (v - Double(hi))
                    } else {
                        error += c * scale * scale / 12
                    }
                }
                if error < bestError {
                    bestError = error
                    best = (lo, hi)
                }
            }
            return best
        }
    }
}

/// Quantization with `levels` + 1 levels (255 for uint8) covering [lo, hi] (which contains 0), with 0.0 exactly
/// representable.
func activationQuantization(low: Float, high: Float, levels: Int = 255) -> Quantization {
    let (lo, hi) = (min(low, 0), max(high, 0))
    guard hi > lo else { return Quantization(scale: 1, zeroPoint: 0) }
    let scale = (hi - lo) / Float(levels)
    let zeroPoint = Int32(min(max((-lo / scale).rounded(.toNearestOrEven), 0), Float(levels)))
    return Quantization(scale: scale, zeroPoint: zeroPoint)
}

/// Collects activation statistics of chosen graph values by running the fp32 interpreter over calibration data.
struct Calibrator {
    let interpreter: Interpreter
    let values: Set<ValueID>
    let batch: Int

    /// Statistics of every requested value (graph inputs included) over `data` (a [count, ...] tensor).
    func collect(_ data: Tensor, histogram: Bool) throws -> [ValueID: ActivationStatistics] {
        var statistics: [ValueID: ActivationStatistics] = [:]
        let inputs = interpreter.graph.inputs
        for pass in histogram ? [false, true] : [false] {
            for range in batches(data) {
                let x = slice(data, range)
                func record(_ id: ValueID, _ t: Tensor) {
                    guard values.contains(id) else { return }
                    if pass { statistics[id, default: ActivationStatistics()].observeHistogram(t.scalars) } else { statistics[id, default: ActivationStatistics()].observeRange(t.scalars) }
                }
                record(inputs[0], x)
                _ = try interpreter.run([x]) { node, output in record(node.output, output) }
            }
        }
        return statistics
    }

    func batches(_ data: Tensor) -> [Range<Int>] {
        stride(from: 0, to: data.shape[0], by: batch).map { $0..<min($0 + batch, data.shape[0]) }
    }
}

/// Samples `range` of a [count, ...] tensor.
func slice(_ data: Tensor, _ range: Range<Int>) -> Tensor {
    let sample = data.shape.dropFirst().reduce(1, *)
    return Tensor(shape: [range.count] + data.shape.dropFirst(),
                  scalars: Array(data.scalars[(range.lowerBound * sample)..<(range.upperBound * sample)]))
}
