import KilnGraph

/// How much work zero-shot quantization spends: images and iterations of synthesis and iterations of block
/// reconstruction. Each preset is a most-work point for small teachers; a teacher whose synthesis would cost more
/// than the preset's cap of multiply-accumulates gets fewer images, then fewer iterations, so that the wall time
/// follows the model's cost instead of growing with it. Synthesis batches also stop on a plateau of their loss.
public enum QuantizationBudget: String, Sendable, CaseIterable {
    case fast
    case `default`
    case thorough

    /// Images, iterations per batch and reconstruction iterations per block for a teacher and generator of given
    /// per-image costs.
    public struct Plan: Sendable, Equatable {
        public var images: Int
        public var iterations: Int
        public var iterationsPerBlock: Int
        /// Whether the cap cut the preset's images or iterations.
        public var scaledDown: Bool
    }

    /// What one image costs in one synthesis iteration, forward: multiply-accumulates and activation elements
    /// written. Both count: ops that do little arithmetic per element (BatchNorm, activations, depthwise
    /// convolutions, the generator's upsampling) are bound by memory traffic, not multiply-accumulates.
    public struct ImageCost: Sendable, Equatable {
        public var macs: Int
        public var activations: Int

        /// A cost.
        public init(macs: Int, activations: Int) {
            (self.macs, self.activations) = (macs, activations)
        }

        /// Multiply-accumulates an activation element costs as much time as, fitted to two measured synthesis
        /// steps (forward and backward, generator included, 2 threads of a Zen 5): ResNet-18 at 224×224, 2.9 G MACs
        /// and 17.5 M activations, 131 ms per image and iteration; EfficientNet-Lite0, 1.5 G and 33.9 M, 183 ms.
        static let macsPerActivation = 275.0

        /// The cost in multiply-accumulate equivalents.
        var equivalentMACs: Double { Double(macs) + Self.macsPerActivation * Double(activations) }

        static func + (a: ImageCost, b: ImageCost) -> ImageCost {
            ImageCost(macs: a.macs + b.macs, activations: a.activations + b.activations)
        }
    }

    /// The preset's images, iterations per batch and reconstruction iterations per block, before the cap.
    var preset: (images: Int, iterations: Int, iterationsPerBlock: Int) {
        switch self {
        case .fast: return (64, 100, 100)
        case .default: return (128, 200, 500)
        case .thorough: return (256, 500, 2000)
        }
    }

    /// Synthesis work (teacher and generator, forward, in multiply-accumulate equivalents, `ImageCost`, summed over
    /// images and iterations) the preset spends at most. The default's cap gives ResNet-18 at 224×224 16 images × 200
    /// iterations (a zero-shot W8A8 run of 474 s on a 2-core Zen 5, README "Budgets") and EfficientNet-Lite0 16 × 144;
    /// the others are a quarter and four times it.
    var cap: Double {
        switch self {
        case .fast: return 6.25e12
        case .default: return 25e12
        case .thorough: return 100e12
        }
    }

    /// Fewest images and iterations a cut goes down to.
    static let floor = (images: 16, iterations: 50)

    /// The plan for a teacher and a generator of the given per-image costs.
    public func plan(teacher: ImageCost, generator: ImageCost) -> Plan {
        let preset = self.preset
        let perImageIteration = max(1, (teacher + generator).equivalentMACs)
        var images = preset.images, iterations = preset.iterations
        // Images first (a multiple of 8, down to the floor), then iterations (down to theirs): fewer images cost
        // the calibration ranges less than fewer steps cost every image.
        let affordable = cap / perImageIteration  // image-iterations within the cap
        if Double(images * iterations) > affordable {
            images = max(Self.floor.images, min(images, Int(affordable / Double(iterations)) / 8 * 8))
            iterations = max(Self.floor.iterations, min(iterations, Int(affordable / Double(images))))
        }
        return Plan(images: images, iterations: iterations, iterationsPerBlock: preset.iterationsPerBlock,
                    scaledDown: images < preset.images || iterations < preset.iterations)
    }

    /// The plan for `teacher` with Genie's generator at its input size.
    public func plan(for teacher: Graph, latentSize: Int = SynthesisOptions().latentSize) -> Plan {
        let shape = teacher.inputs.first.map { teacher[$0].shape } ?? []
        let sample = shape.count == 4 ? Array(shape.dropFirst()) : [1, 4, 4]
        return plan(teacher: ImageCost(macs: teacher.macsPerSample, activations: teacher.activationsPerSample),
                    generator: GenieGenerator.cost(latentSize: latentSize, output: sample))
    }
}

/// When a synthesis batch has stopped improving: its lowest loss has not fallen by `minimumImprovement` (relative)
/// within the last `patience` iterations.
public struct PlateauStop: Sendable, Equatable {
    public var patience: Int
    public var minimumImprovement: Float

    /// A plateau rule.
    public init(patience: Int, minimumImprovement: Float) {
        self.patience = patience
        self.minimumImprovement = minimumImprovement
    }

    /// Tracks one batch: call `update` with each iteration's loss; it returns true when the batch should stop.
    struct Tracker {
        let rule: PlateauStop
        private var reference = Float.infinity  // the lowest loss when the current wait began
        private var waited = 0

        init(_ rule: PlateauStop) { self.rule = rule }

        mutating func update(loss: Float) -> Bool {
            if loss.isFinite && loss < reference * (1 - rule.minimumImprovement) {
                reference = loss
                waited = 0
                return false
            }
            waited += 1
            return waited >= rule.patience
        }
    }
}

extension Duration {
    /// The duration in seconds.
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}

/// A wall-clock limit shared out over a run's remaining parts (synthesis batches, reconstruction blocks).
public struct Deadline: Sendable {
    public let instant: ContinuousClock.Instant

    /// The deadline `seconds` from now.
    public init(secondsFromNow seconds: Double) {
        instant = ContinuousClock.now.advanced(by: .milliseconds(Int64(seconds * 1000)))
    }

    init(instant: ContinuousClock.Instant) { self.instant = instant }

    /// The deadline of the next of `remaining` equal parts: now plus an equal share of the time left.
    func share(of remaining: Int) -> Deadline {
        let now = ContinuousClock.now
        guard instant > now, remaining > 1 else { return self }
        return Deadline(instant: now + (instant - now) / remaining)
    }

    /// Whether it has passed.
    var passed: Bool { ContinuousClock.now >= instant }

    /// Seconds left (negative once passed).
    var secondsLeft: Double {
        (instant - ContinuousClock.now).seconds
    }
}
