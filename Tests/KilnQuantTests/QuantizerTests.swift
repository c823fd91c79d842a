import Foundation
import KilnGraph
import KilnONNX
@testable import KilnQuant
import KilnRuntime
import KilnStudent
import KilnTensor
import KilnTestSupport
import Testing

/// Reproducible test values in [−scale, scale] (steps of scale/1000) from a 64-bit LCG.
struct SeededValues {
    var state: UInt64

    mutating func next(_ count: Int, scale: Float = 1) -> [Float] {
        (0..<count).map { _ in
            state = state &* 6_364_136_223_846_793_005 &+ 1
            return (Float(Int(state >> 40) % 2001) / 1000 - 1) * scale
        }
    }
}

@Suite("quantizer")
struct QuantizerTests {
    @Test("folding BatchNorm and padding into convs keeps the fp32 outputs", arguments: ["resnet20.onnx", "efficientnet_lite0.onnx"])
    func foldingPreservesOutputs(_ file: String) throws {
        let teacher = try Repository.teacher(file)
        var folded = teacher
        let batchNorms = folded.foldBatchNorm()
        let pads = folded.foldPadIntoConv()
        #expect(batchNorms == teacher.batchNormCount && folded.batchNormCount == 0)
        #expect(file != "efficientnet_lite0.onnx" || pads == 17)
        let shape = teacher[teacher.inputs[0]].shape.substitutingBatch(2)
        var state: UInt64 = 7
        let x = Tensor(shape: shape, scalars: (0..<shape.elementCount).map { _ in
            state = state &* 6_364_136_223_846_793_005 &+ 1
            return Float(Int(state >> 40) % 2000) / 1000 - 1
        })
        let a = try Interpreter(teacher).run([x])[0], b = try Interpreter(folded).run([x])[0]
        let scale = a.scalars.map(abs).max()!
        let worst = zip(a.scalars, b.scalars).map { abs($0 - $1) }.max()!
        #expect(worst / scale < 1e-4, "max difference \(worst) against largest |output| \(scale)")
    }

    @Test("range methods: minmax covers everything, percentile and mse clip outliers, zero stays exact")
    func rangeMethods() {
        var statistics = ActivationStatistics()
        let values = (0..<100_000).map { Float($0 % 1000) / 1000 } + [50]   // one outlier
        statistics.observeRange(values)
        statistics.observeHistogram(values)
        #expect(statistics.range(.minmax) == (0, 50))
        let (plo, phi) = statistics.range(.percentile(99.99))
        #expect(plo == 0 && phi < 2)
        let (mlo, mhi) = statistics.range(.mse)
        #expect(mlo == 0 && mhi < 50)
        let q = activationQuantization(low: -1, high: 3)
        #expect(Requantize.dequantize(UInt8(q.zeroPoint), q) == 0)
        #expect(abs(q.scale - 4 / 255) < 1e-7)
    }

    @Test("int8 conv outputs stay within one level of fp32 math on the same dequantized values")
    func convMatchesFloat() throws {
        var graph = Graph(name: "conv")
        let x = graph.addInput(name: "x", shape: [batchDimension, 3, 9, 9])
        var values = SeededValues(state: 3)
        func random(_ count: Int) -> [Float] { values.next(count) }
        let w = graph.addConstant(name: "w", Tensor(shape: [5, 3, 3, 3], scalars: random(135)))
        let b = graph.addConstant(name: "b", Tensor(shape: [5], scalars: random(5)))
        let y = try graph.addNode(name: "conv", op: .conv(ConvAttributes(strides: [2, 1], pads: [1, 0, 1, 2])), inputs: [x, w, b])
        graph.outputs = [try graph.addNode(name: "relu6", op: .activation(.relu6), inputs: [y])]
        let data = Tensor(shape: [16, 3, 9, 9], scalars: random(16 * 243))
        let result = try Quantizer.quantize(graph, calibration: data, options: QuantizeOptions(range: .minmax))
        let model = try KilnModel(result.student)
        let int8 = try model.predict(data.scalars)
        // fp32 on the quantized input and weights, then quantized like the output.
        guard case .conv(let layer) = result.student.layers[1].op else { Issue.record("expected a conv layer"); return }
        let inQ = result.student.activations[result.student.layers[1].inputs[0]].quantization
        let outQ = result.student.activations[result.student.layers[1].output].quantization
        let xq = Tensor(shape: data.shape, scalars: data.scalars.map { Requantize.dequantize(Requantize.quantize($0, inQ), inQ) })
        var wq = [Float](repeating: 0, count: 135)
        for o in 0..<5 { for c in 0..<3 { for i in 0..<3 { for j in 0..<3 {
            wq[((o * 3 + c) * 3 + i) * 3 + j] = Float(layer.weights[((o * 3 + i) * 3 + j) * 3 + c]) * layer.weightScales[o]
        } } } }
        let bq = (0..<5).map { o in
            Float(layer.bias[o] + inQ.zeroPoint * layer.weights[(o * 27)..<((o + 1) * 27)].reduce(0) { $0 + Int32($1) }) * inQ.scale * layer.weightScales[o]
        }
        let reference = FP32.activation(FP32.conv2d(xq, weight: Tensor(shape: [5, 3, 3, 3], scalars: wq), bias: Tensor(shape: [5], scalars: bq),
                                                    ConvAttributes(strides: [2, 1], pads: [1, 0, 1, 2])), .relu6)
        var worst: Float = 0
        for (value, got) in zip(reference.scalars, int8) {
            let expected = Requantize.dequantize(Requantize.quantize(value, outQ), outQ)
            worst = max(worst, abs(expected - got) / outQ.scale)
        }
        #expect(worst <= 1.0, "int8 differs from fp32 math by \(worst) levels")
    }

    @Test("an op with neither an int8 kernel nor an fp32 island form is a clear error naming every such node, known before any calibration")
    func unsupportedOp() throws {
        // Dilated max pooling: no int8 kernel, and islands hold no pooling.
        var graph = Graph(name: "dilated")
        let x = graph.addInput(name: "x", shape: [batchDimension, 2, 9, 9])
        let pool = Op.maxPool(PoolAttributes(kernel: [2, 2], dilations: [2, 2]))
        let first = try graph.addNode(name: "first", op: pool, inputs: [x])
        graph.outputs = [try graph.addNode(name: "second", op: pool, inputs: [first])]
        let unlowered = try Quantizer.unloweredNodes(graph)
        #expect(unlowered.map(\.node) == ["first", "second"])
        #expect(unlowered.allSatisfy { $0.reason.contains("dilated pooling") && $0.reason.contains("fp32 island") }, "\(unlowered)")
        #expect(throws: QuantizeError.self) { try Quantizer.checkLowering(graph) }
        do {
            _ = try Quantizer.quantize(graph, calibration: Tensor(shape: [2, 2, 9, 9], repeating: 1))
            Issue.record("quantizing a dilated pooling should fail")
        } catch let error as QuantizeError {
            #expect(error.message.contains("2 nodes") && error.message.contains("'first'") && error.message.contains("'second'"), "\(error)")
        }
    }

    /// The student's outputs (every output, joined) from the reference kernels, after checking that every C kernel
    /// tier this CPU runs gives the same bytes.
    static func outputsOnEveryTier(_ student: StudentModel, _ input: [Float], _ label: String = "") throws -> [Float] {
        let reference = try KilnModel(student, options: KilnModel.Options(threads: 1, kernels: .reference)).predictOutputs(input).flatMap { $0 }
        for kernels in KernelChoice.all where kernels.isSupported {
            let fast = try KilnModel(student, options: KilnModel.Options(threads: 2, kernels: kernels)).predictOutputs(input)
            #expect(fast.flatMap { $0 } == reference, "\(label) \(kernels) kernels differ from the reference")
        }
        return reference
    }

    /// A conv stack with every pointwise activation the student runs as a lookup table, standalone and after convs
    /// (where the runtime folds the table into the conv's epilogue), and after a residual add.
    static func activationGraph(_ activations: [Activation]) throws -> Graph {
        var graph = Graph(name: "activations")
        var values = SeededValues(state: 11)
        func random(_ count: Int, _ scale: Float) -> [Float] { values.next(count, scale: scale) }
        var y = graph.addInput(name: "x", shape: [batchDimension, 3, 8, 8])
        var channels = 3
        for (index, f) in activations.enumerated() {
            let w = graph.addConstant(name: "w\(index)", Tensor(shape: [8, channels, 3, 3], scalars: random(8 * channels * 9, 0.4)))
            let b = graph.addConstant(name: "b\(index)", Tensor(shape: [8], scalars: random(8, 0.2)))
            let conv = try graph.addNode(name: "conv\(index)", op: .conv(ConvAttributes(pads: [1, 1, 1, 1])), inputs: [y, w, b])
            // Odd layers: the activation follows a residual add (which the runtime folds into the conv first).
            let summed = index % 2 == 1 ? try graph.addNode(name: "add\(index)", op: .binary(.add), inputs: [conv, y]) : conv
            y = try graph.addNode(name: "act\(index)", op: .activation(f), inputs: [summed])
            channels = 8
        }
        let pooled = try graph.addNode(name: "pool", op: .globalAveragePool, inputs: [y])
        graph.outputs = [try graph.addNode(name: "tanh", op: .activation(.tanh), inputs: [pooled])]
        return graph
    }

    @Test("pointwise activations become lookup tables: C kernels (fused into convs) equal the reference, values follow fp32")
    func activationLookups() throws {
        let activations: [Activation] = [.silu, .hardSwish, .sigmoid, .gelu, .leakyRelu(alpha: 0.1), .hardSigmoid(alpha: 0.2, beta: 0.5),
                                         .elu(alpha: 1), .softplus, .relu, .tanh]
        let graph = try QuantizerTests.activationGraph(activations)
        var values = SeededValues(state: 5)
        let data = Tensor(shape: [32, 3, 8, 8], scalars: values.next(32 * 192))
        #expect(try Quantizer.unloweredNodes(graph).isEmpty)
        let result = try Quantizer.quantize(graph, calibration: data, options: QuantizeOptions(range: .minmax))
        let tables = result.student.layers.compactMap { layer -> String? in
            if case .lookup(let l) = layer.op { return l.function }
            return nil
        }
        // ReLU after a conv is a clamp in the conv; the final Tanh after pooling is a table of its own.
        #expect(tables == activations.filter { $0 != .relu }.map { Op.activation($0).name } + ["Tanh"], "\(tables)")
        // The file keeps the tables.
        #expect(try KilnFile.decode(KilnFile.encode(result.student)) == result.student)
        let reference = try QuantizerTests.outputsOnEveryTier(result.student, data.scalars)
        let fp32 = try Interpreter(graph).run([data])[0].scalars
        let dot = zip(fp32, reference).reduce(0) { $0 + Double($1.0) * Double($1.1) }
        let cosine = dot / (sqrt(fp32.reduce(0) { $0 + Double($1) * Double($1) }) * sqrt(reference.reduce(0) { $0 + Double($1) * Double($1) }))
        print(String(format: "lookup-table student vs fp32: cosine %.5f", cosine), result.report.map { String(format: "%@ %.1f", $0.op, $0.sqnr ?? 0) })
        #expect(cosine > 0.99)
    }

    @Test("depthwise of any kernel size, grouped convolution, squeeze-and-excite gates and channel concatenation: C kernels equal the reference")
    func edgeBlocks() throws {
        var graph = Graph(name: "edge blocks")
        var values = SeededValues(state: 17)
        func random(_ count: Int, _ scale: Float) -> [Float] { values.next(count, scale: scale) }
        func conv(_ name: String, _ x: ValueID, _ cout: Int, _ cin: Int, _ k: Int, _ a: ConvAttributes) throws -> ValueID {
            let w = graph.addConstant(name: "\(name).w", Tensor(shape: [cout, cin / a.group, k, k], scalars: random(cout * cin / a.group * k * k, 0.5)))
            let b = graph.addConstant(name: "\(name).b", Tensor(shape: [cout], scalars: random(cout, 0.2)))
            return try graph.addNode(name: name, op: .conv(a), inputs: [x, w, b])
        }
        let x = graph.addInput(name: "x", shape: [batchDimension, 3, 15, 15])
        let stem = try conv("stem", x, 24, 3, 1, ConvAttributes())
        let dw5 = try graph.addNode(name: "silu", op: .activation(.silu),
                                    inputs: [try conv("dw5", stem, 24, 24, 5, ConvAttributes(strides: [2, 2], pads: [2, 2, 2, 2], group: 24))])
        let dw7 = try conv("dw7", dw5, 24, 24, 7, ConvAttributes(pads: [3, 3, 3, 3], group: 24))
        let dilated = try graph.addNode(name: "relu", op: .activation(.relu),
                                        inputs: [try conv("dilated", dw7, 24, 24, 3, ConvAttributes(pads: [2, 2, 2, 2], dilations: [2, 2], group: 24))])
        // Squeeze-and-excite: the gate first in the product, as torchvision writes it.
        let squeezed = try graph.addNode(name: "squeeze", op: .globalAveragePool, inputs: [dilated])
        let reduced = try graph.addNode(name: "se.relu", op: .activation(.relu), inputs: [try conv("se.reduce", squeezed, 8, 24, 1, ConvAttributes())])
        let gate = try graph.addNode(name: "se.gate", op: .activation(.hardSigmoid(alpha: 1.0 / 6, beta: 0.5)),
                                     inputs: [try conv("se.expand", reduced, 24, 8, 1, ConvAttributes())])
        let excited = try graph.addNode(name: "se.mul", op: .binary(.mul), inputs: [gate, dilated])
        // A grouped convolution with a residual add and a fused ReLU after it (the runtime folds both into its GEMMs).
        let grouped = try conv("grouped", dw5, 24, 24, 3, ConvAttributes(pads: [1, 1, 1, 1], group: 4))
        let summed = try graph.addNode(name: "grouped.add", op: .binary(.add), inputs: [grouped, dw5])
        let rectified = try graph.addNode(name: "grouped.relu", op: .activation(.relu), inputs: [summed])
        let other = try conv("branch", rectified, 16, 24, 3, ConvAttributes(pads: [1, 1, 1, 1]))
        let joined = try graph.addNode(name: "concat", op: .concat(axis: 1), inputs: [excited, other])
        graph.outputs = [try graph.addNode(name: "pool", op: .globalAveragePool, inputs: [joined])]
        let data = Tensor(shape: [8, 3, 15, 15], scalars: random(8 * 3 * 225, 1))
        let result = try Quantizer.quantize(graph, calibration: data, options: QuantizeOptions(range: .minmax))
        let ops = result.student.layers.map(\.op.displayName)
        #expect(ops.filter { $0 == "DepthwiseConv" }.count == 3 && ops.contains("GroupConv") && ops.contains("Mul") && ops.contains("Concat"),
                "\(ops)")
        #expect(try KilnFile.decode(KilnFile.encode(result.student)) == result.student)
        let reference = try QuantizerTests.outputsOnEveryTier(result.student, data.scalars)
        let fp32 = try Interpreter(graph).run([data])[0].scalars
        let worst = zip(fp32, reference).map { abs($0 - $1) }.max()!, largest = fp32.map(abs).max()!
        #expect(worst < 0.05 * largest, "student differs from fp32 by \(worst) (largest |output| \(largest))")
    }

    @Test("an exported activation pattern becomes one activation: x·Sigmoid(x) is SiLU, PyTorch's Erf form is GELU")
    func activationPatterns() throws {
        var graph = Graph(name: "patterns")
        let x = graph.addInput(name: "x", shape: [batchDimension, 4])
        let s = try graph.addNode(name: "sigmoid", op: .activation(.sigmoid), inputs: [x])
        let silu = try graph.addNode(name: "silu", op: .binary(.mul), inputs: [x, s])
        let root2 = graph.addConstant(name: "root2", Tensor(shape: [], scalars: [1.4142135]))
        let one = graph.addConstant(name: "one", Tensor(shape: [], scalars: [1]))
        let half = graph.addConstant(name: "half", Tensor(shape: [], scalars: [0.5]))
        let divided = try graph.addNode(name: "div", op: .binary(.div), inputs: [silu, root2])
        let erf = try graph.addNode(name: "erf", op: .activation(.erf), inputs: [divided])
        let plusOne = try graph.addNode(name: "add", op: .binary(.add), inputs: [erf, one])
        let product = try graph.addNode(name: "mul", op: .binary(.mul), inputs: [silu, plusOne])
        graph.outputs = [try graph.addNode(name: "gelu", op: .binary(.mul), inputs: [product, half])]
        let input = Tensor(shape: [3, 4], scalars: (0..<12).map { Float($0) / 2 - 3 })
        let before = try Interpreter(graph).run([input])[0].scalars
        var rewritten = graph
        #expect(rewritten.recognizeActivations() == 2)
        #expect(rewritten.nodes.map(\.op) == [.activation(.silu), .activation(.gelu)])
        #expect(rewritten[rewritten.outputs[0]].name == "gelu")
        let after = try Interpreter(rewritten).run([input])[0].scalars
        #expect(zip(before, after).allSatisfy { abs($0 - $1) <= 1e-5 * max(1, abs($0)) }, "\(before) vs \(after)")
    }

    @Test("a model with two inputs is refused with a message saying so, by calibration and by synthesis")
    func severalInputsRefused() throws {
        var graph = Graph(name: "two-inputs")
        let a = graph.addInput(name: "a", shape: [batchDimension, 1, 4, 4])
        let b = graph.addInput(name: "b", shape: [batchDimension, 1, 4, 4])
        graph.outputs = [try graph.addNode(name: "sum", op: .binary(.add), inputs: [a, b])]
        let images = Tensor(shape: [2, 1, 4, 4], repeating: 0.5)
        for source in [CalibrationSource.images(images, description: "x.npy"), .synthesized(SynthesisOptions(count: 2, iterations: 1))] {
            do {
                _ = try QuantizationPipeline.run(QuantizationJob(teacher: graph, teacherName: "two.onnx", calibration: source))
                Issue.record("a two-input model was quantized")
            } catch {
                #expect("\(error)".contains("single-input"), "\(error)")
            }
        }
    }
}
