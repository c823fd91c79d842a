import Foundation
import KilnGraph
import KilnONNX
@testable import KilnQuant
import KilnRuntime
import KilnStudent
import KilnTensor
import KilnTestSupport
import Testing

/// The runtime's fp32 island ops against the fp32 interpreter (the executable definition of every IR op): each case
/// is one IR node lowered as an island, run by KilnRuntime at batch 3 and by the interpreter on the same values.
@Suite("fp32 islands")
struct FloatIslandTests {
    /// One IR node over fresh inputs (batch dimension first) and optional constants.
    struct Case: CustomStringConvertible, Sendable {
        var name: String
        var op: Op
        var inputs: [[Int]]
        var constants: [(position: Int, shape: [Int])] = []
        var description: String { name }
    }

    static let cases: [Case] = [
        Case(name: "gelu", op: .activation(.gelu), inputs: [[-1, 4, 3, 5]]),
        Case(name: "softplus", op: .activation(.softplus), inputs: [[-1, 7]]),
        Case(name: "elu", op: .activation(.elu(alpha: 0.7)), inputs: [[-1, 7]]),
        Case(name: "hardswish", op: .activation(.hardSwish), inputs: [[-1, 7]]),
        Case(name: "add broadcast", op: .binary(.add), inputs: [[-1, 4, 3, 5], [-1, 1, 3, 1]]),
        Case(name: "sub constant per channel", op: .binary(.sub), inputs: [[-1, 4, 3, 5]], constants: [(1, [4, 1, 1])]),
        Case(name: "div by tensor", op: .binary(.div), inputs: [[-1, 6, 5], [-1, 6, 1]]),
        Case(name: "constant minus tensor", op: .binary(.sub), inputs: [[-1, 2, 5]], constants: [(0, [5])]),
        Case(name: "mul last axis", op: .binary(.mul), inputs: [[-1, 3, 4, 8]], constants: [(1, [8])]),
        Case(name: "reduce mean channels", op: .reduceMean(axes: [1], keepDims: true), inputs: [[-1, 6, 3, 4]]),
        Case(name: "reduce mean dropping", op: .reduceMean(axes: [2, 3], keepDims: false), inputs: [[-1, 6, 3, 4]]),
        Case(name: "transpose NHWC", op: .transpose(perm: [0, 2, 3, 1]), inputs: [[-1, 5, 3, 4]]),
        Case(name: "reshape", op: .reshape(shape: [-1, 12, 5]), inputs: [[-1, 5, 3, 4]]),
        Case(name: "matmul constant 4-D", op: .matMul, inputs: [[-1, 3, 4, 6]], constants: [(1, [6, 5])]),
        Case(name: "matmul two tensors", op: .matMul, inputs: [[-1, 2, 4, 6], [-1, 2, 6, 3]]),
        Case(name: "softmax", op: .softmax(axis: 2), inputs: [[-1, 3, 7, 2]]),
        Case(name: "concat", op: .concat(axis: 2), inputs: [[-1, 3, 2, 4], [-1, 3, 5, 4]]),
        Case(name: "slice reversed", op: .slice(SliceAttributes(starts: [0, 1, 4, 0], counts: [-1, 2, 3, 4], steps: [1, 1, -2, 1])),
             inputs: [[-1, 3, 6, 4]]),
        Case(name: "pad reflect", op: .pad(PadAttributes(pads: [0, 0, 2, 1, 0, 0, 1, 2], mode: .reflect)), inputs: [[-1, 2, 4, 5]]),
        Case(name: "pad edge", op: .pad(PadAttributes(pads: [0, 0, 1, 0, 0, 0, 0, 3], mode: .edge)), inputs: [[-1, 2, 4, 5]]),
        Case(name: "pad constant and crop", op: .pad(PadAttributes(pads: [0, 0, 1, -1, 0, 0, -2, 2], value: 0.5)), inputs: [[-1, 2, 4, 5]]),
        Case(name: "gather", op: .gather(axis: 2, indices: IntTensor(shape: [2, 2], values: [3, 0, 0, 2])), inputs: [[-1, 2, 4, 5]]),
    ]

    @Test("each island op equals the interpreter", arguments: cases)
    func matchesInterpreter(_ c: Case) throws {
        var random = SeededGenerator(seed: 11)
        func values(_ count: Int) -> [Float] { (0..<count).map { _ in Float.random(in: -2...2, using: &random) } }
        var graph = Graph(name: c.name)
        var operands = c.inputs.enumerated().map { graph.addInput(name: "x\($0.offset)", shape: $0.element) }
        for constant in c.constants {
            // Divisors away from zero.
            let t = Tensor(shape: constant.shape, scalars: values(constant.shape.reduce(1, *)).map { $0 + ($0 >= 0 ? 0.5 : -0.5) })
            operands.insert(graph.addConstant(name: "k\(constant.position)", t), at: constant.position)
        }
        let output = try graph.addNode(name: "node", op: c.op, inputs: operands)
        graph.outputs = [output]
        let planned = try Lowering.islandLayer(graph, 0)
        guard case .island(let op) = planned.kind else { Issue.record("not an island"); return }
        // A student of this one layer: float inputs straight into the island, its output the model's.
        var activations = c.inputs.enumerated().map { ActivationInfo(name: "x\($0.offset)", shape: [runtimeBatchDimension] + $0.element.dropFirst(), type: .float32) }
        activations.append(ActivationInfo(name: "y", shape: [runtimeBatchDimension] + graph[output].shape.dropFirst(), type: .float32))
        let student = StudentModel(activations: activations, layers: [Layer(name: "node", op: .float(op), inputs: Array(c.inputs.indices), output: c.inputs.count)],
                                   inputs: Array(c.inputs.indices), outputs: [c.inputs.count])
        // It survives the file format, and validation.
        let decoded = try KilnFile.decode(try KilnFile.encode(student))
        #expect(decoded == student)
        let batch = 3
        let tensors = c.inputs.map { shape -> Tensor in
            let concrete = [batch] + shape.dropFirst()
            return Tensor(shape: concrete, scalars: values(concrete.reduce(1, *)).map { c.name.hasPrefix("div") ? $0 + ($0 >= 0 ? 0.5 : -0.5) : $0 })
        }
        let expected = try Interpreter(graph).run(tensors)[0]
        let model = try KilnModel(decoded, options: KilnModel.Options(threads: 1))
        let context = model.makeContext()
        var result = [Float](repeating: 0, count: expected.count)
        try result.withUnsafeMutableBufferPointer { out in
            let buffers = tensors.map { UnsafeMutableBufferPointer<Float>.allocate(capacity: $0.count) }
            defer { buffers.forEach { $0.deallocate() } }
            for (buffer, t) in zip(buffers, tensors) { _ = buffer.initialize(from: t.scalars) }
            try context.run(inputs: buffers.map { UnsafeBufferPointer($0) }, outputs: [out], batch: batch)
        }
        let worst = zip(result, expected.scalars).map { abs($0 - $1) / max(1, abs($1)) }.max() ?? 0
        #expect(worst <= 1e-5, "\(c.name): worst relative difference \(worst)")
    }

    @Test("a channels-last region (Transpose, per-channel constants, MatMul by a constant) is rewritten channels-first, computing the same; one with a foreign reader is left alone")
    func channelsLastRegion() throws {
        var random = SeededGenerator(seed: 5)
        func values(_ count: Int) -> [Float] { (0..<count).map { _ in Float.random(in: -1...1, using: &random) } }
        func region(exposeInside: Bool) throws -> Graph {
            var graph = Graph(name: "nhwc")
            let x = graph.addInput(name: "x", shape: [-1, 4, 3, 5])
            let t = try graph.addNode(name: "nhwc", op: .transpose(perm: [0, 2, 3, 1]), inputs: [x])
            let mean = try graph.addNode(name: "mean", op: .reduceMean(axes: [3], keepDims: true), inputs: [t])
            let centred = try graph.addNode(name: "centred", op: .binary(.sub), inputs: [t, mean])
            let gamma = graph.addConstant(name: "gamma", Tensor(shape: [4], scalars: values(4)))
            let scaled = try graph.addNode(name: "scaled", op: .binary(.mul), inputs: [centred, gamma])
            let w = graph.addConstant(name: "w", Tensor(shape: [4, 6], scalars: values(24)))
            let mm = try graph.addNode(name: "linear", op: .matMul, inputs: [scaled, w])
            let bias = graph.addConstant(name: "bias", Tensor(shape: [6], scalars: values(6)))
            let biased = try graph.addNode(name: "bias_add", op: .binary(.add), inputs: [mm, bias])
            let g = try graph.addNode(name: "gelu", op: .activation(.gelu), inputs: [biased])
            let back = try graph.addNode(name: "nchw", op: .transpose(perm: [0, 3, 1, 2]), inputs: [g])
            let layerScale = graph.addConstant(name: "layer_scale", Tensor(shape: [6, 1, 1], scalars: values(6)))
            graph.outputs = [try graph.addNode(name: "layer_scaled", op: .binary(.mul), inputs: [layerScale, back])]
            if exposeInside { graph.outputs.append(scaled) }
            return graph
        }
        let x = Tensor(shape: [2, 4, 3, 5], scalars: values(120))
        for exposeInside in [false, true] {
            let original = try region(exposeInside: exposeInside)
            var rewritten = original
            #expect(rewritten.convertChannelsLastRegions() == (exposeInside ? 0 : 1))
            let folded = rewritten.foldChannelAffineIntoConv()
            try rewritten.verify()
            if !exposeInside {
                #expect(!rewritten.nodes.contains { if case .transpose = $0.op { return true } else { return false } })
                #expect(rewritten.nodes.filter { if case .conv = $0.op { return true } else { return false } }.count == 1)
                #expect(folded == 1, "the bias add folds into the 1×1 conv (the GELU keeps the layer scale out)")
            }
            for (a, b) in zip(try Interpreter(original).run([x]), try Interpreter(rewritten).run([x])) {
                #expect(a.shape == b.shape)
                let worst = zip(a.scalars, b.scalars).map { abs($0 - $1) }.max() ?? 0
                #expect(worst <= 1e-5, "exposeInside \(exposeInside): worst difference \(worst)")
            }
        }
    }

    @Test("LayerNormalization over channels (as the importer decomposes it) lowers to one int8 LayerNorm layer")
    func channelNormLayer() throws {
        var random = SeededGenerator(seed: 9)
        func values(_ count: Int, _ range: ClosedRange<Float> = -1...1) -> [Float] { (0..<count).map { _ in Float.random(in: range, using: &random) } }
        var graph = Graph(name: "layer_norm")
        let x = graph.addInput(name: "x", shape: [-1, 3, 5, 5])
        let w = graph.addConstant(name: "w", Tensor(shape: [8, 3, 3, 3], scalars: values(216)))
        let a = try graph.addNode(name: "conv", op: .conv(ConvAttributes(pads: [1, 1, 1, 1])), inputs: [x, w])
        let mean = try graph.addNode(name: "ln/mean", op: .reduceMean(axes: [1], keepDims: true), inputs: [a])
        let centred = try graph.addNode(name: "ln/centred", op: .binary(.sub), inputs: [a, mean])
        let squared = try graph.addNode(name: "ln/squared", op: .binary(.mul), inputs: [centred, centred])
        let variance = try graph.addNode(name: "ln/variance", op: .reduceMean(axes: [1], keepDims: true), inputs: [squared])
        let epsilon = graph.addConstant(name: "epsilon", Tensor(shape: [], scalars: [1e-6]))
        let shifted = try graph.addNode(name: "ln/variance_epsilon", op: .binary(.add), inputs: [variance, epsilon])
        let deviation = try graph.addNode(name: "ln/deviation", op: .activation(.squareRoot), inputs: [shifted])
        let normalized = try graph.addNode(name: "ln/normalized", op: .binary(.div), inputs: [centred, deviation])
        let gamma = graph.addConstant(name: "gamma", Tensor(shape: [8, 1, 1], scalars: values(8, 0.5...1.5)))
        let scaled = try graph.addNode(name: "ln/scaled", op: .binary(.mul), inputs: [normalized, gamma])
        let beta = graph.addConstant(name: "beta", Tensor(shape: [8, 1, 1], scalars: values(8)))
        let ln = try graph.addNode(name: "ln", op: .binary(.add), inputs: [scaled, beta])
        let w2 = graph.addConstant(name: "w2", Tensor(shape: [4, 8, 1, 1], scalars: values(32)))
        graph.outputs = [try graph.addNode(name: "head", op: .conv(ConvAttributes()), inputs: [ln, w2])]
        #expect(try Quantizer.islandNodes(graph).isEmpty)
        let calibration = Tensor(shape: [8, 3, 5, 5], scalars: values(600))
        let result = try Quantizer.quantize(graph, calibration: calibration)
        #expect(result.student.layers.map(\.op.displayName) == ["Quantize", "Conv", "LayerNorm", "Conv", "Dequantize"])
        #expect(result.student.layers[2].name == "ln")
        // The normalized values carry their full 8 bits (one level of rounding after the conv's own).
        let row = result.report.first { $0.op == "LayerNorm" }
        #expect((row?.sqnr ?? 0) > 30, "\(String(describing: row))")
        let expected = try Interpreter(graph).run([calibration])[0].scalars
        let got = try QuantizerTests.outputsOnEveryTier(result.student, calibration.scalars, "layer norm")
        #expect(EdgeZooTests.cosine(expected, got) > 0.999)
    }

    @Test("a graph op with no int8 kernel becomes an island; the report and kiln inspect's survey name it")
    func islandsInAStudent() throws {
        // conv → transpose → softmax over channels (last axis) → transpose back → conv: the middle runs in fp32.
        var graph = Graph(name: "island")
        var random = SeededGenerator(seed: 3)
        let x = graph.addInput(name: "x", shape: [-1, 3, 6, 6])
        let w1 = graph.addConstant(name: "w1", Tensor(shape: [4, 3, 3, 3], scalars: (0..<108).map { _ in Float.random(in: -0.5...0.5, using: &random) }))
        let a = try graph.addNode(name: "conv1", op: .conv(ConvAttributes(pads: [1, 1, 1, 1])), inputs: [x, w1])
        let t = try graph.addNode(name: "nhwc", op: .transpose(perm: [0, 2, 3, 1]), inputs: [a])
        let s = try graph.addNode(name: "softmax", op: .softmax(axis: 3), inputs: [t])
        let b = try graph.addNode(name: "nchw", op: .transpose(perm: [0, 3, 1, 2]), inputs: [s])
        let w2 = graph.addConstant(name: "w2", Tensor(shape: [2, 4, 1, 1], scalars: (0..<8).map { _ in Float.random(in: -1...1, using: &random) }))
        graph.outputs = [try graph.addNode(name: "conv2", op: .conv(ConvAttributes()), inputs: [b, w2])]
        #expect(try Quantizer.unloweredNodes(graph).isEmpty)
        #expect(try Quantizer.islandNodes(graph).map(\.node) == ["nhwc", "softmax", "nchw"])
        let calibration = Tensor(shape: [8, 3, 6, 6], scalars: (0..<864).map { _ in Float.random(in: -1...1, using: &random) })
        let result = try Quantizer.quantize(graph, calibration: calibration)
        let ops = result.student.layers.map(\.op.displayName)
        #expect(ops == ["Quantize", "Conv", "Dequantize", "fp32 Transpose", "fp32 Softmax", "fp32 Transpose", "Quantize", "Conv", "Dequantize"])
        #expect(result.report.filter { $0.op.hasPrefix("fp32") }.count == 3)
        let expected = try Interpreter(graph).run([calibration])[0].scalars
        let got = try KilnModel(result.student).predictOutputs(calibration.scalars)[0]
        #expect(EdgeZooTests.cosine(expected, got) > 0.999)
        // onnxruntime runs the QDQ export, islands as plain ONNX ops, and computes the same student.
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("kiln-island-\(getpid())")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let (qdq, inputs, outputs) = (folder.appendingPathComponent("island.qdq.onnx"), folder.appendingPathComponent("x.npy"),
                                      folder.appendingPathComponent("y.npy"))
        try QDQExporter.export(result.student).write(to: qdq)
        try NPY.write(calibration, to: inputs.path)
        let run = try Processes.run(command: "python3", [Repository.path("scripts/qdq_predict.py"), qdq.path, outputs.path,
                                                         "--inputs", inputs.path])
        #expect(run.status == 0, "\(run.stderr)")
        #expect(EdgeZooTests.cosine(try NPY.readTensor(outputs.path).scalars, got) > 0.9999)
        // Block reconstruction refuses islands before any work.
        #expect(throws: QuantizeError.self) { try Quantizer.checkLowering(graph, islands: false) }
    }
}
