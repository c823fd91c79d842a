import KilnGraph

/// A problem with the inputs given to the interpreter.
public struct InterpreterError: Error, CustomStringConvertible, Equatable {
    /// What is wrong.
    public var message: String
    /// Creates the error.
    public init(message: String) { self.message = message }
    public var description: String { message }
}

/// Executes a `Graph` in fp32: the reference every other executor is checked against.
///
/// An interpreter is immutable and may run on several threads at once. Each intermediate value is released right
/// after its last use.
public final class Interpreter: Sendable {
    /// The graph being executed (verified).
    public let graph: Graph
    /// For each node, the values whose last reader it is.
    private let releases: [[ValueID]]

    /// Verifies the graph and prepares to run it.
    public init(_ graph: Graph) throws {
        try graph.verify()
        self.graph = graph
        var lastUse: [ValueID: Int] = [:]
        for (index, node) in graph.nodes.enumerated() {
            for input in node.inputs { lastUse[input] = index }
        }
        var releases = [[ValueID]](repeating: [], count: graph.nodes.count)
        let kept = Set(graph.outputs).union(graph.constants.keys)
        for (value, index) in lastUse where !kept.contains(value) { releases[index].append(value) }
        self.releases = releases
    }

    /// Runs the graph on one tensor per graph input; returns one tensor per graph output.
    ///
    /// `observe`, if given, sees every node's output as it is computed (e.g. to read BatchNorm inputs).
    public func run(_ inputs: [Tensor], observe: ((Node, Tensor) -> Void)? = nil) throws -> [Tensor] {
        let batch = try checkInputs(inputs)
        var live: [ValueID: Tensor] = [:]
        for (id, tensor) in zip(graph.inputs, inputs) { live[id] = tensor }
        for (index, node) in graph.nodes.enumerated() {
            let operands = node.inputs.map { live[$0] ?? graph.constants[$0]! }
            let result = try Interpreter.evaluate(node.op, operands, batch: batch, node: node.name)
            observe?(node, result)
            live[node.output] = result
            for value in releases[index] { live[value] = nil }
        }
        return graph.outputs.map { id in
            if let tensor = live[id] ?? graph.constants[id] { return tensor }
            let folded = graph.intConstants[id]!
            return Tensor(shape: folded.shape, scalars: folded.values.map { Float($0) })
        }
    }

    /// Checks that the samples of a batch do not affect each other, as a model exported at a fixed batch size and
    /// imported with a batch dimension (`kiln.exported_batch`) must: two random samples run together give the
    /// outputs each gives alone (to float rounding).
    public func checkBatchIndependence() throws {
        guard graph.inputs.contains(where: { graph[$0].shape.first == batchDimension }) else { return }
        var rng = SeededGenerator(seed: 0x6b696c6e)
        let pairs = graph.inputs.map { id -> Tensor in
            let shape = graph[id].shape
            return shape.first == batchDimension ? rng.normal([2] + shape.dropFirst()) : rng.normal(shape)
        }
        func sample(_ t: Tensor, _ index: Int, of id: ValueID) -> Tensor {
            guard graph[id].shape.first == batchDimension else { return t }
            let size = t.count / 2
            return Tensor(shape: [1] + t.shape.dropFirst(), scalars: Array(t.scalars[(index * size)..<((index + 1) * size)]))
        }
        let together = try run(pairs)
        for index in 0..<2 {
            let alone = try run(zip(pairs, graph.inputs).map { sample($0, index, of: $1) })
            for (output, (both, single)) in zip(graph.outputs, zip(together, alone)) where graph[output].shape.first == batchDimension {
                let part = sample(both, index, of: output)
                let scale = single.scalars.map { abs($0) }.max() ?? 0
                let worst = zip(part.scalars, single.scalars).map { abs($0 - $1) }.max() ?? 0
                guard part.shape == single.shape, worst <= 1e-4 * (1 + scale) else {
                    throw InterpreterError(message: """
                        output '\(graph[output].name)' of sample \(index + 1) changes when another sample shares its batch \
                        (by up to \(worst)): the model mixes samples across its batch, so it cannot run at other batch \
                        sizes than the one it was exported with
                        """)
                }
            }
        }
    }

    /// Checks count, rank and sizes of the inputs; returns the batch size N they agree on (1 if none is batched).
    private func checkInputs(_ inputs: [Tensor]) throws -> Int {
        guard inputs.count == graph.inputs.count else {
            throw InterpreterError(message: "the model takes \(graph.inputs.count) input(s), got \(inputs.count)")
        }
        var batch: Int?
        for (id, tensor) in zip(graph.inputs, inputs) {
            let expected = graph[id].shape
            var fits = expected.count == tensor.rank
            if fits {
                for (want, have) in zip(expected, tensor.shape) {
                    if want == batchDimension {
                        if have < 1 || (batch != nil && batch != have) { fits = false }
                        batch = have
                    } else if want != have {
                        fits = false
                    }
                }
            }
            guard fits else {
                throw InterpreterError(message: "input '\(graph[id].name)' expects \(expected.shapeDescription), got \(tensor.shape.shapeDescription)")
            }
        }
        return batch ?? 1
    }

    /// Computes one op on concrete inputs; `batch` replaces `batchDimension` in static shape attributes.
    public static func evaluate(_ op: Op, _ x: [Tensor], batch: Int, node: String = "") throws -> Tensor {
        let concrete = op.substitutingBatch(batch)
        do {
            _ = try concrete.outputShape(inputShapes: x.map(\.shape))
        } catch let error as ShapeError {
            throw GraphError.invalidNode(node: node, op: op.name, message: error.message)
        }
        switch concrete {
        case .conv(let a): return FP32.conv2d(x[0], weight: x[1], bias: x.count > 2 ? x[2] : nil, a)
        case .batchNorm(let epsilon):
            return FP32.batchNorm(x[0], scale: x[1], bias: x[2], mean: x[3], variance: x[4], epsilon: epsilon)
        case .activation(let f): return FP32.activation(x[0], f)
        case .binary(let b): return FP32.binary(x[0], x[1], b)
        case .maxPool(let a): return FP32.maxPool(x[0], a)
        case .averagePool(let a): return FP32.averagePool(x[0], a)
        case .globalAveragePool: return FP32.globalAveragePool(x[0])
        case .reduceMean(let axes, let keepDims): return FP32.reduceMean(x[0], axes: axes, keepDims: keepDims)
        case .reshape(let shape): return x[0].reshaped(to: shape)
        case .transpose(let perm):
            let (values, shape) = TensorLayout.transpose(x[0].scalars, shape: x[0].shape, perm: perm)
            return Tensor(shape: shape, scalars: values)
        case .concat(let axis):
            let (values, shape) = TensorLayout.concat(x.map { ($0.scalars, $0.shape) }, axis: axis)
            return Tensor(shape: shape, scalars: values)
        case .matMul: return FP32.matMul(x[0], x[1])
        case .softmax(let axis): return FP32.softmax(x[0], axis: axis)
        case .pad(let a): return FP32.pad(x[0], a)
        case .slice(let a):
            return Tensor(shape: a.counts, scalars: TensorLayout.slice(x[0].scalars, shape: x[0].shape,
                                                                       starts: a.starts, counts: a.counts,
                                                                       steps: a.steps))
        case .gather(let axis, let indices):
            let (values, shape) = TensorLayout.gather(x[0].scalars, shape: x[0].shape, axis: axis,
                                                      indices: indices.values.map { Int($0) },
                                                      indicesShape: indices.shape)
            return Tensor(shape: shape, scalars: values)
        case .upsampleNearest(let sh, let sw): return FP32.upsampleNearest(x[0], scaleH: sh, scaleW: sw)
        case .insertZeros(let sh, let sw): return FP32.insertZeros(x[0], strideH: sh, strideW: sw)
        case .resizeLinear(let h, let w, let coordinates): return FP32.resizeLinear(x[0], height: h, width: w, coordinates: coordinates)
        }
    }
}

extension Graph {
    /// Folds every node whose inputs are all constants, computing it with the fp32 interpreter.
    public mutating func foldConstants() throws {
        try foldConstants { node, inputs in try Interpreter.evaluate(node.op, inputs, batch: 1, node: node.name) }
    }
}
