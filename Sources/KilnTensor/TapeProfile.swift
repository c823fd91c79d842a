import Dispatch
import KilnGraph

/// Where a tape's time goes: wall time per kind of op, forward and backward, summed over every pass it watched
/// (`kiln bench TEACHER --backward --profile`). Set it as a tape's `profile` before running a graph on it.
public final class TapeProfile {
    /// One kind of op: how many ran and their summed forward and backward seconds.
    public struct Entry: Sendable {
        public var count = 0
        public var forwardSeconds = 0.0
        public var backwardSeconds = 0.0
    }

    /// Entries by kind ("Conv 3×3", "BatchNorm", …); ops recorded outside a graph run (losses, a generator) are
    /// `outsideGraph`, their forward time untimed.
    public private(set) var entries: [String: Entry] = [:]
    /// The label of ops recorded outside `Tape.run(_:inputs:)`.
    public static let outsideGraph = "outside the graph"

    /// An empty profile.
    public init() {}

    func addForward(_ label: String, seconds: Double) {
        entries[label, default: Entry()].count += 1
        entries[label, default: Entry()].forwardSeconds += seconds
    }

    func addBackward(_ label: String, seconds: Double) {
        entries[label, default: Entry()].backwardSeconds += seconds
    }

    /// The profile's label of a graph op on operands of these shapes: convolutions by kernel size, stride and
    /// grouping, since those take different code paths.
    static func label(_ op: Op, operandShapes: [[Int]]) -> String {
        guard case .conv(let a) = op, operandShapes.count > 1, operandShapes[1].count == 4 else { return op.name }
        let w = operandShapes[1]
        let size = "\(w[2])×\(w[3])" + (a.strides.contains { $0 > 1 } ? " stride \(a.strides.max()!)" : "")
        if a.group > 1 && a.group == operandShapes[0][1] && w[1] == 1 { return "Conv \(size) depthwise" }
        return a.group > 1 ? "Conv \(size) grouped" : "Conv \(size)"
    }

    static func now() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

    /// Seconds since `start` (a `now()` reading).
    static func seconds(since start: UInt64) -> Double { Double(now() - start) / 1e9 }
}
