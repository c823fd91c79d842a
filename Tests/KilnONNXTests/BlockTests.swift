import KilnGraph
import KilnTensor
import KilnTestSupport
import Testing

/// Block discovery for reconstruction, on the committed teachers (BatchNorm and padding folded as the
/// quantizer does).
@Suite("graph blocks")
struct BlockTests {
    func prepared(_ file: String) throws -> Graph {
        var graph = try Repository.teacher(file)
        graph.foldBatchNorm()
        graph.foldPadIntoConv()
        return graph
    }

    /// Ops of a block, by name, in order.
    func ops(_ graph: Graph, _ block: Block) -> [String] { block.nodes.map { graph.nodes[$0].op.kind } }

    @Test("blocks tile the graph in order and each block's subgraph computes the same values")
    func blocksTileTheGraph() throws {
        for file in ["resnet20.onnx", "mobilenetv2.onnx", "efficientnet_lite0.onnx"] {
            let graph = try prepared(file)
            let blocks = graph.blocks()
            #expect(blocks.first?.nodes.lowerBound == 0)
            #expect(blocks.last?.nodes.upperBound == graph.nodes.count)
            for (a, b) in zip(blocks, blocks.dropFirst()) {
                #expect(a.nodes.upperBound == b.nodes.lowerBound, "\(file): gap or overlap between blocks")
                #expect(b.input == a.output, "\(file): a block reads something other than the previous block's output")
            }
        }
        // Chaining the block subgraphs reproduces the whole graph on real-sized input.
        let graph = try prepared("mobilenetv2.onnx")
        var generator = SeededGenerator(seed: 3)
        let x = Tensor(shape: [2, 1, 28, 28], scalars: (0..<(2 * 784)).map { _ in generator.nextUnit() * 4 - 1 })
        var y = x
        for block in graph.blocks() { y = try Interpreter(graph.subgraph(block).graph).run([y])[0] }
        let whole = try Interpreter(graph).run([x])[0]
        #expect(y.shape == whole.shape)
        #expect(zip(y.scalars, whole.scalars).allSatisfy { abs($0 - $1) <= 1e-5 * max(1, abs($1)) })
    }

    @Test("ResNet-20: stem, nine residual blocks with their skips, and the head")
    func resnetBlocks() throws {
        let graph = try prepared("resnet20.onnx")
        let blocks = graph.blocks()
        #expect(blocks.count == 11)
        #expect(ops(graph, blocks[0]) == ["Conv", "Relu"])
        for block in blocks[1...9] {
            let names = ops(graph, block)
            #expect(names.filter { $0 == "Add" }.count == 1 && names.last == "Relu", "\(names)")
            #expect((2...3).contains(names.filter { $0 == "Conv" }.count))
        }
        #expect(ops(graph, blocks[10]).first == "GlobalAveragePool")
        #expect(ops(graph, blocks[10]).contains("MatMul"))
    }

    @Test("MobileNetV2: inverted residual blocks whole, with or without a skip; the head's 1×1 conv and classifier apart")
    func mobileNetBlocks() throws {
        let graph = try prepared("mobilenetv2.onnx")
        let blocks = graph.blocks()
        #expect(ops(graph, blocks[0]) == ["Conv", "Relu6"])
        var withSkip = 0, withoutSkip = 0
        for block in blocks[1..<(blocks.count - 2)] {
            let names = ops(graph, block)
            if names.contains("Add") { withSkip += 1 } else { withoutSkip += 1 }
            // Every inverted residual block ends in its linear projection (or the add after it).
            #expect(["Conv", "Add"].contains(names.last ?? ""), "\(names)")
        }
        #expect(withSkip > 0 && withoutSkip > 0)
        #expect(ops(graph, blocks[blocks.count - 2]) == ["Conv", "Relu6"])
        #expect(ops(graph, blocks[blocks.count - 1]).first == "GlobalAveragePool")
    }
}
