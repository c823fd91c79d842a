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

    /// The domain's range when a domain is given or the teacher's metadata states one; otherwise the range the
    /// calibration data spans.
    public static func choose(_ given: InputDomain?, graph: Graph, calibration: Tensor) throws -> InputRange {
        let channels = graph[graph.inputs[0]].shape.count > 1 ? graph[graph.inputs[0]].shape[1] : 1
        let domain: InputDomain?
        do {
            domain = try (given ?? InputDomain(metadata: graph.metadata))?.validated(channels: channels)
        } catch let error as InputDomainError {
            throw QuantizeError(error.message)
        }
        if let domain { return InputRange(range: domain.range(channels: channels), domain: domain) }
        let finite = calibration.scalars.filter(\.isFinite)
        let (low, high) = (finite.min() ?? 0, finite.max() ?? 1)
        return InputRange(range: min(low, 0)...max(high, 0), assumption: "the input range of the calibration images")
    }
}
