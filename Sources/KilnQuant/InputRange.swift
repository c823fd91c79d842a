import KilnGraph
import KilnStudent
import KilnTensor

/// The range a student's input quantizer covers, and where it came from.
public struct InputRange: Sendable, Equatable {
    /// The covered range of the normalized input tensor.
    public var range: ClosedRange<Float>
    /// The domain it was taken from, when one was known.
    public var domain: InputDomain?
    /// When no domain was known: what was assumed instead (one sentence, for the warning).
    public var assumption: String?

    /// How many estimated standard deviations below and above the estimated mean the input quantizer covers when
    /// the domain is unknown (see `choose`). Image datasets normalized by their own statistics span about −2.1 to
    /// +2.8 standard deviations (ImageNet −2.12…2.64, CIFAR-10 −1.99…2.13, MNIST −0.42…2.82, Fashion-MNIST
    /// −0.81…2.02); measured on three teachers, any spread from ±2 to ±4 loses ≤ 0.04 pt while the synthetic images'
    /// own range clips bright pixels and loses 1.3–3.5 pt (bench/results-zero-shot-domain.txt).
    public static let unknownDomainSpread: (below: Float, above: Float) = (2.5, 3)

    /// The domain's range when a domain is given or the teacher's metadata states one. Otherwise, when the teacher's
    /// first BatchNorm gives the real inputs' statistics (`InputStatistics`), mean ± `unknownDomainSpread` std of
    /// every channel, widened to the calibration images' range if that is wider; failing that, the calibration
    /// images' range. `teacher` is the graph before BatchNorm folding.
    public static func choose(_ given: InputDomain?, teacher: Graph, calibration: Tensor) throws -> InputRange {
        let channels = teacher.inputChannels ?? 1
        let domain: InputDomain?
        do {
            domain = try (given ?? InputDomain(metadata: teacher.metadata))?.validated(channels: channels)
        } catch let error as InputDomainError {
            throw QuantizeError(error.message)
        }
        if let domain { return InputRange(range: domain.range(channels: channels), domain: domain) }
        let finite = calibration.scalars.filter(\.isFinite)
        let (low, high) = (min(finite.min() ?? 0, 0), max(finite.max() ?? 1, 0))
        guard let statistics = InputStatistics.estimate(teacher) else {
            return InputRange(range: low...high, assumption: "the range of the calibration images (the teacher's first layer is not a convolution with BatchNorm, so the inputs' statistics could not be estimated)")
        }
        let estimated = (statistics.mean.min()! - unknownDomainSpread.below * statistics.std)...(statistics.mean.max()! + unknownDomainSpread.above * statistics.std)
        let means = statistics.mean.map { String(format: "%.3g", $0) }.joined(separator: ",")
        return InputRange(range: min(estimated.lowerBound, low)...max(estimated.upperBound, high),
                          assumption: "from the estimated mean (\(means)) − \(unknownDomainSpread.below) to + \(unknownDomainSpread.above) estimated std (\(String(format: "%.3g", statistics.std))) of real inputs, read from the teacher's first BatchNorm")
    }
}

#if canImport(Glibc)
import Glibc
#endif
