import KilnGraph

/// A tensor recorded on a `Tape`: its value and whether gradients flow to it.
public struct Variable: Sendable {
    /// Position on the tape.
    public let id: Int
    /// The forward value.
    public let value: Tensor
    /// Whether this variable depends on something gradients are wanted for.
    public let requiresGradient: Bool

    /// Shape of the value.
    public var shape: [Int] { value.shape }
}

/// Reverse-mode automatic differentiation: ops on `Variable`s record how to send gradients back, and
/// `gradients(of:withRespectTo:)` replays those rules in reverse.
///
/// Each op's backward rule lives next to its forward in `Tape+Ops.swift` (one rule per op). A rule captures only
/// the forward tensors its backward needs, and is dropped as soon as it has run, so activations live exactly as
/// long as the backward pass needs them. A tape is single-threaded; make a new one per step.
public final class Tape {
    /// How a recorded op sends its output gradient to its inputs; `needs[i]` says whether input i wants one.
    public typealias Backward = (_ gradient: Tensor, _ needs: [Bool]) -> [Tensor?]

    struct Record {
        let inputs: [Int]
        let requires: [Bool]
        var backward: Backward?
    }

    private var records: [Int: Record] = [:]
    private var count = 0
    /// Where the time goes, when set: every op's forward (in graph runs) and backward is timed into it.
    public var profile: TapeProfile?
    /// The profile label of the graph op being recorded (nil outside `run`).
    var profileLabel: String?

    /// An empty tape.
    public init() {}

    /// A variable gradients can be taken with respect to (a parameter or an input).
    public func leaf(_ value: Tensor) -> Variable {
        defer { count += 1 }
        return Variable(id: count, value: value, requiresGradient: true)
    }

    /// A variable no gradient flows to (data, frozen weights).
    public func constant(_ value: Tensor) -> Variable {
        defer { count += 1 }
        return Variable(id: count, value: value, requiresGradient: false)
    }

    /// Records an op's output; `backward` is kept only if some input requires a gradient.
    public func record(_ value: Tensor, inputs: [Variable], backward: @escaping Backward) -> Variable {
        let requires = inputs.map(\.requiresGradient)
        let id = count
        count += 1
        guard requires.contains(true) else {
            return Variable(id: id, value: value, requiresGradient: false)
        }
        var timed = backward
        if let profile {
            let label = profileLabel ?? TapeProfile.outsideGraph
            timed = { gradient, needs in
                let start = TapeProfile.now()
                defer { profile.addBackward(label, seconds: TapeProfile.seconds(since: start)) }
                return backward(gradient, needs)
            }
        }
        records[id] = Record(inputs: inputs.map(\.id), requires: requires, backward: timed)
        return Variable(id: id, value: value, requiresGradient: true)
    }

    /// Gradients of `output` (seeded with `seed`, by default ones: for a scalar loss, d loss / d loss = 1) with
    /// respect to each of `targets` (nil where no gradient reaches one). Consumes the tape's backward rules.
    public func gradients(of output: Variable, seed: Tensor? = nil, withRespectTo targets: [Variable]) -> [Tensor?] {
        gradients(seeds: [(output, seed ?? Tensor(shape: output.shape, repeating: 1))], withRespectTo: targets)
    }

    /// Gradients with respect to `targets` from several seeded variables at once (e.g. losses on intermediate
    /// values). Consumes the tape's backward rules.
    public func gradients(seeds: [(Variable, Tensor)], withRespectTo targets: [Variable]) -> [Tensor?] {
        var pending: [Int: Tensor] = [:]
        for (variable, seed) in seeds where variable.requiresGradient {
            precondition(seed.shape == variable.shape, "seed \(seed.shape) does not match \(variable.shape)")
            accumulate(&pending, variable.id, seed)
        }
        let wanted = Set(targets.map(\.id))
        var result: [Int: Tensor] = [:]
        let highest = pending.keys.max() ?? -1
        for id in stride(from: highest, through: 0, by: -1) {
            guard let gradient = pending.removeValue(forKey: id) else { continue }
            if wanted.contains(id) { result[id] = gradient }
            guard let record = records.removeValue(forKey: id), let backward = record.backward else { continue }
            let inputGradients = backward(gradient, record.requires)
            for (input, (needed, inputGradient)) in zip(record.inputs, zip(record.requires, inputGradients)) {
                if needed, let inputGradient { accumulate(&pending, input, inputGradient) }
            }
        }
        return targets.map { result[$0.id] }
    }

    /// Adds `gradient` to what `id` has pending (a value used more than once, like a residual block's input).
    private func accumulate(_ pending: inout [Int: Tensor], _ id: Int, _ gradient: Tensor) {
        // A fresh sum in one parallel pass: the pending gradient's storage is often shared (an add passes its
        // gradient to both operands), so updating it in place would first copy it.
        pending[id] = pending[id].map { FP32.binary($0, gradient, .add) } ?? gradient
    }
}
