import Foundation
import KilnGraph
import KilnONNX
@testable import KilnQuant
import KilnRuntime
import KilnTensor
import KilnTestSupport
import Testing

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
        var state: UInt64 = 3
        func random(_ count: Int) -> [Float] {
            (0..<count).map { _ in
                state = state &* 6_364_136_223_846_793_005 &+ 1
                return Float(Int(state >> 40) % 2001) / 1000 - 1
            }
        }
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

    @Test("an op without an int8 kernel is a clear error naming the node")
    func unsupportedOp() throws {
        var graph = Graph(name: "softmax")
        let x = graph.addInput(name: "x", shape: [batchDimension, 4])
        graph.outputs = [try graph.addNode(name: "probabilities", op: .softmax(axis: 1), inputs: [x])]
        #expect(throws: QuantizeError.self) {
            try Quantizer.quantize(graph, calibration: Tensor(shape: [2, 4], repeating: 1))
        }
    }
}
