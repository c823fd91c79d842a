import KilnGraph
import KilnRuntime
import KilnStudent
import KilnTensor

/// Choices for post-training quantization.
public struct QuantizeOptions: Sendable {
    /// How activation ranges are chosen.
    public var range: RangeMethod = .percentile(99.99)
    /// Calibration images per interpreter batch.
    public var batch: Int = 64
    /// What real inputs look like; nil: what the teacher's metadata states, if anything (`InputDomain(metadata:)`).
    /// The input is quantized over the domain's whole range; with no domain known, over `UnknownInputDomain`'s.
    public var inputDomain: InputDomain?

    /// Default options: 99.99th-percentile ranges.
    public init(range: RangeMethod = .percentile(99.99), batch: Int = 64, inputDomain: InputDomain? = nil) {
        self.range = range
        self.batch = batch
        self.inputDomain = inputDomain
    }
}

/// One row of the per-layer quantization report.
public struct LayerReport: Codable, Sendable {
    /// Layer name (the teacher node it came from).
    public var layer: String
    /// Student op (Conv, Gemm, Add, ...).
    public var op: String
    /// Smallest and largest per-channel weight scale (conv and gemm layers).
    public var weightScaleMin: Float?
    public var weightScaleMax: Float?
    /// Output activation scale and zero point (0 and 0 for an fp32 island op, whose output is not quantized).
    public var activationScale: Float
    public var zeroPoint: Int32
    /// Signal-to-quantization-noise ratio (dB) of the layer's int8 output against the fp32 teacher's value on the
    /// calibration set; nil where the fp32 value is all zero.
    public var sqnr: Double?
    /// Bit width of the output activation (nil for an fp32 island op) and of the weights (conv and gemm layers).
    public var activationBits: Int?
    public var weightBits: Int?

    /// The real range the output's levels cover, [(0 − zero point) · scale, (max level − zero point) · scale]; nil
    /// for an fp32 island op.
    public var outputRange: ClosedRange<Float>? {
        guard let bits = activationBits, activationScale > 0 else { return nil }
        let top = Float((1 << bits) - 1)
        return (Float(-zeroPoint) * activationScale)...((top - Float(zeroPoint)) * activationScale)
    }
}

/// An int8 student and how it was made.
public struct QuantizationResult: Sendable {
    /// The student, ready for `KilnFile.encode` or `KilnModel`.
    public var student: StudentModel
    /// One row per student layer that produces an int8 activation.
    public var report: [LayerReport]
    /// BatchNorm nodes folded into convolutions.
    public var foldedBatchNorms: Int
    /// The range the input quantizer covers and why.
    public var inputRange: InputRange
}

/// A teacher ready for lowering: BatchNorm folded into the convolutions before it (the others become per-channel
/// affine depthwise convolutions), padding into their windows, channels-last regions back in channels-first order
/// (their MatMuls 1×1 convolutions) with per-channel constant Adds and Muls after a convolution folded into it,
/// verified. The one place a teacher graph is prepared (the quantizer, the distiller and the layer report use it).
struct PreparedTeacher {
    /// The folded graph.
    let graph: Graph
    /// BatchNorm nodes folded.
    let foldedBatchNorms: Int

    init(_ teacher: Graph) throws {
        guard teacher.inputs.count == 1 else {
            throw QuantizeError("only single-input models can be quantized (this one has \(teacher.inputs.count))")
        }
        var graph = teacher
        foldedBatchNorms = graph.foldBatchNorm()
        graph.foldPadIntoConv()
        graph.convertChannelsLastRegions()
        graph.foldChannelAffineIntoConv()
        graph.convertBatchNormToDepthwise()
        do {
            try graph.verify()
        } catch let error as GraphError {
            throw QuantizeError("the graph after folding BatchNorm and padding is invalid: \(error.description)")
        }
        self.graph = graph
    }
}

/// Post-training quantization of an fp32 teacher graph into an int8 student.
public enum Quantizer {
    /// Throws unless the teacher has one input and `calibration` is [count ≥ 1, ...] in its layout.
    public static func checkCalibration(_ calibration: Tensor, for teacher: Graph) throws {
        guard teacher.inputs.count == 1 else { throw QuantizeError("only single-input models can be quantized (this one has \(teacher.inputs.count))") }
        let inputShape = teacher[teacher.inputs[0]].shape
        guard calibration.rank == inputShape.count, calibration.shape[0] >= 1,
              Array(calibration.shape.dropFirst()) == Array(inputShape.dropFirst()) else {
            throw QuantizeError("calibration data \(calibration.shape.shapeDescription) does not match the model input \(inputShape.shapeDescription)")
        }
    }

    /// The teacher's nodes that cannot become part of a student at all, not even as fp32 islands (empty when it
    /// lowers), after BatchNorm and padding folding; no calibration data needed.
    public static func unloweredNodes(_ teacher: Graph) throws -> [UnloweredNode] {
        Lowering.survey(try PreparedTeacher(teacher).graph).unlowered
    }

    /// The teacher's nodes that have no int8 kernel and would run as fp32 islands, each with the reason.
    public static func islandNodes(_ teacher: Graph) throws -> [UnloweredNode] {
        Lowering.survey(try PreparedTeacher(teacher).graph).islands
    }

    /// Throws naming every node that would not lower (with `islands` false, also every node that would need an fp32
    /// island): the pipeline calls it before any synthesis or calibration.
    public static func checkLowering(_ teacher: Graph, islands: Bool = true) throws {
        _ = try Lowering.plan(try PreparedTeacher(teacher).graph, allowIslands: islands)
    }

    /// Folds BatchNorm and padding into convs, calibrates activation ranges on `calibration` ([count, ...] in the
    /// teacher's input layout), lowers to a `StudentModel` and measures each layer's SQNR on the calibration set.
    /// `inputRangeChosen` sees the input quantizer's range before the calibration passes.
    public static func quantize(_ teacher: Graph, calibration: Tensor, options: QuantizeOptions = QuantizeOptions(),
                                inputRangeChosen: ((InputRange) -> Void)? = nil) throws -> QuantizationResult {
        let prepared = try PreparedTeacher(teacher)
        try checkCalibration(calibration, for: teacher)
        let inputRange = try InputRange.choose(options.inputDomain, teacher: teacher, calibration: calibration)
        inputRangeChosen?(inputRange)
        let graph = prepared.graph
        let interpreter = try Interpreter(graph)
        let allValues = Set(graph.inputs + graph.nodes.map(\.output))
        let calibrator = Calibrator(interpreter: interpreter, values: allValues, batch: options.batch)
        let needsHistogram = options.range != .minmax
        let statistics = try calibrator.collect(calibration, histogram: needsHistogram)
        let method = options.range
        let input = graph.inputs[0]
        var lowering = Lowering(graph: graph)
        let student = try lowering.build(try Lowering.plan(graph)) { id in
            if id == input { return (activationQuantization(low: inputRange.range.lowerBound, high: inputRange.range.upperBound), 8) }
            let (lo, hi) = statistics[id]?.range(method) ?? (0, 0)
            return (activationQuantization(low: lo, high: hi), 8)
        }
        // Loading the student for the measurement validates it.
        let report = try measure(student, lowering.layerValues, interpreter, calibrator, calibration)
        return QuantizationResult(student: student, report: report, foldedBatchNorms: prepared.foldedBatchNorms, inputRange: inputRange)
    }

    /// Each student layer's SQNR against the teacher on `images` (e.g. real images, to compare with the report on
    /// the synthetic calibration set): layers are matched to teacher values by name after BatchNorm and padding
    /// folding, as lowering names them.
    public static func layerReport(_ student: StudentModel, teacher: Graph, images: Tensor) throws -> [LayerReport] {
        let graph = try PreparedTeacher(teacher).graph
        try checkCalibration(images, for: teacher)
        let interpreter = try Interpreter(graph)
        var layerValues: [Int: ValueID] = [:]
        for (index, layer) in student.layers.enumerated() {
            if let id = graph.value(named: student.activations[layer.output].name) { layerValues[index] = id }
        }
        let calibrator = Calibrator(interpreter: interpreter, values: Set(layerValues.values), batch: 64)
        return try measure(student, layerValues, interpreter, calibrator, images)
    }

    /// Bits of a layer's weights: the fewest that hold each output channel's levels (the channels are contiguous,
    /// `channels` of them): 8-bit channels are symmetric (their largest magnitude sits at 127), low-bit ones a
    /// shifted grid of 2^bits consecutive levels (`LevelRange`). Nil without weights.
    static func weightBits(_ weights: [Int8], channels: Int) -> Int? {
        guard channels > 0, !weights.isEmpty, weights.count % channels == 0 else { return nil }
        let size = weights.count / channels
        let spans = (0..<channels).map { m -> Int in
            let channel = weights[(m * size)..<((m + 1) * size)]
            return Int(channel.max()!) - Int(min(0, channel.min()!)) + 1
        }
        return (2...8).first { spans.max()! <= 1 << $0 } ?? 8
    }

    /// Runs student and teacher side by side on the calibration set and reports each layer's SQNR.
    static func measure(_ student: StudentModel, _ layerValues: [Int: ValueID], _ interpreter: Interpreter,
                        _ calibrator: Calibrator, _ calibration: Tensor) throws -> [LayerReport] {
        // Per-layer outputs come from the reference kernels (the C kernels are bit-identical but fuse layers).
        let model = try KilnModel(student, options: KilnModel.Options(threads: 1, kernels: .reference))
        let context = model.makeContext()
        var signal: [Int: Double] = [:], noise: [Int: Double] = [:]
        let wanted = Set(layerValues.values)
        for range in calibrator.batches(calibration) {
            let x = slice(calibration, range)
            var reference: [ValueID: [Float]] = [:]
            reference[interpreter.graph.inputs[0]] = x.scalars
            _ = try interpreter.run([x]) { node, output in
                if wanted.contains(node.output) { reference[node.output] = output.scalars }
            }
            let outputs = model.outputs.map { UnsafeMutableBufferPointer<Float>.allocate(capacity: range.count * $0.sampleCount) }
            defer { outputs.forEach { $0.deallocate() } }
            try x.scalars.withUnsafeBufferPointer { input in
                try context.run(inputs: [input], outputs: outputs, batch: range.count) { layer, values in
                    guard let value = layerValues[layer], let fp32 = reference[value] else { return }
                    var s = 0.0, n = 0.0
                    for (a, b) in zip(fp32, values) {
                        s += Double(a) * Double(a)
                        n += Double(a - b) * Double(a - b)
                    }
                    signal[layer, default: 0] += s
                    noise[layer, default: 0] += n
                }
            }
        }
        return student.layers.indices.compactMap { index -> LayerReport? in
            let layer = student.layers[index]
            let out = student.activations[layer.output]
            // Rows for layers producing int8 activations and for fp32 island ops (scale 0: not quantized).
            if case .float = layer.op {} else { guard out.type == .uint8 else { return nil } }
            let quantized = out.type == .uint8
            var row = LayerReport(layer: layer.name, op: layer.op.displayName, activationScale: quantized ? out.quantization.scale : 0,
                                  zeroPoint: quantized ? out.quantization.zeroPoint : 0)
            if quantized { row.activationBits = out.bits }
            if case .conv(let c) = layer.op {
                (row.weightScaleMin, row.weightScaleMax) = (c.weightScales.min(), c.weightScales.max())
                row.weightBits = weightBits(c.weights, channels: c.outputChannels)
            }
            if case .gemm(let c) = layer.op {
                (row.weightScaleMin, row.weightScaleMax) = (c.weightScales.min(), c.weightScales.max())
                row.weightBits = weightBits(c.weights, channels: c.outputChannels)
            }
            if let s = signal[index], let n = noise[index], s > 0 {
                row.sqnr = n > 0 ? 10 * log10(s / n) : 200
            }
            return row
        }
    }
}

#if canImport(Glibc)
import Glibc
#endif
