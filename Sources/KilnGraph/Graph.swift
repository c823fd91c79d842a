/// Identifies a value (a tensor edge) of a `Graph`.
public struct ValueID: Hashable, Comparable, Sendable, CustomStringConvertible {
    /// Position in `Graph.values`.
    public let index: Int

    /// Wraps a position in `Graph.values`.
    public init(_ index: Int) { self.index = index }

    public static func < (a: ValueID, b: ValueID) -> Bool { a.index < b.index }
    public var description: String { "%\(index)" }
}

/// A tensor edge: its name (from the source model where it had one) and static shape.
public struct Value: Hashable, Sendable {
    /// Name, unique within the graph.
    public var name: String
    /// Static shape; `batchDimension` marks the batch size.
    public var shape: [Int]
}

/// One operation applied to values, producing one value.
public struct Node: Hashable, Sendable {
    /// Name, from the source model where it had one.
    public var name: String
    /// What the node computes.
    public var op: Op
    /// Operands, in the order the op defines.
    public var inputs: [ValueID]
    /// The result.
    public var output: ValueID

    /// Creates a node.
    public init(name: String, op: Op, inputs: [ValueID], output: ValueID) {
        self.name = name
        self.op = op
        self.inputs = inputs
        self.output = output
    }
}

/// The one IR of Kiln: a dataflow graph of `Op`s over float32 tensors, nodes in topological order.
public struct Graph: Sendable {
    /// Model name.
    public var name: String
    /// Every value, indexed by `ValueID.index`.
    public private(set) var values: [Value] = []
    /// Values fed by the caller, in order.
    public var inputs: [ValueID] = []
    /// Values returned to the caller, in order.
    public var outputs: [ValueID] = []
    /// Operations in an order where every input is defined before use.
    public var nodes: [Node] = []
    /// Values known before the graph runs (weights, BN statistics, folded constants).
    public var constants: [ValueID: Tensor] = [:]
    /// Int64 values known before the graph runs; only graph outputs may be int64 (folded shape arithmetic).
    public var intConstants: [ValueID: IntTensor] = [:]
    /// Free-form key/value metadata carried from the source model (e.g. input normalization).
    public var metadata: [String: String] = [:]
    private var valueIDsByName: [String: ValueID] = [:]

    /// An empty graph.
    public init(name: String) {
        self.name = name
    }

    /// The value with this ID.
    public subscript(id: ValueID) -> Value { values[id.index] }

    /// The value with this name, if any.
    public func value(named name: String) -> ValueID? { valueIDsByName[name] }

    /// Adds a value; a name already taken gets a numeric suffix.
    public mutating func addValue(name: String, shape: [Int]) -> ValueID {
        var unique = name.isEmpty ? "v\(values.count)" : name
        var suffix = 1
        while valueIDsByName[unique] != nil {
            unique = "\(name)_\(suffix)"
            suffix += 1
        }
        let id = ValueID(values.count)
        values.append(Value(name: unique, shape: shape))
        valueIDsByName[unique] = id
        return id
    }

    /// Adds a graph input.
    @discardableResult
    public mutating func addInput(name: String, shape: [Int]) -> ValueID {
        let id = addValue(name: name, shape: shape)
        inputs.append(id)
        return id
    }

    /// Adds a constant tensor.
    public mutating func addConstant(name: String, _ tensor: Tensor) -> ValueID {
        let id = addValue(name: name, shape: tensor.shape)
        constants[id] = tensor
        return id
    }

    /// Adds a constant int64 tensor (allowed only as a graph output).
    public mutating func addIntConstant(name: String, _ tensor: IntTensor) -> ValueID {
        let id = addValue(name: name, shape: tensor.shape)
        intConstants[id] = tensor
        return id
    }

    /// Appends a node whose output shape is inferred from its inputs; throws if the inputs do not fit the op.
    @discardableResult
    public mutating func addNode(name: String, op: Op, inputs: [ValueID], outputName: String? = nil) throws
        -> ValueID
    {
        let shape: [Int]
        do {
            shape = try op.outputShape(inputShapes: inputs.map { values[$0.index].shape })
        } catch let error as ShapeError {
            throw GraphError.invalidNode(node: name, op: op.name, message: error.message)
        }
        let output = addValue(name: outputName ?? name, shape: shape)
        nodes.append(Node(name: name, op: op, inputs: inputs, output: output))
        return output
    }

    /// Gives a value a new name, which must not be taken.
    public mutating func rename(_ id: ValueID, to name: String) {
        precondition(valueIDsByName[name] == nil, "name '\(name)' is taken")
        valueIDsByName[values[id.index].name] = nil
        values[id.index].name = name
        valueIDsByName[name] = id
    }

    /// Changes the recorded shape of a value (used by rewrite passes that keep the node's meaning).
    public mutating func setShape(_ shape: [Int], of id: ValueID) {
        values[id.index].shape = shape
    }

    /// The index in `nodes` of the node producing each value.
    public func producers() -> [ValueID: Int] {
        var result: [ValueID: Int] = [:]
        for (index, node) in nodes.enumerated() { result[node.output] = index }
        return result
    }

    /// Indices in `nodes` of the nodes reading each value.
    public func consumers() -> [ValueID: [Int]] {
        var result: [ValueID: [Int]] = [:]
        for (index, node) in nodes.enumerated() {
            for input in node.inputs { result[input, default: []].append(index) }
        }
        return result
    }
}

/// A problem with the structure of a graph, naming the node involved.
public enum GraphError: Error, Equatable, CustomStringConvertible {
    /// A node's inputs do not fit its op.
    case invalidNode(node: String, op: String, message: String)
    /// The graph as a whole is malformed.
    case invalidGraph(message: String)

    public var description: String {
        switch self {
        case .invalidNode(let node, let op, let message): return "node '\(node)' (\(op)): \(message)"
        case .invalidGraph(let message): return message
        }
    }
}

/// Inputs that do not fit an op; the graph wraps it into a `GraphError` naming the node.
public struct ShapeError: Error, Equatable {
    /// What does not fit.
    public var message: String

    /// Creates the error.
    public init(_ message: String) { self.message = message }
}
