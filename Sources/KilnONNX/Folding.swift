import KilnGraph

/// Import-time evaluation of the ONNX ops that exporters use for shape arithmetic (and of any op in this set whose
/// inputs are all known), on int64 and float data.
enum Folding {
    /// ONNX op types this evaluator computes.
    static let ops: Set<String> = [
        "Identity", "Constant", "Shape", "Gather", "Cast", "ConstantOfShape", "Add", "Sub", "Mul", "Div", "Slice",
        "Concat", "Transpose", "Reshape", "Unsqueeze", "Squeeze", "Flatten", "Dropout", "Expand", "CastLike",
    ]

    /// Computes `node` on known inputs (nil where an optional input is absent).
    static func evaluate(_ node: Onnx_NodeProto, _ inputs: [ImportedTensor?], opset: Int) throws -> ImportedTensor {
        let attributes = Attributes(node)
        func input(_ i: Int) throws -> ImportedTensor {
            guard i < inputs.count, let value = inputs[i] else { throw ImportFailure("input \(i) is missing") }
            return value
        }
        func ints(_ i: Int) throws -> [Int]? {
            guard i < inputs.count, let value = inputs[i] else { return nil }
            guard case .int(let t) = value else { throw ImportFailure("input \(i) must be int64") }
            return t.values.map { Int(clamping: $0) }
        }
        switch node.opType {
        case "Identity", "Dropout":
            return try input(0)
        case "Constant":
            return try constantValue(attributes)
        case "Shape":
            let shape = try input(0).shape
            let (start, end) = try shapeRange(attributes, rank: shape.count)
            let dims = start < end ? Array(shape[start..<end]) : []
            return .int(IntTensor(shape: [dims.count], values: dims.map { Int64($0) }))
        case "Cast":
            return try cast(try input(0), to: try attributes.int("to"))
        case "CastLike":
            // The element family of input 1 (float32 or int64) decides.
            if case .float = try input(1) { return try cast(try input(0), to: 1) }
            return try cast(try input(0), to: 7)
        case "Expand":
            let data = try input(0)
            guard let target = try ints(1) else { throw ImportFailure("Expand needs a shape") }
            return try expanded(data, to: target)
        case "ConstantOfShape":
            guard let shape = try ints(0), shape.allSatisfy({ $0 >= 0 }) else {
                throw ImportFailure("shape input must be non-negative int64 values")
            }
            guard shape.reduce(1, { $0.multipliedReportingOverflow(by: $1).overflow ? Int.max : $0 * $1 }) <= maximumElementCount else {
                throw ImportFailure("shape \(shape) is too large")
            }
            switch try attributes.tensor("value") ?? .float(Tensor(shape: [1], scalars: [0])) {
            case .float(let v): return .float(Tensor(shape: shape, repeating: v.scalars.first ?? 0))
            case .int(let v): return .int(IntTensor(shape: shape, values: [Int64](repeating: v.values.first ?? 0, count: shape.elementCount)))
            }
        case "Add", "Sub", "Mul", "Div":
            return try arithmetic(node.opType, try input(0), try input(1))
        case "Gather":
            let data = try input(0)
            let axis = try normalizedAxis(try attributes.int("axis", default: 0), rank: data.shape.count)
            guard case .int(let indices) = try input(1) else { throw ImportFailure("indices must be integers") }
            let positions = try indices.values.map { try normalizedIndex(Int($0), size: data.shape[axis]) }
            return data.rearranged { TensorLayout.gather($0, shape: data.shape, axis: axis, indices: positions, indicesShape: indices.shape) }
        case "Slice":
            let data = try input(0)
            let attributesForm = opset < 10
            let starts = attributesForm ? try attributes.ints("starts") : try ints(1)
            let ends = attributesForm ? try attributes.ints("ends") : try ints(2)
            let axes = attributesForm ? try attributes.ints("axes") : try ints(3)
            let steps = attributesForm ? nil : try ints(4)
            guard let starts, let ends else { throw ImportFailure("Slice needs starts and ends") }
            let slice = try normalizedSlice(shape: data.shape, starts: starts, ends: ends, axes: axes, steps: steps)
            return data.rearranged { positions in
                (TensorLayout.slice(positions, shape: data.shape, starts: slice.starts, counts: slice.counts, steps: slice.steps), slice.counts)
            }
        case "Concat":
            let parts = try inputs.indices.map { try input($0) }
            guard let first = parts.first else { throw ImportFailure("Concat needs inputs") }
            let axis = try normalizedAxis(try attributes.int("axis"), rank: first.shape.count)
            guard (try? Op.concat(axis: axis).outputShape(inputShapes: parts.map(\.shape))) != nil else {
                throw ImportFailure("cannot concatenate shapes \(parts.map(\.shape)) on axis \(axis)")
            }
            switch first {
            case .float:
                let floats = try parts.map { p -> ([Float], [Int]) in
                    guard case .float(let t) = p else { throw ImportFailure("Concat mixes element types") }
                    return (t.scalars, t.shape)
                }
                let (values, outShape) = TensorLayout.concat(floats, axis: axis)
                return .float(Tensor(shape: outShape, scalars: values))
            case .int:
                let integers = try parts.map { p -> ([Int64], [Int]) in
                    guard case .int(let t) = p else { throw ImportFailure("Concat mixes element types") }
                    return (t.values, t.shape)
                }
                let (values, outShape) = TensorLayout.concat(integers, axis: axis)
                return .int(IntTensor(shape: outShape, values: values))
            }
        case "Transpose":
            let data = try input(0)
            let perm = try attributes.ints("perm") ?? Array((0..<data.shape.count).reversed())
            guard perm.sorted() == Array(0..<data.shape.count) else { throw ImportFailure("perm \(perm) is not a permutation") }
            return data.rearranged { TensorLayout.transpose($0, shape: data.shape, perm: perm) }
        case "Reshape":
            let data = try input(0)
            let target = opset < 5 ? try attributes.ints("shape") : try ints(1)
            guard let target else { throw ImportFailure("Reshape needs a shape") }
            let dims = try reshapeTarget(target.map { $0 }, input: data.shape,
                                         allowZero: try attributes.int("allowzero", default: 0) != 0)
            return data.reshaped(to: dims.map { $0! })
        case "Unsqueeze", "Squeeze":
            let data = try input(0)
            let axes = opset < 13 ? try attributes.ints("axes") : try ints(1)
            let shape = try node.opType == "Unsqueeze" ? unsqueezed(data.shape, axes: axes ?? [])
                                                       : squeezed(data.shape, axes: axes)
            return data.reshaped(to: shape)
        case "Flatten":
            let data = try input(0)
            let axis = try normalizedAxis(try attributes.int("axis", default: 1), rank: data.shape.count, inclusive: true)
            let shape = [data.shape[..<axis].reduce(1, *), data.shape[axis...].reduce(1, *)]
            return data.reshaped(to: shape)
        default:
            throw ImportFailure("cannot be evaluated at import")
        }
    }

    /// ONNX Expand: `data` broadcast against `target` (either may have the larger size on an axis).
    static func expanded(_ data: ImportedTensor, to target: [Int]) throws -> ImportedTensor {
        guard target.allSatisfy({ $0 >= 0 }), let shape = TensorLayout.broadcastShape(data.shape, target) else {
            throw ImportFailure("cannot expand \(data.shape) to \(target)")
        }
        guard shape.reduce(1, { $0.multipliedReportingOverflow(by: $1).overflow ? Int.max : $0 * $1 }) <= maximumElementCount else {
            throw ImportFailure("expanded shape \(shape) is too large")
        }
        return data.rearranged { positions in
            TensorLayout.broadcastBinary(positions, data.shape, [Int](repeating: 0, count: shape.elementCount), shape) { a, _ in a }
        }
    }

    /// The value of a Constant node from whichever value attribute it carries.
    static func constantValue(_ a: Attributes) throws -> ImportedTensor {
        if let t = try a.tensor("value") { return t }
        if a.has("value_float") { return .float(Tensor(scalar: try a.float("value_float", default: 0))) }
        if let f = try a.floats("value_floats") { return .float(Tensor(shape: [f.count], scalars: f)) }
        if a.has("value_int") { return .int(IntTensor(shape: [], values: [Int64(try a.int("value_int"))])) }
        if let i = try a.ints("value_ints") { return .int(IntTensor(shape: [i.count], values: i.map { Int64($0) })) }
        throw ImportFailure("Constant without a supported value attribute (sparse and string values are not read)")
    }

    /// Start and end of the dimensions a Shape node returns (opset 15 attributes).
    static func shapeRange(_ a: Attributes, rank: Int) throws -> (Int, Int) {
        func clamp(_ v: Int) -> Int { min(max(v < 0 ? v + rank : v, 0), rank) }
        return (clamp(try a.int("start", default: 0)), clamp(try a.int("end", default: rank)))
    }

    /// ONNX Cast between the float and integer families (floats truncate toward zero; bool is 0 or 1).
    static func cast(_ value: ImportedTensor, to code: Int) throws -> ImportedTensor {
        let floatTypes: Set<Int> = [1, 10, 11, 16]
        let intTypes: Set<Int> = [2, 3, 4, 5, 6, 7, 12, 13]
        switch value {
        case .float(let t):
            if floatTypes.contains(code) { return value }
            if code == 9 { return .int(IntTensor(shape: t.shape, values: t.scalars.map { $0 != 0 ? 1 : 0 })) }
            guard intTypes.contains(code) else { throw ImportFailure("Cast to data type \(code) is not supported") }
            guard t.scalars.allSatisfy({ $0.isFinite && abs($0) < 9.2e18 }) else {
                throw ImportFailure("Cast of a non-finite or huge float to an integer")
            }
            return .int(IntTensor(shape: t.shape, values: t.scalars.map { Int64($0.rounded(.towardZero)) }))
        case .int(let t):
            if floatTypes.contains(code) { return .float(Tensor(shape: t.shape, scalars: t.values.map { Float($0) })) }
            if code == 9 { return .int(IntTensor(shape: t.shape, values: t.values.map { $0 != 0 ? 1 : 0 })) }
            guard intTypes.contains(code) else { throw ImportFailure("Cast to data type \(code) is not supported") }
            return value
        }
    }

    /// Broadcasting Add/Sub/Mul/Div on two known tensors of the same family (integer division truncates).
    static func arithmetic(_ op: String, _ a: ImportedTensor, _ b: ImportedTensor) throws -> ImportedTensor {
        guard TensorLayout.broadcastShape(a.shape, b.shape) != nil else {
            throw ImportFailure("shapes \(a.shape) and \(b.shape) do not broadcast")
        }
        switch (a, b) {
        case (.float(let x), .float(let y)):
            let f = BinaryOp(rawValue: op.lowercased())!
            let (values, shape) = TensorLayout.broadcastBinary(x.scalars, x.shape, y.scalars, y.shape, f.apply)
            return .float(Tensor(shape: shape, scalars: values))
        case (.int(let x), .int(let y)):
            if op == "Div" && y.values.contains(0) { throw ImportFailure("integer division by zero") }
            let f: (Int64, Int64) -> Int64 = {
                switch op {
                case "Add": return { $0 &+ $1 }
                case "Sub": return { $0 &- $1 }
                case "Mul": return { $0 &* $1 }
                default: return { $0 / $1 }
                }
            }()
            let (values, shape) = TensorLayout.broadcastBinary(x.values, x.shape, y.values, y.shape, f)
            return .int(IntTensor(shape: shape, values: values))
        default:
            throw ImportFailure("\(op) of a float and an integer tensor")
        }
    }

    /// A possibly negative axis made non-negative; `inclusive` allows `rank` itself (Flatten).
    static func normalizedAxis(_ axis: Int, rank: Int, inclusive: Bool = false) throws -> Int {
        let result = axis < 0 ? axis + rank : axis
        guard result >= 0, result < rank + (inclusive ? 1 : 0) else {
            throw ImportFailure("axis \(axis) is out of range for rank \(rank)")
        }
        return result
    }

    /// A possibly negative index along a dimension of `size` made non-negative.
    static func normalizedIndex(_ index: Int, size: Int) throws -> Int {
        let result = index < 0 ? index + size : index
        guard result >= 0, result < size else { throw ImportFailure("index \(index) is out of range for size \(size)") }
        return result
    }

    /// ONNX Slice semantics (clamping, negative indices and steps) turned into per-dimension start/count/step.
    /// A batch dimension may only be taken whole.
    static func normalizedSlice(shape: [Int], starts: [Int], ends: [Int], axes: [Int]?, steps: [Int]?) throws
        -> SliceAttributes
    {
        let axes = try (axes ?? Array(0..<starts.count)).map { try normalizedAxis($0, rank: shape.count) }
        let steps = steps ?? [Int](repeating: 1, count: starts.count)
        guard starts.count == ends.count, axes.count == starts.count, steps.count == starts.count,
              Set(axes).count == axes.count else {
            throw ImportFailure("starts, ends, axes and steps must have one entry per sliced axis")
        }
        var result = SliceAttributes(starts: [Int](repeating: 0, count: shape.count), counts: shape,
                                     steps: [Int](repeating: 1, count: shape.count))
        for (i, axis) in axes.enumerated() {
            let size = shape[axis], step = steps[i]
            guard step != 0 else { throw ImportFailure("slice step is zero") }
            if size == batchDimension {
                guard step == 1, starts[i] == 0, ends[i] >= Int(Int32.max) else {
                    throw ImportFailure("cannot slice part of the batch dimension")
                }
                continue
            }
            var start = starts[i] < 0 ? starts[i] + size : starts[i]
            var end = ends[i] < 0 ? ends[i] + size : ends[i]
            if step > 0 {
                start = min(max(start, 0), size)
                end = min(max(end, 0), size)
                result.counts[axis] = max(0, (end - start + step - 1) / step)
            } else {
                start = min(max(start, 0), size - 1)
                end = min(max(end, -1), size - 1)
                result.counts[axis] = max(0, (start - end + (-step) - 1) / (-step))
            }
            result.starts[axis] = result.counts[axis] == 0 ? 0 : start
            result.steps[axis] = step
        }
        return result
    }

    /// The output shape of an ONNX Reshape: `0` copies the input dimension (unless `allowZero`), `-1` is inferred,
    /// nil stands for the batch size.
    static func reshapeTarget(_ target: [Int?], input: [Int], allowZero: Bool) throws -> [Int?] {
        var dims: [Int?] = try target.enumerated().map { i, d in
            guard let d else { return nil }
            if d == 0 && !allowZero {
                guard i < input.count else { throw ImportFailure("Reshape copies dimension \(i) that the input lacks") }
                return input[i] == batchDimension ? nil : input[i]
            }
            guard d >= -1 else { throw ImportFailure("invalid Reshape dimension \(d)") }
            return d
        }
        let inferred = dims.indices.filter { dims[$0] == -1 }
        guard inferred.count <= 1 else { throw ImportFailure("Reshape infers more than one dimension") }
        let inputBatch = input.filter { $0 == batchDimension }.count
        let targetBatch = dims.filter { $0 == nil }.count
        guard inputBatch == targetBatch else {
            throw ImportFailure("Reshape to \(target.map { $0.map(String.init) ?? "N" }) would mix the batch dimension of \(input.shapeDescription) with others")
        }
        let known = dims.compactMap { $0 }.filter { $0 != -1 }.reduce(1, *)
        let total = input.filter { $0 != batchDimension }.reduce(1, *)
        if let position = inferred.first {
            guard known > 0, total % known == 0 else {
                throw ImportFailure("cannot reshape \(input.shapeDescription) to \(target.map { $0.map(String.init) ?? "N" })")
            }
            dims[position] = total / known
        } else if known != total {
            throw ImportFailure("cannot reshape \(input.shapeDescription) (\(total) elements per sample) to \(target.map { $0.map(String.init) ?? "N" })")
        }
        return dims
    }

    /// Shape after inserting size-1 dimensions at `axes` (positions in the output).
    static func unsqueezed(_ shape: [Int], axes: [Int]) throws -> [Int] {
        let rank = shape.count + axes.count
        let positions = try Set(axes.map { try normalizedAxis($0, rank: rank) })
        guard positions.count == axes.count else { throw ImportFailure("repeated Unsqueeze axis") }
        var source = shape.makeIterator()
        return (0..<rank).map { positions.contains($0) ? 1 : source.next()! }
    }

    /// Shape after removing size-1 dimensions (all of them when `axes` is nil).
    static func squeezed(_ shape: [Int], axes: [Int]?) throws -> [Int] {
        let positions = try Set((axes ?? shape.indices.filter { shape[$0] == 1 }).map { try normalizedAxis($0, rank: shape.count) })
        for axis in positions where shape[axis] != 1 {
            throw ImportFailure("cannot squeeze dimension \(axis) of size \(shape[axis] == batchDimension ? "N" : String(shape[axis]))")
        }
        return shape.indices.filter { !positions.contains($0) }.map { shape[$0] }
    }
}

extension ImportedTensor {
    /// Rearranges the elements of either family by a layout op computed once on element positions.
    func rearranged(_ layout: ([Int]) -> (values: [Int], shape: [Int])) -> ImportedTensor {
        switch self {
        case .float(let t):
            let (positions, shape) = layout(Array(0..<t.count))
            return .float(Tensor(shape: shape, scalars: positions.map { t.scalars[$0] }))
        case .int(let t):
            let (positions, shape) = layout(Array(0..<t.values.count))
            return .int(IntTensor(shape: shape, values: positions.map { t.values[$0] }))
        }
    }

    /// The same elements under another shape with the same element count.
    func reshaped(to shape: [Int]) -> ImportedTensor {
        switch self {
        case .float(let t): return .float(Tensor(shape: shape, scalars: t.scalars))
        case .int(let t): return .int(IntTensor(shape: shape, values: t.values))
        }
    }
}
