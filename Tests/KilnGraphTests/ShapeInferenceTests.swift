import KilnGraph
import Testing

@Suite("shape inference")
struct ShapeInferenceTests {
    @Test("conv output size follows the ONNX formula, batch dimension passes through")
    func convShape() throws {
        let op = Op.conv(ConvAttributes(strides: [2, 2], pads: [1, 1, 1, 1], dilations: [1, 1], group: 1))
        #expect(try op.outputShape(inputShapes: [[batchDimension, 3, 28, 28], [16, 3, 3, 3], [16]]) == [batchDimension, 16, 14, 14])
        let dilated = Op.conv(ConvAttributes(strides: [1, 1], pads: [0, 0, 0, 0], dilations: [2, 3], group: 1))
        #expect(try dilated.outputShape(inputShapes: [[1, 3, 10, 11], [4, 3, 3, 3]]) == [1, 4, 6, 5])
    }

    @Test("conv rejects channel and bias mismatches with a message")
    func convErrors() {
        let op = Op.conv(ConvAttributes(group: 2))
        #expect(throws: ShapeError.self) { try op.outputShape(inputShapes: [[1, 3, 8, 8], [4, 2, 3, 3]]) }
        #expect(throws: ShapeError.self) { try Op.conv(ConvAttributes()).outputShape(inputShapes: [[1, 3, 8, 8], [4, 3, 3, 3], [5]]) }
        #expect(throws: ShapeError.self) { try Op.conv(ConvAttributes()).outputShape(inputShapes: [[1, 3, 2, 2], [4, 3, 3, 3]]) }
    }

    @Test("pooling with ceil mode drops a window that would start in the end padding")
    func poolCeil() throws {
        let op = Op.maxPool(PoolAttributes(kernel: [3, 3], strides: [2, 2], pads: [0, 0, 0, 0], ceilMode: true))
        #expect(try op.outputShape(inputShapes: [[1, 1, 32, 32]]) == [1, 1, 16, 16])
        let padded = Op.maxPool(PoolAttributes(kernel: [2, 2], strides: [2, 2], pads: [1, 1, 1, 1], ceilMode: true))
        #expect(try padded.outputShape(inputShapes: [[1, 1, 4, 4]]) == [1, 1, 3, 3])
    }

    @Test("broadcasting follows NumPy; the batch dimension matches only itself or 1")
    func broadcasting() throws {
        #expect(TensorLayout.broadcastShape([batchDimension, 16, 7, 7], [16, 1, 1]) == [batchDimension, 16, 7, 7])
        #expect(TensorLayout.broadcastShape([2, 3], [4, 1, 3]) == [4, 2, 3])
        #expect(TensorLayout.broadcastShape([2, 3], [3, 2]) == nil)
        #expect(TensorLayout.broadcastShape([batchDimension, 3], [5, 3]) == nil)
    }

    @Test("reshape keeps the element count per sample")
    func reshape() throws {
        #expect(try Op.reshape(shape: [batchDimension, 64]).outputShape(inputShapes: [[batchDimension, 64, 1, 1]]) == [batchDimension, 64])
        #expect(throws: ShapeError.self) { try Op.reshape(shape: [batchDimension, 63]).outputShape(inputShapes: [[batchDimension, 64, 1, 1]]) }
        #expect(throws: ShapeError.self) { try Op.reshape(shape: [64]).outputShape(inputShapes: [[batchDimension, 64]]) }
    }
}

@Suite("layout ops")
struct TensorLayoutTests {
    @Test("transpose, slice, gather and concat against hand-computed results")
    func layoutOps() {
        let values = Array(0..<24)  // shape [2, 3, 4]
        let (t, ts) = TensorLayout.transpose(values, shape: [2, 3, 4], perm: [2, 0, 1])
        #expect(ts == [4, 2, 3])
        #expect(Array(t.prefix(6)) == [0, 4, 8, 12, 16, 20])
        let sliced = TensorLayout.slice(values, shape: [2, 3, 4], starts: [1, 2, 3], counts: [1, 2, 2], steps: [1, -1, -2])
        #expect(sliced == [23, 21, 19, 17])
        let (g, gs) = TensorLayout.gather(values, shape: [2, 3, 4], axis: 1, indices: [2, 0], indicesShape: [2])
        #expect(gs == [2, 2, 4])
        #expect(g == [8, 9, 10, 11, 0, 1, 2, 3, 20, 21, 22, 23, 12, 13, 14, 15])
        let (c, cs) = TensorLayout.concat([([1, 2], [1, 2]), ([3, 4, 5, 6], [2, 2])], axis: 0)
        #expect(cs == [3, 2] && c == [1, 2, 3, 4, 5, 6])
        let (b, bs) = TensorLayout.broadcastBinary([1, 2, 3], [3], [10, 20], [2, 1], +)
        #expect(bs == [2, 3] && b == [11, 12, 13, 21, 22, 23])
    }
}

@Suite("graph")
struct GraphTests {
    /// x → conv → relu → output, with one unused constant.
    func smallGraph() throws -> Graph {
        var graph = Graph(name: "small")
        let x = graph.addInput(name: "x", shape: [batchDimension, 1, 5, 5])
        let w = graph.addConstant(name: "w", Tensor(shape: [2, 1, 3, 3], repeating: 1))
        _ = graph.addConstant(name: "unused", Tensor(shape: [3], repeating: 0))
        let y = try graph.addNode(name: "conv", op: .conv(ConvAttributes()), inputs: [x, w])
        graph.outputs = [try graph.addNode(name: "relu", op: .activation(.relu), inputs: [y])]
        return graph
    }

    @Test("the verifier accepts a valid graph and statistics count it")
    func verifyAndCount() throws {
        var graph = try smallGraph()
        try graph.verify()
        #expect(graph.macsPerSample == 2 * 3 * 3 * 9)
        #expect(graph.activationsPerSample == 2 * (2 * 3 * 3))  // conv and relu, each [1, 2, 3, 3]
        graph.eliminateDeadCode()
        #expect(graph.parameterCount == 18)
        #expect(graph.opHistogram == ["Conv": 1, "Relu": 1])
    }

    @Test("the verifier names the node that reads an undefined value")
    func verifyUndefined() throws {
        var graph = try smallGraph()
        let stray = graph.addValue(name: "stray", shape: [batchDimension, 2, 3, 3])
        graph.nodes[1].inputs = [stray]
        #expect(throws: GraphError.invalidNode(node: "relu", op: "Relu", message: "input 'stray' is not defined before use")) {
            try graph.verify()
        }
    }

    @Test("constant folding replaces all-constant nodes using the given evaluator")
    func folding() throws {
        var graph = Graph(name: "fold")
        let x = graph.addInput(name: "x", shape: [batchDimension, 2])
        let a = graph.addConstant(name: "a", Tensor(shape: [2], scalars: [1, 2]))
        let b = graph.addConstant(name: "b", Tensor(shape: [2], scalars: [3, 4]))
        let sum = try graph.addNode(name: "sum", op: .binary(.add), inputs: [a, b])
        graph.outputs = [try graph.addNode(name: "out", op: .binary(.mul), inputs: [x, sum])]
        graph.foldConstants { node, inputs in
            Tensor(shape: inputs[0].shape, scalars: zip(inputs[0].scalars, inputs[1].scalars).map { $0 + $1 })
        }
        #expect(graph.nodes.map(\.name) == ["out"])
        #expect(graph.constants[sum]?.scalars == [4, 6])
        try graph.verify()
    }
}
