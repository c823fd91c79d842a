import KilnGraph
import KilnStudent
import KilnTensor

/// Weight and activation bit widths of a student.
public struct BitWidths: Hashable, Sendable, CustomStringConvertible {
    /// Bits per weight (2...8).
    public var weights: Int
    /// Bits per activation (2...8).
    public var activations: Int

    /// 8-bit weights and activations (the default).
    public static let w8a8 = BitWidths(weights: 8, activations: 8)
    /// 4-bit weights, 8-bit activations.
    public static let w4a8 = BitWidths(weights: 4, activations: 8)
    /// 4-bit weights and activations.
    public static let w4a4 = BitWidths(weights: 4, activations: 4)
    /// 2-bit weights, 4-bit activations.
    public static let w2a4 = BitWidths(weights: 2, activations: 4)

    /// Parses "w4a4" and the like.
    public init?(_ text: String) {
        let parts = text.lowercased().split(separator: "a")
        guard parts.count == 2, parts[0].hasPrefix("w"), let w = Int(parts[0].dropFirst()), let a = Int(parts[1]),
              (2...8).contains(w), (2...8).contains(a) else { return nil }
        self.init(weights: w, activations: a)
    }

    /// The given widths.
    public init(weights: Int, activations: Int) {
        self.weights = weights
        self.activations = activations
    }

    /// "w4a4" and the like.
    public var description: String { "w\(weights)a\(activations)" }
}

/// Choices for quantization with block reconstruction. Defaults follow the Genie reference (SamsungLabs/Genie)
/// where it applies, with fewer iterations per block so that the committed teachers take minutes on 2 cores.
public struct DistillOptions: Sendable {
    /// Bit widths of the student.
    public var bits: BitWidths = .w8a8
    /// Keep the first and last weighted layers (and their inputs) at 8 bits unless this is set.
    public var allLayers = false
    /// Reconstruct each block (AdaRound + learned steps + QDrop); false: search-based initialisation only.
    public var distill = true
    /// Optimisation steps per block.
    public var iterationsPerBlock = 500
    /// Images per step.
    public var batch = 32
    /// Adam learning rates of the soft rounding variables, weight steps and activation steps.
    public var roundingLearningRate: Float = 1e-3
    public var weightStepLearningRate: Float = 1e-4
    public var activationStepLearningRate: Float = 4e-5
    /// Weight λ of the rounding regulariser, its warm-up fraction and β annealed from `betaStart` to `betaEnd`.
    public var roundingWeight: Float = 1
    public var warmup: Float = 0.2
    public var betaStart: Float = 20
    public var betaEnd: Float = 2
    /// QDrop: probability of keeping the quantized value of each element during reconstruction.
    public var qdrop: Float = 0.5
    /// What real inputs look like; nil: what the teacher's metadata states, if anything (see `InputRange`).
    public var inputDomain: InputDomain?
    /// Seed of batch sampling and QDrop.
    public var seed: UInt64 = 0
    /// Finish reconstruction by this time (nil: no limit): each block gets an equal share of the time left when it
    /// starts and runs as many of `iterationsPerBlock` as its first iteration's time says fit, with its schedules
    /// (learning rates, rounding annealing) laid out over that count.
    public var deadline: Deadline?

    /// Options with the given bit widths, reconstruction switch and iterations; the rest as the reference.
    public init(bits: BitWidths = .w8a8, distill: Bool = true, iterationsPerBlock: Int = 500) {
        self.bits = bits
        self.distill = distill
        self.iterationsPerBlock = iterationsPerBlock
    }
}

/// Where a distillation run is.
public struct DistillProgress: Sendable {
    /// Index of the block being optimised, and the number of blocks.
    public var block: Int
    public var blocks: Int
    /// Step within the block, and steps per block.
    public var iteration: Int
    public var iterations: Int
    /// Reconstruction loss of this step's batch.
    public var loss: Float
}

/// Reconstruction error of one block, before and after its optimisation.
public struct BlockReport: Codable, Sendable {
    /// Name of the block's first node.
    public var block: String
    /// Graph nodes in the block.
    public var nodes: Int
    /// Output MSE (summed over channels) of the hard-quantized block against the teacher block, on all
    /// calibration images: at initialisation, and of the block the student keeps (never above `lossBefore`).
    public var lossBefore: Float
    public var lossAfter: Float
    /// The loss the reconstruction itself reached (the greatest finite Float if it diverged); above `lossBefore`
    /// when the block kept its initialisation.
    public var lossReconstructed: Float
    /// Wall time of the block's optimisation.
    public var seconds: Double

    /// Whether reconstruction made the block worse, so the student keeps its search-based initialisation.
    public var keptInitialization: Bool

    /// A report of a block whose reconstruction reached `lossReconstructed` from `lossBefore`: the block keeps
    /// whichever of the two is lower (NaN counts as worse).
    public init(block: String, nodes: Int, lossBefore: Float, lossReconstructed: Float, seconds: Double) {
        self.block = block
        self.nodes = nodes
        self.lossBefore = lossBefore
        self.lossReconstructed = lossReconstructed.isFinite ? lossReconstructed : .greatestFiniteMagnitude
        keptInitialization = !(lossReconstructed <= lossBefore)
        lossAfter = keptInitialization ? lossBefore : lossReconstructed
        self.seconds = seconds
    }

    enum CodingKeys: String, CodingKey { case block, nodes, lossBefore, lossAfter, lossReconstructed, seconds, keptInitialization }

    /// Decodes a report; checkpoints written before blocks could keep their initialisation hold the reconstructed
    /// loss in `lossAfter`.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        block = try c.decode(String.self, forKey: .block)
        nodes = try c.decode(Int.self, forKey: .nodes)
        lossBefore = try c.decode(Float.self, forKey: .lossBefore)
        lossAfter = try c.decode(Float.self, forKey: .lossAfter)
        lossReconstructed = try c.decodeIfPresent(Float.self, forKey: .lossReconstructed) ?? lossAfter
        seconds = try c.decode(Double.self, forKey: .seconds)
        keptInitialization = try c.decodeIfPresent(Bool.self, forKey: .keptInitialization) ?? false
    }
}

/// The learned quantization of a student, block by block: what a checkpoint holds.
public struct DistillState: Codable, Sendable {
    /// Blocks finished.
    public var completedBlocks = 0
    /// Weight levels ([M][K], graph order), steps and per-channel level ranges per planned layer index.
    public var weightLevels: [Int: [Int8]] = [:]
    public var weightSteps: [Int: [Float]] = [:]
    public var weightRanges: [Int: [LevelRange]] = [:]
    /// Activation step, zero point and bits per quantized graph value (by value index).
    public var activationSteps: [Int: Float] = [:]
    public var activationZeroPoints: [Int: Int32] = [:]
    public var activationBits: [Int: Int] = [:]
    public var reports: [BlockReport] = []
}

/// The integer levels a weight channel may take: symmetric ±(2^(b−1) − 1) at 8 and 7 bits (at 7, every |level| ≤ 63
/// lets the runtime multiply 8-bit inputs with vpmaddubsw exactly on AVX2 and AVX-512 without VNNI), below that the
/// asymmetric grid of the reference, 2^b levels shifted by an integer zero point so that 0 is one of them (e.g.
/// −2 … 1 at 2 bits). Either way the levels are plain signed integers in int8 storage and the runtime needs no
/// weight zero point.
public struct LevelRange: Codable, Sendable, Hashable {
    /// Lowest and highest integer level.
    public var lowest: Int
    public var highest: Int

    /// The symmetric 8-bit range −127 … 127.
    public static let symmetric8 = LevelRange(lowest: -127, highest: 127)

    /// A level clamped into the range.
    public func clamp(_ level: Float) -> Float { min(max(level, Float(lowest)), Float(highest)) }
}

/// A distilled student, the learned state behind it and each layer's SQNR on the calibration set.
public struct DistillResult: Sendable {
    /// The student.
    public var student: StudentModel
    /// Its learned quantization and the per-block reports.
    public var state: DistillState
    /// Each layer's SQNR against the teacher on the calibration images.
    public var layers: [LayerReport]
}

/// Thrown when a run is asked to stop (e.g. Ctrl-C); the state of the finished blocks is in `state`.
public struct DistillationInterrupted: Error {
    /// The learned state of the finished blocks.
    public var state: DistillState
}

/// Quantization with Genie-style block reconstruction: AdaRound soft bits jointly with learned per-channel
/// weight steps (integer floors frozen at initialisation), LSQ activation steps and QDrop, block by block on the
/// (synthetic or real) calibration data.
public struct Distiller {
    /// The teacher as given (BatchNorm kept: its statistics describe the real inputs), and prepared for lowering.
    let teacher: Graph
    let graph: Graph
    /// BatchNorm nodes folded into convolutions.
    public let foldedBatchNorms: Int
    let plan: [PlannedLayer]
    let blocks: [Block]
    let options: DistillOptions
    /// Bit width of each weighted planned layer and of each quantized value.
    let weightBits: [Int: Int]
    let valueBits: [ValueID: Int]

    /// Prepares the teacher (BatchNorm and padding folded) and decides each layer's bit widths.
    public init(teacher: Graph, options: DistillOptions) throws {
        let prepared = try PreparedTeacher(teacher)
        let graph = prepared.graph
        self.teacher = teacher
        self.graph = graph
        foldedBatchNorms = prepared.foldedBatchNorms
        self.options = options
        plan = try Lowering.plan(graph, allowIslands: false)
        blocks = graph.blocks()
        let planned = plan
        let weighted = planned.indices.filter { planned[$0].hasWeights }
        let edges = options.allLayers ? [] : Set([weighted.first, weighted.last].compactMap { $0 })
        var weightBits: [Int: Int] = [:]
        for index in weighted { weightBits[index] = edges.contains(index) ? 8 : options.bits.weights }
        // A value's bits: 8 if a layer kept at 8 bits reads it (or it is the input or an output), else the
        // activation width.
        var valueBits: [ValueID: Int] = [graph.inputs[0]: 8]
        for layer in plan { valueBits[layer.output] = options.bits.activations }
        for output in graph.outputs { valueBits[output] = 8 }
        for (index, layer) in plan.enumerated() where layer.hasWeights && edges.contains(index) {
            for input in layer.inputs { valueBits[input] = 8 }
        }
        // As in BRECQ and the reference, the second layer's input (the first layer's output) stays 8-bit too.
        if let first = weighted.first, !options.allLayers { valueBits[plan[first].output] = 8 }
        // Max pooling and reshapes pass their input's quantization through: an 8-bit output needs an 8-bit input
        // (the last layer's input behind a flattening reshape), and then every output follows its input.
        for layer in plan.reversed() where layer.kind.keepsInputQuantization {
            if valueBits[layer.output] == 8 { valueBits[layer.inputs[0]] = 8 }
        }
        for layer in plan where layer.kind.keepsInputQuantization {
            valueBits[layer.output] = valueBits[layer.inputs[0]] ?? options.bits.activations
        }
        self.weightBits = weightBits
        self.valueBits = valueBits
    }

    /// Number of blocks.
    public var blockCount: Int { blocks.count }

    /// Learns the quantization on `calibration` and returns the student and the per-block report. Resumes from
    /// `resume` if given; `checkpoint` is called after each block; `shouldStop` is polled between iterations.
    public func run(calibration: Tensor, resume: DistillState? = nil, progress: ((DistillProgress) -> Void)? = nil,
                    checkpoint: ((DistillState) throws -> Void)? = nil, shouldStop: (() -> Bool)? = nil) throws -> DistillResult
    {
        try Quantizer.checkCalibration(calibration, for: graph)
        var state = try resume ?? initialState(calibration)
        if options.distill {
            // Teacher (fp32) and student (quantized so far) inputs of the next block, on every calibration image.
            var teacherInput = calibration
            var studentInput = try hardForward(nodes: 0..<0, input: calibration, state: state)
            for (index, block) in blocks.enumerated() {
                let teacherOutput = try fp32Forward(block, teacherInput)
                if index >= state.completedBlocks {
                    if shouldStop?() == true { throw DistillationInterrupted(state: state) }
                    let report = try reconstruct(block, index: index, teacherInput: teacherInput, studentInput: studentInput,
                                                 teacherOutput: teacherOutput, state: &state, progress: progress, shouldStop: shouldStop)
                    state.reports.append(report)
                    state.completedBlocks = index + 1
                    try checkpoint?(state)
                }
                studentInput = try hardForward(block, studentInput, state: state)
                teacherInput = teacherOutput
            }
        }
        var lowering = Lowering(graph: graph)
        let student = try lowering.build(plan, quantization: { id in
            let bits = state.activationBits[id.index] ?? 8
            return (Quantization(scale: state.activationSteps[id.index] ?? 1, zeroPoint: state.activationZeroPoints[id.index] ?? 0), bits)
        }, weightBits: { weightBits[$0] ?? 8 }, weights: { index in
            guard let levels = state.weightLevels[index], let steps = state.weightSteps[index] else { return nil }
            return WeightQuantization(levels: levels, scales: steps)
        })
        let interpreter = try Interpreter(graph)
        let calibrator = Calibrator(interpreter: interpreter, values: Set(lowering.layerValues.values), batch: 64)
        let layers = try Quantizer.measure(student, lowering.layerValues, interpreter, calibrator, calibration)
        return DistillResult(student: student, state: state, layers: layers)
    }

    // MARK: - Initialisation

    /// Search-based starting point: per-channel weight steps minimising |w − q(w)|^2.4 over clipping ratios,
    /// activation ranges by the quantization-MSE search of the calibration histograms.
    func initialState(_ calibration: Tensor) throws -> DistillState {
        var state = DistillState()
        for (index, layer) in plan.enumerated() where layer.hasWeights {
            let (levels, steps, ranges) = Distiller.searchWeights(channelMajor(layer), channels: layer.outputChannels,
                                                                   bits: weightBits[index] ?? 8)
            state.weightLevels[index] = levels
            state.weightSteps[index] = steps
            state.weightRanges[index] = ranges
        }
        let interpreter = try Interpreter(graph)
        let wanted = Set(valueBits.keys)
        let statistics = try Calibrator(interpreter: interpreter, values: wanted, batch: 64).collect(calibration, histogram: true)
        let input = try inputRange(calibration)
        for (value, bits) in valueBits {
            let levels = (1 << bits) - 1
            var (lo, hi) = statistics[value]?.range(.mse, levels: levels) ?? (0, 1)
            if value == graph.inputs[0] { (lo, hi) = (input.range.lowerBound, input.range.upperBound) }
            let q = activationQuantization(low: lo, high: hi, levels: levels)
            state.activationSteps[value.index] = q.scale
            state.activationZeroPoints[value.index] = q.zeroPoint
            state.activationBits[value.index] = bits
        }
        return state
    }

    /// The range the student's input quantizer covers for this calibration set, and why.
    public func inputRange(_ calibration: Tensor) throws -> InputRange {
        try InputRange.choose(options.inputDomain, teacher: teacher, calibration: calibration)
    }

    /// A weighted layer's weights as [M][K] (channel-major).
    func channelMajor(_ layer: PlannedLayer) -> [Float] {
        let weight = layer.weight!
        guard case .gemm = layer.kind else { return weight.scalars }
        let (k, m) = (weight.shape[0], weight.shape[1])
        var out = [Float](repeating: 0, count: weight.count)
        for i in 0..<k { for j in 0..<m { out[j * k + i] = weight.scalars[i * m + j] } }
        return out
    }

    /// Per channel, the step (clipping ratio 1.00, 0.99, …, 0.01 of the range) minimising mean |w − q(w)|^2.4,
    /// the level range and the rounded levels. 8 and 7 bits: symmetric around 0 over max |w|; fewer bits: asymmetric
    /// over [min w, max w] with an integer zero point kept within the grid.
    static func searchWeights(_ weights: [Float], channels: Int, bits: Int)
        -> (levels: [Int8], steps: [Float], ranges: [LevelRange])
    {
        let k = weights.count / channels
        let count = Float((1 << bits) - 1)
        var levels = [Int8](repeating: 0, count: weights.count), steps = [Float](repeating: 0, count: channels)
        var ranges = [LevelRange](repeating: .symmetric8, count: channels)
        func grid(_ low: Float, _ high: Float) -> (step: Float, range: LevelRange) {
            if bits >= 7 {
                let top = (1 << (bits - 1)) - 1
                return (max(abs(low), abs(high)) / Float(top), LevelRange(lowest: -top, highest: top))
            }
            let step = (high - low) / count
            let zero = Int(min(max((-low / step).rounded(.toNearestOrEven), 0), count))
            return (step, LevelRange(lowest: -zero, highest: Int(count) - zero))
        }
        for c in 0..<channels {
            let row = weights[(c * k)..<((c + 1) * k)]
            let low = min(row.min() ?? 0, 0), high = max(row.max() ?? 0, 0)
            guard high > low else {
                (steps[c], ranges[c]) = (1, grid(-1, 1).range)
                continue
            }
            var best = Float.infinity
            var chosen = grid(low, high)
            for r in stride(from: 100, through: 1, by: -1) {
                let candidate = grid(low * Float(r) / 100, high * Float(r) / 100)
                var error: Float = 0
                for w in row {
                    let q = candidate.range.clamp((w / candidate.step).rounded(.toNearestOrEven)) * candidate.step
                    error += pow(abs(w - q), 2.4)
                }
                if error < best {
                    best = error
                    chosen = candidate
                }
            }
            (steps[c], ranges[c]) = chosen
            for i in (c * k)..<((c + 1) * k) { levels[i] = Int8(chosen.range.clamp((weights[i] / chosen.step).rounded(.toNearestOrEven))) }
        }
        return (levels, steps, ranges)
    }

    // MARK: - Forward passes

    /// The teacher block in fp32 on every image.
    func fp32Forward(_ block: Block, _ input: Tensor) throws -> Tensor {
        let (sub, _) = try graph.subgraph(block)
        return try Interpreter(sub).run([input])[0]
    }

    /// The student block with hard rounding and quantized activations (no gradients), on every image.
    func hardForward(_ block: Block, _ input: Tensor, state: DistillState) throws -> Tensor {
        try hardForward(nodes: block.nodes, input: input, state: state)
    }

    func hardForward(nodes: Range<Int>, input: Tensor, state: DistillState) throws -> Tensor {
        if nodes.isEmpty {
            // The graph input, quantized as the student's first layer sees it.
            return quantize(input, value: graph.inputs[0], state: state)
        }
        let block = Block(nodes: nodes, input: nodes.lowerBound == 0 ? graph.inputs[0] : graph.nodes[nodes.lowerBound - 1].output,
                          output: graph.nodes[nodes.upperBound - 1].output)
        let (sub, map) = try graph.subgraph(block)
        let tape = Tape()
        let quantPoints = quantizationPoints(block)
        let layerOf = weightedLayers(block)
        let reverse = Dictionary(uniqueKeysWithValues: map.map { ($1, $0) })
        let output = try tape.run(sub, inputs: [tape.constant(input)], replace: { node, operands in
            let original = reverse[node.output]!
            var x = operands
            if let (index, _) = layerOf[original] {
                x[1] = tape.constant(self.hardWeights(index, state: state))
            }
            var y = tape.apply(node.op, x)
            if quantPoints.contains(original) { y = tape.constant(self.quantize(y.value, value: original, state: state)) }
            return y
        })[0]
        return output.value
    }

    /// Fake-quantizes a tensor with a value's learned quantization (hard).
    func quantize(_ x: Tensor, value: ValueID, state: DistillState) -> Tensor {
        let step = state.activationSteps[value.index] ?? 1
        let zero = Float(state.activationZeroPoints[value.index] ?? 0)
        let top = Float((1 << (state.activationBits[value.index] ?? 8)) - 1)
        return Tensor(shape: x.shape, scalars: x.scalars.map { v in
            step * (min(max((v / step).rounded(.toNearestOrEven) + zero, 0), top) - zero)
        })
    }

    /// A weighted layer's weights rebuilt from its levels and steps, in graph layout.
    func hardWeights(_ index: Int, state: DistillState) -> Tensor {
        let layer = plan[index]
        let levels = state.weightLevels[index]!, steps = state.weightSteps[index]!
        let m = layer.outputChannels, k = levels.count / m
        var values = [Float](repeating: 0, count: levels.count)
        for c in 0..<m { for i in 0..<k { values[c * k + i] = Float(levels[c * k + i]) * steps[c] } }
        return weightTensor(values, layer)
    }

    /// Channel-major [M][K] values back to the layer's graph layout.
    func weightTensor(_ channelMajor: [Float], _ layer: PlannedLayer) -> Tensor {
        let weight = layer.weight!
        guard case .gemm = layer.kind else { return Tensor(shape: weight.shape, scalars: channelMajor) }
        let (k, m) = (weight.shape[0], weight.shape[1])
        var out = [Float](repeating: 0, count: weight.count)
        for i in 0..<k { for j in 0..<m { out[i * m + j] = channelMajor[j * k + i] } }
        return Tensor(shape: weight.shape, scalars: out)
    }

    /// Graph values inside the block that the student quantizes (outputs of its planned layers, except those that
    /// pass their input's quantization through: max pooling, reshapes, channel slices and shuffles).
    func quantizationPoints(_ block: Block) -> Set<ValueID> {
        var points = Set<ValueID>()
        for layer in plan where block.nodes.contains(layer.nodes[0]) && !layer.kind.keepsInputQuantization {
            points.insert(layer.output)
        }
        return points
    }

    /// The weighted planned layers in the block, by the graph value their main node produces.
    func weightedLayers(_ block: Block) -> [ValueID: (Int, PlannedLayer)] {
        var result: [ValueID: (Int, PlannedLayer)] = [:]
        for (index, layer) in plan.enumerated() where layer.hasWeights && block.nodes.contains(layer.nodes[0]) {
            result[graph.nodes[layer.nodes[0]].output] = (index, layer)
        }
        return result
    }

    // MARK: - Reconstruction

    func reconstruct(_ block: Block, index blockIndex: Int, teacherInput: Tensor, studentInput: Tensor, teacherOutput: Tensor,
                     state: inout DistillState, progress: ((DistillProgress) -> Void)?, shouldStop: (() -> Bool)?) throws -> BlockReport {
        let clock = ContinuousClock(), start = clock.now
        let blockDeadline = options.deadline?.share(of: blocks.count - blockIndex)
        let lossBefore = blockError(try hardForward(block, studentInput, state: state), teacherOutput)
        let (sub, map) = try graph.subgraph(block)
        let reverse = Dictionary(uniqueKeysWithValues: map.map { ($1, $0) })
        let layers = weightedLayers(block)
        let points = quantizationPoints(block)
        let frozen = state
        // Learnable parameters: per weighted layer soft bits V and steps; per quantization point a step.
        var floors: [Int: Tensor] = [:]
        var bitsParameters: [Tensor] = [], bitsIndex: [Int: Int] = [:]
        var weightSteps: [Tensor] = [], weightStepIndex: [Int: Int] = [:]
        let (zeta, gamma): (Float, Float) = (1.1, -0.1)
        for (_, (index, layer)) in layers.sorted(by: { $0.value.0 < $1.value.0 }) {
            let w = channelMajor(layer), steps = state.weightSteps[index]!
            let m = layer.outputChannels, k = w.count / m
            var floor = [Float](repeating: 0, count: w.count), v = [Float](repeating: 0, count: w.count)
            for c in 0..<m {
                for i in 0..<k {
                    let scaled = w[c * k + i] / steps[c]
                    floor[c * k + i] = scaled.rounded(.down)
                    // V with h(V) equal to the fractional part (AdaRound's initialisation).
                    let r = min(max(scaled - scaled.rounded(.down), 0.01), 0.99)
                    v[c * k + i] = -logf((zeta - gamma) / (r - gamma) - 1)
                }
            }
            floors[index] = Tensor(shape: [m, k], scalars: floor)
            bitsIndex[index] = bitsParameters.count
            bitsParameters.append(Tensor(shape: [m, k], scalars: v))
            weightStepIndex[index] = weightSteps.count
            weightSteps.append(Tensor(shape: [m], scalars: steps))
        }
        var activationSteps: [Tensor] = [], activationStepIndex: [ValueID: Int] = [:]
        for point in points.sorted() {
            activationStepIndex[point] = activationSteps.count
            activationSteps.append(Tensor(shape: [1], scalars: [state.activationSteps[point.index] ?? 1]))
        }
        var bitsOptimizer = Adam(learningRate: options.roundingLearningRate)
        var weightStepOptimizer = Adam(learningRate: options.weightStepLearningRate)
        var activationStepOptimizer = Adam(learningRate: options.activationStepLearningRate)
        // Steps of this block: all of `iterationsPerBlock`, or with a deadline as many as fit in the block's share at
        // the speed of its first step (the schedules below are then laid out again over that count).
        var total = options.iterationsPerBlock
        func schedules() -> (weight: CosineSchedule, activation: CosineSchedule, warmup: Int) {
            (CosineSchedule(base: options.weightStepLearningRate, total: total),
             CosineSchedule(base: options.activationStepLearningRate, total: total), Int(Float(total) * options.warmup))
        }
        var schedule = schedules()
        var rng = SeededGenerator(seed: options.seed &+ UInt64(blockIndex) &* 7919)
        let count = teacherInput.shape[0], batch = min(options.batch, count)
        let channels = teacherOutput.shape.count > 1 ? Float(teacherOutput.shape[1]) : 1
        var iteration = 0
        while iteration < total {
            defer { iteration += 1 }
            if shouldStop?() == true { throw DistillationInterrupted(state: state) }
            let picks = (0..<batch).map { _ in rng.nextIndex(count) }
            let xTeacher = rows(teacherInput, picks), xStudent = rows(studentInput, picks), target = rows(teacherOutput, picks)
            // QDrop on the block input: each element from the quantized or the fp32 path.
            let fromStudent = rng.bernoulli(count: xTeacher.count, probability: options.qdrop)
            let mixed = Tensor(shape: xTeacher.shape, scalars: (0..<xTeacher.count).map {
                fromStudent[$0] ? xStudent.scalars[$0] : xTeacher.scalars[$0]
            })
            let drops = QDropSource(generator: SeededGenerator(seed: rng.next()), probability: options.qdrop)
            let tape = Tape()
            let vVars = bitsParameters.map { tape.leaf($0) }
            let wStepVars = weightSteps.map { tape.leaf($0) }
            let aStepVars = activationSteps.map { tape.leaf($0) }
            var softBits: [Variable] = []
            let y = try tape.run(sub, inputs: [tape.constant(mixed)], replace: { node, operands in
                let original = reverse[node.output]!
                var x = operands
                if let (index, layer) = layers[original] {
                    let h = tape.rectifiedSigmoid(vVars[bitsIndex[index]!])
                    softBits.append(h)
                    let ranges = frozen.weightRanges[index]!
                    var w = tape.softQuantizedWeights(floor: floors[index]!, bits: h, step: wStepVars[weightStepIndex[index]!],
                                                      lowest: ranges.map { Float($0.lowest) }, highest: ranges.map { Float($0.highest) })
                    if case .gemm = layer.kind {
                        w = tape.transpose(w, perm: [1, 0])
                    } else {
                        w = tape.reshape(w, layer.weight!.shape)
                    }
                    x[1] = w
                }
                var out = tape.apply(node.op, x)
                if let stepIndex = activationStepIndex[original] {
                    let top = Float((1 << (frozen.activationBits[original.index] ?? 8)) - 1)
                    // QDrop inside the block: each element quantized with probability `qdrop`.
                    out = tape.lsqQuantize(out, step: aStepVars[stepIndex],
                                           zeroPoint: Float(frozen.activationZeroPoints[original.index] ?? 0), levels: 0...top,
                                           quantized: drops.next(count: out.value.count))
                }
                return out
            })[0]
            var loss = tape.scale(tape.meanSquaredError(y, tape.constant(target)), by: channels)
            let reconstruction = loss.value.scalars[0]
            if iteration >= schedule.warmup && options.roundingWeight > 0 {
                let progressAfterWarmup = Float(iteration - schedule.warmup) / Float(max(total - schedule.warmup, 1))
                let beta = options.betaEnd + (options.betaStart - options.betaEnd) * max(0, 1 - progressAfterWarmup)
                for h in softBits {
                    loss = tape.binary(loss, tape.scale(tape.roundingRegularizer(h, beta: beta), by: options.roundingWeight), .add)
                }
            }
            let gradients = tape.gradients(of: loss, withRespectTo: vVars + wStepVars + aStepVars)
            bitsOptimizer.step(&bitsParameters, gradients: Array(gradients[0..<vVars.count]))
            weightStepOptimizer.step(&weightSteps, gradients: Array(gradients[vVars.count..<(vVars.count + wStepVars.count)]))
            activationStepOptimizer.step(&activationSteps, gradients: Array(gradients[(vVars.count + wStepVars.count)...]))
            for i in weightSteps.indices { weightSteps[i].scalars = weightSteps[i].scalars.map { max($0, 1e-8) } }
            for i in activationSteps.indices { activationSteps[i].scalars = activationSteps[i].scalars.map { max($0, 1e-8) } }
            weightStepOptimizer.learningRate = schedule.weight.rate(at: iteration + 1)
            activationStepOptimizer.learningRate = schedule.activation.rate(at: iteration + 1)
            if iteration == 0, let blockDeadline {
                let perStep = (clock.now - start).seconds, left = blockDeadline.secondsLeft
                let fit = max(1, Int(left / max(perStep, 1e-6)) + 1)
                if fit < total {
                    total = fit
                    schedule = schedules()
                }
            }
            progress?(DistillProgress(block: blockIndex, blocks: blocks.count, iteration: iteration, iterations: total,
                                      loss: reconstruction))
        }
        // Hard rounding: round up where h(V) ≥ 0.5, i.e. V ≥ 0.
        for (_, (index, _)) in layers {
            let floor = floors[index]!, v = bitsParameters[bitsIndex[index]!], ranges = state.weightRanges[index]!
            let inner = floor.count / ranges.count
            state.weightLevels[index] = (0..<floor.count).map { i in
                Int8(ranges[i / inner].clamp(floor.scalars[i] + (v.scalars[i] >= 0 ? 1 : 0)))
            }
            state.weightSteps[index] = weightSteps[weightStepIndex[index]!].scalars
        }
        for (point, stepIndex) in activationStepIndex { state.activationSteps[point.index] = activationSteps[stepIndex].scalars[0] }
        let elapsed = clock.now - start
        let report = BlockReport(block: graph.nodes[block.nodes.lowerBound].name, nodes: block.nodes.count, lossBefore: lossBefore,
                                 lossReconstructed: blockError(try hardForward(block, studentInput, state: state), teacherOutput),
                                 seconds: elapsed.seconds)
        if report.keptInitialization {
            // Reconstruction made this block worse on the calibration set (the fp32 path differs between CPUs, and
            // so does where the optimisation ends): the student keeps the block as it started.
            for (_, (index, _)) in layers {
                state.weightLevels[index] = frozen.weightLevels[index]
                state.weightSteps[index] = frozen.weightSteps[index]
            }
            for point in activationStepIndex.keys { state.activationSteps[point.index] = frozen.activationSteps[point.index] }
        }
        return report
    }

    /// Mean over images and positions of the squared error summed over channels.
    func blockError(_ y: Tensor, _ target: Tensor) -> Float {
        let channels = y.shape.count > 1 ? Double(y.shape[1]) : 1
        let sum = zip(y.scalars, target.scalars).reduce(0.0) { $0 + Double(($1.0 - $1.1) * ($1.0 - $1.1)) }
        return Float(sum / Double(y.count) * channels)
    }

    /// The given samples of a [count, ...] tensor.
    func rows(_ t: Tensor, _ picks: [Int]) -> Tensor {
        let sample = t.count / t.shape[0]
        var scalars = [Float]()
        scalars.reserveCapacity(picks.count * sample)
        for p in picks { scalars.append(contentsOf: t.scalars[(p * sample)..<((p + 1) * sample)]) }
        return Tensor(shape: [picks.count] + t.shape.dropFirst(), scalars: scalars)
    }
}

/// QDrop's per-element choices for the activation quantizers of one forward pass.
final class QDropSource {
    var generator: SeededGenerator
    let probability: Float

    init(generator: SeededGenerator, probability: Float) {
        self.generator = generator
        self.probability = probability
    }

    /// Which of `count` elements take their quantized value.
    func next(count: Int) -> [Bool] { generator.bernoulli(count: count, probability: probability) }
}

#if canImport(Glibc)
import Glibc
#endif
