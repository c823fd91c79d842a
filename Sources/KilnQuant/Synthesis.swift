import KilnGraph
import KilnStudent
import KilnTensor

/// How calibration images are made without real data.
public enum SynthesisMethod: String, Sendable, CaseIterable {
    /// Genie: a fresh generator per batch plus learnable latents, swing convolution, BatchNorm-statistics loss.
    case genie
    /// ZeroQ: the pixels themselves optimised against the BatchNorm-statistics loss (baseline).
    case zeroq
    /// N(0, 1) noise (naive baseline).
    case gaussian
}

/// Choices for data synthesis. Defaults follow the Genie reference (SamsungLabs/Genie) where it applies, with
/// the count and iterations scaled down so that the committed teachers take minutes on 2 cores.
public struct SynthesisOptions: Sendable {
    public var method: SynthesisMethod = .genie
    /// Number of images.
    public var count = 128
    /// Optimisation steps per batch at most (see `plateau` and `deadline`).
    public var iterations = 200
    /// Images per batch (each batch has its own generator and latents).
    public var batch = 64
    /// Seed of every random draw; the same seed gives the same images on the same machine.
    public var seed: UInt64 = 0
    /// Adam learning rate of the latents (genie) or pixels (zeroq).
    public var latentLearningRate: Float = 0.1
    /// Adam learning rate of the generator's weights.
    public var generatorLearningRate: Float = 0.01
    /// Latent size of the generator.
    public var latentSize = 256
    /// Reflect-pad-and-crop jitter before strided convolutions (genie only).
    public var swingConvolution = true
    /// What real inputs look like, when known: images are then clamped into its per-channel ranges.
    public var inputDomain: InputDomain?
    /// Take each channel's target mean and std of the input term (each image's channels are pushed toward them)
    /// from the teacher's first BatchNorm (`InputStatistics`) instead of 0 and 1, and scale the generator's output
    /// to them, so that a teacher trained on inputs in another convention (x/255, [−1, 1]) gets images in it.
    public var estimateInputStatistics = true

    /// Stop a batch once its loss has stopped improving (nil: always run `iterations`).
    public var plateau: PlateauStop? = SynthesisOptions.defaultPlateau
    /// The plateau rule of the defaults: the lowest loss has not fallen by 2% in 40 iterations (README, "Budgets").
    public static let defaultPlateau = PlateauStop(patience: 40, minimumImprovement: 0.02)
    /// Stop by this time: each batch gets an equal share of the time left when it starts (nil: no limit). The images
    /// then depend on the machine's speed.
    public var deadline: Deadline?

    /// Make only this shard of the run: its share of the batches, each image the same bit for bit as in the whole
    /// run (every batch draws from its own seeded stream); nil makes all of them.
    public var shard: SynthesisShard?

    /// Defaults.
    public init(method: SynthesisMethod = .genie, count: Int = 128, iterations: Int = 200, batch: Int = 64, seed: UInt64 = 0) {
        self.method = method
        self.count = count
        self.iterations = iterations
        self.batch = batch
        self.seed = seed
    }
}

/// Shard `index` of `count` (from 0) of a synthesis run: a contiguous range of its batches.
public struct SynthesisShard: Sendable, Equatable {
    public var index: Int
    public var count: Int

    /// A shard; `index` in 0..<count.
    public init(index: Int, count: Int) {
        self.index = index
        self.count = count
    }

    /// The batches of a run of `batches` this shard makes: shard i has batches i·B/N ..< (i+1)·B/N.
    public func batches(of batches: Int) -> Range<Int> { (batches * index / count)..<(batches * (index + 1) / count) }
}

/// Where a synthesis run is, reported after every iteration.
public struct SynthesisProgress: Sendable {
    /// The batch being optimised, counted within the shard when there is one, of `batches`.
    public var batch: Int
    public var batches: Int
    public var iteration: Int
    public var iterations: Int
    public var loss: Float
}

/// Synthetic calibration images and how the optimisation went.
public struct SynthesisResult: Sendable {
    /// Images [count, ...teacher input shape].
    public var images: Tensor
    /// BatchNorm-statistics loss of each batch at its first iteration and of the images kept: each batch keeps
    /// the images of its lowest loss, so a late spike of the optimisation costs nothing (empty for gaussian).
    public var initialLosses: [Float]
    public var finalLosses: [Float]
    /// Iterations each batch ran (fewer than the options' when it stopped on a plateau or its share of the time).
    public var iterationsRun: [Int] = []
    /// Wall time per 100 iterations of one batch, in seconds.
    public var secondsPer100Iterations: Double?
}

extension SynthesisResult {
    /// "200 iterations", or how many the batches ran when some stopped early ("at most 200 iterations, 57–123 run").
    public func iterationsDescription(of options: SynthesisOptions) -> String {
        guard let fewest = iterationsRun.min(), let most = iterationsRun.max(), fewest < options.iterations else {
            return "\(options.iterations) iterations"
        }
        return "at most \(options.iterations) iterations, \(fewest == most ? "\(fewest)" : "\(fewest)–\(most)") run"
    }
}

/// Zero-shot calibration data from a teacher's BatchNorm statistics.
public enum Synthesizer {
    /// Makes `options.count` images that drive the teacher's BatchNorm inputs toward their running statistics.
    public static func synthesize(_ teacher: Graph, options: SynthesisOptions,
                                  progress: ((SynthesisProgress) -> Void)? = nil) throws -> SynthesisResult {
        guard teacher.inputs.count == 1 else { throw QuantizeError("synthesis needs a single-input model") }
        let shape = teacher[teacher.inputs[0]].shape
        guard shape.count == 4, shape[0] == batchDimension else {
            throw QuantizeError("synthesis needs an image input [N, C, H, W], this model takes \(shape.shapeDescription)")
        }
        guard options.count >= 1, options.batch >= 2, options.iterations >= 1 else {
            throw QuantizeError("count must be ≥ 1, batch ≥ 2 and iterations ≥ 1")
        }
        let batches = (options.count + options.batch - 1) / options.batch
        if let shard = options.shard, shard.count < 1 || shard.index < 0 || shard.index >= shard.count || shard.count > batches {
            throw QuantizeError("shard \(shard.index)/\(shard.count) does not exist: a run of \(batches) batches has shards 0/N … (N−1)/N with 1 ≤ N ≤ \(batches)")
        }
        let mine = options.shard?.batches(of: batches) ?? 0..<batches
        /// Images of batch `index`, and the generator it draws from.
        func batchSize(_ index: Int) -> Int { min(options.batch, options.count - index * options.batch) }
        func stream(_ index: Int) -> SeededGenerator { SeededGenerator(seed: options.seed, stream: UInt64(index)) }
        let sample = Array(shape.dropFirst())
        let shardCount = mine.reduce(0) { $0 + batchSize($1) }
        let domain: InputDomain?
        do {
            domain = try options.inputDomain?.validated(channels: sample[0])
        } catch let error as InputDomainError {
            throw QuantizeError(error.message)
        }
        if options.method == .gaussian {
            var scalars: [Float] = []
            for index in mine {
                var rng = stream(index)
                scalars += rng.normal([batchSize(index)] + sample).scalars
            }
            let noise = Tensor(shape: [shardCount] + sample, scalars: scalars)
            return SynthesisResult(images: domain.map { clamped(noise, to: $0) } ?? noise, initialLosses: [], finalLosses: [])
        }
        let statistics = try batchNormTargets(teacher)
        // Per-channel targets of the input term: estimated from the first BatchNorm, or mean 0, std 1.
        let channels = sample[0]
        var inputTargets: (mean: [Float], std: Float)? = (mean: [Float](repeating: 0, count: channels), std: 1)
        if options.estimateInputStatistics, let estimate = InputStatistics.estimate(teacher) {
            inputTargets = (estimate.mean, estimate.std)
        }
        var images: [Float] = []
        var initial: [Float] = [], final: [Float] = [], iterationsRun: [Int] = []
        let clock = ContinuousClock()
        let start = clock.now
        for index in mine {
            let size = batchSize(index)
            var rng = stream(index)
            // Until the batch's share of the time left, or the plateau, or `iterations`.
            let batchDeadline = options.deadline?.share(of: mine.upperBound - index)
            var plateau = options.plateau.map(PlateauStop.Tracker.init)
            var ran = 0
            let step = { (iteration: Int, loss: Float) -> Bool in
                ran = iteration + 1
                progress?(SynthesisProgress(batch: index - mine.lowerBound, batches: mine.count, iteration: iteration, iterations: options.iterations, loss: loss))
                let flat = plateau?.update(loss: loss) ?? false
                return flat || batchDeadline?.passed == true
            }
            let run: (first: Float, last: Float, images: Tensor)
            switch options.method {
            case .genie:
                run = try genieBatch(teacher, statistics, inputTargets, size: max(size, 2), sample: sample, options, &rng, report: step)
            case .zeroq:
                run = try zeroqBatch(teacher, statistics, inputTargets, size: max(size, 2), sample: sample, options, &rng, report: step)
            case .gaussian:
                fatalError("handled above")
            }
            images += run.images.scalars.prefix(size * sample.elementCount)
            initial.append(run.first)
            final.append(run.last)
            iterationsRun.append(ran)
        }
        let elapsed = clock.now - start
        let seconds = elapsed.seconds
        return SynthesisResult(images: Tensor(shape: [shardCount] + sample, scalars: images), initialLosses: initial,
                               finalLosses: final, iterationsRun: iterationsRun,
                               secondsPer100Iterations: seconds / Double(max(iterationsRun.reduce(0, +), 1)) * 100)
    }

    /// Images clamped into the per-channel ranges of `domain` ([N, C, ...] layout).
    static func clamped(_ images: Tensor, to domain: InputDomain) -> Tensor {
        let channels = images.shape[1], plane = images.count / images.shape[0] / channels
        var scalars = images.scalars
        for i in scalars.indices {
            let range = domain.channelRange(i / plane % channels)
            scalars[i] = min(max(scalars[i], range.lowerBound), range.upperBound)
        }
        return Tensor(shape: images.shape, scalars: scalars)
    }

    /// Clamps images into the domain's per-channel ranges, low + relu(x − low) − relu(x − high), so that pixels
    /// outside get no gradient (the images are the generator's, which the clamp does not otherwise reshape).
    static func intoDomain(_ tape: Tape, _ x: Variable, _ domain: InputDomain) -> Variable {
        let channels = x.shape[1]
        let ranges = (0..<channels).map(domain.channelRange)
        let shape = [1, channels] + [Int](repeating: 1, count: x.shape.count - 2)
        let low = tape.constant(Tensor(shape: shape, scalars: ranges.map(\.lowerBound)))
        let high = tape.constant(Tensor(shape: shape, scalars: ranges.map(\.upperBound)))
        let above = tape.activation(tape.binary(x, low, .sub), .relu)
        let beyond = tape.activation(tape.binary(x, high, .sub), .relu)
        return tape.binary(tape.binary(low, above, .add), beyond, .sub)
    }

    /// Per-channel x · std + mean, moving standardized generator outputs to the estimated input statistics.
    static func affine(_ tape: Tape, _ x: Variable, _ targets: (mean: [Float], std: Float)) -> Variable {
        let shape = [1, x.shape[1]] + [Int](repeating: 1, count: x.shape.count - 2)
        return tape.binary(tape.scale(x, by: targets.std), tape.constant(Tensor(shape: shape, scalars: targets.mean)), .add)
    }

    /// Running mean and σ = √(running variance + 1e-6) of every BatchNorm node, by node index.
    static func batchNormTargets(_ teacher: Graph) throws -> [Int: (mean: Tensor, std: Tensor)] {
        var targets: [Int: (mean: Tensor, std: Tensor)] = [:]
        for (index, node) in teacher.nodes.enumerated() {
            guard case .batchNorm = node.op else { continue }
            guard let mean = teacher.constants[node.inputs[3]], let variance = teacher.constants[node.inputs[4]] else {
                throw QuantizeError("BatchNorm node '\(node.name)' has no constant running statistics")
            }
            targets[index] = (mean, Tensor(shape: variance.shape, scalars: variance.scalars.map { ($0 + 1e-6).squareRoot() }))
        }
        guard !targets.isEmpty else {
            throw QuantizeError("""
                the teacher has no BatchNormalization nodes: zero-shot synthesis needs their running statistics. \
                \(batchNormExportAdvice), or quantize with real images (--calibration X.npy)
                """)
        }
        return targets
    }

    /// How to export a PyTorch model with its BatchNorm layers kept (both of PyTorch's exporters fold them into the
    /// convolutions by default).
    public static let batchNormExportAdvice = """
        Export the model with BatchNorm kept (PyTorch: model.eval(); torch.onnx.export(model, args, path, \
        optimize=False), or with the legacy exporter torch.onnx.export(..., dynamo=False, \
        training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False))
        """

    /// The BatchNorm-statistics loss of one teacher pass on `input`: per BN layer the mean squared difference
    /// of the batch's per-channel mean and (unbiased) std of the BN input from the running ones, plus the
    /// input term pushing each image's per-channel mean to 0 and std to 1.
    static func statisticsLoss(_ tape: Tape, _ teacher: Graph, _ targets: [Int: (mean: Tensor, std: Tensor)],
                               input: Variable, inputTargets: (mean: [Float], std: Float)?,
                               swing: UnsafeMutablePointer<SeededGenerator>?) throws -> Variable {
        let nodeIndex = Dictionary(uniqueKeysWithValues: teacher.nodes.enumerated().map { ($1.output, $0) })
        var terms: [Variable] = []
        func stdAndMean(_ x: Variable) -> (std: Variable, mean: Variable) {
            let (mean, variance) = tape.channelMoments(x)
            let count = Float(x.value.count / x.shape[1])
            let unbiased = tape.scale(variance, by: count / max(count - 1, 1))
            return (tape.squareRoot(unbiased, epsilon: 1e-8), mean)
        }
        func meanSquaredDistance(_ a: Variable, _ target: Tensor) -> Variable {
            tape.meanSquaredError(a, tape.constant(target))
        }
        if let inputTargets {
            // Input term: every image's channels toward the targets (mean 0, std 1 for inputs normalized by their
            // dataset's statistics).
            let (n, c) = (input.shape[0], input.shape[1])
            let perImage = tape.reshape(input, [1, n * c, input.shape[2] * input.shape[3]])
            let (inputStd, inputMean) = stdAndMean(perImage)
            let means = Tensor(shape: [n * c], scalars: (0..<(n * c)).map { inputTargets.mean[$0 % c] })
            terms.append(tape.scale(tape.meanSquaredError(inputMean, tape.constant(means)), by: Float(c)))
            terms.append(tape.scale(tape.meanSquaredError(inputStd, tape.constant(Tensor(shape: [n * c], repeating: inputTargets.std))), by: Float(c)))
        }
        _ = try tape.run(teacher, inputs: [input], replace: { node, operands in
            guard let swing, case .conv(let a) = node.op, a.strides != [1, 1] else { return nil }
            // Swing convolution: reflect-pad by one pixel, crop back at a random offset, then convolve.
            let x = operands[0]
            let padded = tape.pad(x, PadAttributes(pads: [0, 0, 1, 1, 0, 0, 1, 1], mode: .reflect))
            let (dy, dx) = (swing.pointee.nextIndex(3), swing.pointee.nextIndex(3))
            let cropped = tape.slice(padded, SliceAttributes(starts: [0, 0, dy, dx], counts: x.shape, steps: [1, 1, 1, 1]))
            return tape.conv2d(cropped, operands[1], operands.count > 2 ? operands[2] : nil, a)
        }, observe: { node, operands, _ in
            guard let index = nodeIndex[node.output], let target = targets[index] else { return }
            let (std, mean) = stdAndMean(operands[0])
            terms.append(meanSquaredDistance(mean, target.mean))
            terms.append(meanSquaredDistance(std, target.std))
        })
        var total = terms[0]
        for term in terms.dropFirst() { total = tape.binary(total, term, .add) }
        return total
    }

    /// One Genie batch: a fresh generator and latents, optimised together until `report` (called with each
    /// iteration's loss) says stop; returns the images of the iteration with the lowest loss.
    static func genieBatch(_ teacher: Graph, _ targets: [Int: (mean: Tensor, std: Tensor)], _ inputTargets: (mean: [Float], std: Float)?,
                           size: Int, sample: [Int],
                           _ options: SynthesisOptions, _ rng: inout SeededGenerator,
                           report: (Int, Float) -> Bool) throws -> (first: Float, last: Float, images: Tensor) {
        var generator = try GenieGenerator(latentSize: options.latentSize, output: sample, rng: &rng)
        var latents = [rng.normal([size, options.latentSize])]
        var latentOptimizer = Adam(learningRate: options.latentLearningRate)
        var generatorOptimizer = Adam(learningRate: options.generatorLearningRate)
        var plateau = ReduceOnPlateau(factor: 0.1, patience: 100, threshold: 1e-4, minimum: 1e-4)
        let decay = ExponentialSchedule(base: options.generatorLearningRate, gamma: 0.95)
        var first: Float = 0, best = Float.infinity
        var images = Tensor(shape: [size] + sample, repeating: 0)
        var swing = rng
        for iteration in 0..<options.iterations {
            // The tape (and the weights it holds) is gone before the optimizers update the weights in place:
            // while it holds them, each update would copy them first (400 MB for a 224×224 generator).
            let (value, gradients, output): (Float, [Tensor?], Tensor) = try {
                let tape = Tape()
                let z = tape.leaf(latents[0])
                let parameters = generator.parameters.map { tape.leaf($0) }
                var x = generator.forward(tape, z, parameters)
                if let inputTargets, inputTargets.std != 1 || inputTargets.mean.contains(where: { $0 != 0 }) {
                    x = affine(tape, x, inputTargets)
                }
                if let domain = options.inputDomain { x = intoDomain(tape, x, domain) }
                let loss = try withUnsafeMutablePointer(to: &swing) { pointer in
                    try statisticsLoss(tape, teacher, targets, input: x, inputTargets: inputTargets,
                                       swing: options.swingConvolution ? pointer : nil)
                }
                let value = loss.value.scalars[0]
                if report(iteration, value) { return (value, [], x.value) }
                return (value, tape.gradients(of: loss, withRespectTo: [z] + parameters), x.value)
            }()
            if iteration == 0 { first = value }
            if value < best || iteration == 0 {
                best = value
                images = output
            }
            if gradients.isEmpty { break }
            latentOptimizer.step(&latents, gradients: [gradients[0]])
            generatorOptimizer.step(&generator.parameters, gradients: Array(gradients.dropFirst()))
            latentOptimizer.learningRate = plateau.update(loss: value, learningRate: latentOptimizer.learningRate)
            if (iteration + 1) % 100 == 0 { generatorOptimizer.learningRate = decay.rate(at: (iteration + 1) / 100) }
        }
        rng = swing
        return (first, best, images)
    }

    /// One ZeroQ batch: N(0, 1) pixels optimised directly with Adam against the same loss (no swing) until `report`
    /// says stop; returns the pixels of the iteration with the lowest loss.
    static func zeroqBatch(_ teacher: Graph, _ targets: [Int: (mean: Tensor, std: Tensor)], _ inputTargets: (mean: [Float], std: Float)?,
                           size: Int, sample: [Int],
                           _ options: SynthesisOptions, _ rng: inout SeededGenerator,
                           report: (Int, Float) -> Bool) throws -> (first: Float, last: Float, images: Tensor) {
        var pixels = [rng.normal([size] + sample)]
        if let domain = options.inputDomain { pixels[0] = clamped(pixels[0], to: domain) }
        if let inputTargets {
            let plane = sample.dropFirst().reduce(1, *)
            pixels[0].scalars = pixels[0].scalars.enumerated().map { i, v in v * inputTargets.std + inputTargets.mean[i / plane % sample[0]] }
        }
        var optimizer = Adam(learningRate: options.latentLearningRate)
        var first: Float = 0, best = Float.infinity
        var images = pixels[0]
        for iteration in 0..<options.iterations {
            let tape = Tape()
            let x = tape.leaf(pixels[0])
            let loss = try statisticsLoss(tape, teacher, targets, input: x, inputTargets: inputTargets, swing: nil)
            let value = loss.value.scalars[0]
            if iteration == 0 { first = value }
            if value < best || iteration == 0 {
                best = value
                images = pixels[0]
            }
            if report(iteration, value) { break }
            optimizer.step(&pixels, gradients: tape.gradients(of: loss, withRespectTo: [x]))
            if let domain = options.inputDomain { pixels[0] = clamped(pixels[0], to: domain) }
        }
        return (first, best, images)
    }
}

/// Genie's generator, sized from the teacher's input: latent → linear → BN → ×2 nearest → conv 3×3 (128→64) →
/// BN → LeakyReLU(0.2) → ×2 nearest → conv 3×3 (64→C) → tanh → BN without affine. All BatchNorms use the
/// batch's statistics; weights start as PyTorch initialises them.
struct GenieGenerator {
    static let wide = 128, narrow = 64
    let height0: Int, width0: Int, channels: Int
    /// Linear weight [latent, 128·h0·w0] and bias, BN0 γ β, conv1 weight and bias, BN1 γ β, conv2 weight and bias.
    var parameters: [Tensor]

    init(latentSize: Int, output: [Int], rng: inout SeededGenerator) throws {
        guard output[1] % 4 == 0, output[2] % 4 == 0 else {
            throw QuantizeError("the generator upsamples ×4: image height and width must be multiples of 4, got \(output[1])×\(output[2])")
        }
        (channels, height0, width0) = (output[0], output[1] / 4, output[2] / 4)
        let features = Self.wide * height0 * width0
        func uniform(_ shape: [Int], fanIn: Int) -> Tensor {
            let bound = 1 / Float(fanIn).squareRoot()
            return rng.uniform(shape, -bound, bound)
        }
        parameters = [
            uniform([latentSize, features], fanIn: latentSize), uniform([features], fanIn: latentSize),
            Tensor(shape: [Self.wide], repeating: 1), Tensor(shape: [Self.wide], repeating: 0),
            uniform([Self.narrow, Self.wide, 3, 3], fanIn: Self.wide * 9), uniform([Self.narrow], fanIn: Self.wide * 9),
            Tensor(shape: [Self.narrow], repeating: 1), Tensor(shape: [Self.narrow], repeating: 0),
            uniform([channels, Self.narrow, 3, 3], fanIn: Self.narrow * 9), uniform([channels], fanIn: Self.narrow * 9),
        ]
    }

    /// What one image costs through the generator: the multiply-accumulates of its linear layer and two
    /// convolutions, and the elements each step of `forward` writes.
    static func cost(latentSize: Int, output: [Int]) -> QuantizationBudget.ImageCost {
        let (channels, height, width) = (output[0], output[1], output[2])
        let (quarter, half, full) = ((height / 4) * (width / 4), (height / 2) * (width / 2), height * width)
        let macs = latentSize * wide * quarter + wide * narrow * 9 * half + narrow * channels * 9 * full
        // Linear, bias, reshape, BatchNorm at a quarter; upsampled; convolution, BatchNorm, activation at half;
        // upsampled; convolution, tanh, BatchNorm at full size.
        let activations = 4 * wide * quarter + wide * half + 3 * narrow * half + narrow * full + 3 * channels * full
        return .init(macs: macs, activations: activations)
    }

    func forward(_ tape: Tape, _ z: Variable, _ p: [Variable]) -> Variable {
        let n = z.shape[0]
        let same = ConvAttributes(strides: [1, 1], pads: [1, 1, 1, 1])
        var x = tape.binary(tape.matMul(z, p[0]), p[1], .add)
        x = tape.reshape(x, [n, Self.wide, height0, width0])
        x = tape.batchNormTraining(x, scale: p[2], bias: p[3], epsilon: 1e-5)
        x = tape.upsampleNearest(x, scaleH: 2, scaleW: 2)
        x = tape.conv2d(x, p[4], p[5], same)
        x = tape.batchNormTraining(x, scale: p[6], bias: p[7], epsilon: 1e-5)
        x = tape.activation(x, .leakyRelu(alpha: 0.2))
        x = tape.upsampleNearest(x, scaleH: 2, scaleW: 2)
        x = tape.conv2d(x, p[8], p[9], same)
        x = tape.activation(x, .tanh)
        return tape.batchNormTraining(x, scale: nil, bias: nil, epsilon: 1e-5)
    }
}
