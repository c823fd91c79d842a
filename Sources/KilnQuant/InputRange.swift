import KilnGraph
import KilnRuntime
import KilnTensor

/// The range a student's input quantizer covers, and where it came from.
public struct InputRange: Sendable, Equatable {
    /// The covered range of the normalized input tensor.
    public var range: ClosedRange<Float>
    /// The domain it was taken from, when one was known.
    public var domain: InputDomain?
    /// When no domain was known: what was assumed instead (one sentence, for the warning).
    public var assumption: String?

    /// How many estimated standard deviations around the estimated mean the input quantizer covers when the domain
    /// is unknown (see `choose`).
    public static let unknownDomainSpread: Float = 3

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
        let spread = unknownDomainSpread * statistics.std
        let estimated = (statistics.mean.min()! - spread)...(statistics.mean.max()! + spread)
        let means = statistics.mean.map { String(format: "%.3g", $0) }.joined(separator: ",")
        return InputRange(range: min(estimated.lowerBound, low)...max(estimated.upperBound, high),
                          assumption: "the estimated mean (\(means)) ± \(Int(unknownDomainSpread)) × the estimated std (\(String(format: "%.3g", statistics.std))) of real inputs, read from the teacher's first BatchNorm")
    }
}

#if canImport(Glibc)
import Glibc
#endif
