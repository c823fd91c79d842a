import Foundation
import KilnGraph
import KilnONNX
import KilnTensor
import KilnTestSupport
import Testing

@Suite("committed teachers")
struct TeacherTests {
    @Test("EfficientNet-Lite0: shape sub-graphs fold away, BatchNorm stays")
    func efficientNetStructure() throws {
        let graph = try Repository.teacher("efficientnet_lite0.onnx")
        let ops = graph.opHistogram
        #expect(ops["BatchNorm"] == 49)
        #expect(ops["Conv"] == 49)
        #expect(ops["Pad"] == 17)
        #expect(Set(ops.keys).isSubset(of: ["BatchNorm", "Conv", "Relu6", "Add", "Pad", "GlobalAveragePool", "Reshape", "MatMul"]))
        #expect(graph[graph.inputs[0]].shape == [batchDimension, 3, 224, 224])
    }

    @Test("EfficientNet-Lite0 logits match PyTorch's within 1e-4 of the largest logit")
    func efficientNetLogits() throws {
        let graph = try Repository.teacher("efficientnet_lite0.onnx")
        let x = try NPY.readTensor(Repository.path("models/efficientnet_lite0_input.npy"))
        let expected = try NPY.readTensor(Repository.path("models/efficientnet_lite0_logits.npy"))
        let y = try Interpreter(graph).run([x])[0]
        #expect(y.shape == expected.shape)
        let scale = expected.scalars.map(abs).max()!
        let worst = zip(y.scalars, expected.scalars).map { abs($0 - $1) }.max()!
        print("EfficientNet-Lite0: max |Kiln − PyTorch| = \(worst), largest |logit| = \(scale), relative \(worst / scale)")
        #expect(worst / scale <= 1e-4)
    }

    @Test("Fashion-MNIST teachers reach the top-1 PyTorch measured, on all 10k test images",
          arguments: Repository.fashionTeachers)
    func fashionTop1(_ name: String) throws {
        let record = Repository.teachers.values.first { $0.file == name }!
        let graph = try Repository.teacher(record.file)
        let mean = Float(graph.metadata["kiln.input_mean"]!)!, std = Float(graph.metadata["kiln.input_std"]!)!
        let data = try FashionMNIST(split: .test)
        let interpreter = try Interpreter(graph)
        var correct = 0
        for start in stride(from: 0, to: data.count, by: 500) {
            let logits = try interpreter.run([data.tensor(start..<(start + 500), mean: mean, std: std)])[0]
            for row in 0..<500 {
                let values = logits.scalars[(row * 10)..<(row * 10 + 10)]
                if values.indices.max(by: { values[$0] < values[$1] })! - row * 10 == data.labels[start + row] { correct += 1 }
            }
        }
        let top1 = Double(correct) / Double(data.count)
        let recorded = try #require(record.top1)
        print("\(name): Kiln top-1 \(top1), PyTorch \(recorded)")
        #expect(abs(top1 - recorded) <= 0.0001)
        #expect(top1 >= 0.92)
    }

    @Test("a dynamic batch runs at any size with identical rows",
          arguments: Repository.fashionTeachers)
    func dynamicBatch(_ name: String) throws {
        let graph = try Repository.teacher(name)
        let data = try FashionMNIST(split: .test)
        let interpreter = try Interpreter(graph)
        let seven = try interpreter.run([data.tensor(0..<7)])[0]
        let one = try interpreter.run([data.tensor(3..<4)])[0]
        #expect(seven.shape == [7, 10] && one.shape == [1, 10])
        let worst = zip(one.scalars, seven.scalars[30..<40]).map { abs($0 - $1) }.max()!
        #expect(worst < 1e-4)
    }
}
