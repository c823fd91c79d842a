import KilnGraph

extension Importer {
    /// Turns one ONNX node into IR nodes.
    typealias Handler = @Sendable (inout Importer, NodeContext) throws -> Void

    /// The importer table: one thin constructor per ONNX op type. Ops that only do shape arithmetic are also
    /// evaluated by `Folding` when all their inputs are known.
    static let handlers: [String: Handler] = [
        "Conv": { try $0.conv($1) },
        "ConvTranspose": { try $0.convTranspose($1) },
        "BatchNormalization": { try $0.batchNormalization($1) },
        "Relu": { try $0.activation($1, .relu) },
        "LeakyRelu": { try $0.activation($1, .leakyRelu(alpha: try $1.attributes.float("alpha", default: 0.01))) },
        "Sigmoid": { try $0.activation($1, .sigmoid) },
        "HardSigmoid": {
            try $0.activation($1, .hardSigmoid(alpha: try $1.attributes.float("alpha", default: 0.2),
                                               beta: try $1.attributes.float("beta", default: 0.5)))
        },
        "HardSwish": { try $0.activation($1, .hardSwish) },
        "Tanh": { try $0.activation($1, .tanh) },
        "Elu": { try $0.activation($1, .elu(alpha: try $1.attributes.float("alpha", default: 1))) },
        "Softplus": { try $0.activation($1, .softplus) },
        "Erf": { try $0.activation($1, .erf) },
        "Sqrt": { try $0.activation($1, .squareRoot) },
        "LayerNormalization": { try $0.layerNormalization($1) },
        "Gelu": {
            let approximation = try $1.attributes.string("approximate", default: "none")
            guard approximation == "none" else { throw ImportFailure("Gelu with approximate='\(approximation)' is not supported (only the exact form)") }
            try $0.activation($1, .gelu)
        },
        "Clip": { try $0.clip($1) },
        "Add": { try $0.binary($1, .add) },
        "Sub": { try $0.binary($1, .sub) },
        "Mul": { try $0.binary($1, .mul) },
        "Div": { try $0.binary($1, .div) },
        "MaxPool": { try $0.pool($1, max: true) },
        "AveragePool": { try $0.pool($1, max: false) },
        "GlobalAveragePool": { try $0.globalAveragePool($1) },
        "ReduceMean": { try $0.reduceMean($1) },
        "Flatten": { try $0.flatten($1) },
        "Reshape": { try $0.reshape($1) },
        "Transpose": { try $0.transpose($1) },
        "Concat": { try $0.concat($1) },
        "Gemm": { try $0.gemm($1) },
        "MatMul": { try $0.matMul($1) },
        "Softmax": { try $0.softmax($1) },
        "Pad": { try $0.pad($1) },
        "Dropout": { try $0.dropout($1) },
        "Identity": { $0.alias($1, to: try $0.tensor($1, 0)) },
        "Cast": { try $0.cast($1) },
        "CastLike": { try $0.castLike($1) },
        "Expand": { try $0.expand($1) },
        "Gather": { try $0.gather($1) },
        "Slice": { try $0.slice($1) },
        "Unsqueeze": { try $0.squeezeOrUnsqueeze($1, unsqueeze: true) },
        "Squeeze": { try $0.squeezeOrUnsqueeze($1, unsqueeze: false) },
        "Split": { try $0.split($1) },
        "Resize": { try $0.resize($1) },
        "Upsample": { try $0.resize($1) },
        "SplitToSequence": { try $0.splitToSequence($1) },
        "SequenceAt": { try $0.sequenceAt($1) },
    ]

    /// Ops whose older definitions (before the given opset) the importer does not read; others read every version.
    static let minimumOpset: [String: Int] = [
        "Upsample": 7, "BatchNormalization": 6, "Relu": 6, "LeakyRelu": 6, "Sigmoid": 6, "HardSigmoid": 6, "Tanh": 6, "Clip": 6,
        "Add": 6, "Sub": 6, "Mul": 6, "Div": 6, "Gemm": 6, "Reshape": 5, "Concat": 4, "Pad": 2, "Cast": 6,
    ]

    mutating func conv(_ n: NodeContext) throws {
        let x = try tensor(n, 0), w = try tensor(n, 1)
        let xs = shape(x), ws = shape(w)
        guard xs.count == 4, ws.count == 4 else {
            throw ImportFailure("only 2-D convolution is supported (input \(xs.shapeDescription), weight \(ws.shapeDescription))")
        }
        let kernel = try n.attributes.ints("kernel_shape") ?? [ws[2], ws[3]]
        guard kernel == [ws[2], ws[3]] else { throw ImportFailure("kernel_shape \(kernel) disagrees with weight \(ws.shapeDescription)") }
        let strides = try n.attributes.ints("strides") ?? [1, 1]
        let dilations = try n.attributes.ints("dilations") ?? [1, 1]
        guard strides.count == 2, dilations.count == 2 else { throw ImportFailure("strides and dilations need 2 entries") }
        let pads = try windowPads(n, input: [xs[2], xs[3]], kernel: kernel, strides: strides, dilations: dilations)
        var inputs = [x, w]
        if n.has(2) { inputs.append(try tensor(n, 2)) }
        let attributes = ConvAttributes(strides: strides, pads: pads, dilations: dilations,
                                        group: try n.attributes.int("group", default: 1))
        try emit(n, .conv(attributes), inputs)
    }

    /// A 2-D transposed convolution as what it computes: zeros inserted between the input's pixels (stride − 1 of
    /// them), then a convolution with stride 1, the kernel flipped and its channel roles swapped, and pads
    /// dilation·(kernel − 1) − pads (output_padding added at the end). Every later stage then sees a plain conv.
    mutating func convTranspose(_ n: NodeContext) throws {
        let x = try tensor(n, 0)
        let xs = shape(x)
        guard xs.count == 4 else { throw ImportFailure("only 2-D transposed convolution is supported (input \(xs.shapeDescription))") }
        guard let weight = try known(n, 1), case .float(let w) = weight.small, w.rank == 4 else {
            throw ImportFailure("the weight must be a constant 4-D float tensor")
        }
        let group = try n.attributes.int("group", default: 1)
        let (cin, coutPerGroup, kh, kw) = (w.shape[0], w.shape[1], w.shape[2], w.shape[3])
        guard group >= 1, cin == xs[1], cin % group == 0 else { throw ImportFailure("weight \(w.shape) does not fit input \(xs.shapeDescription) in \(group) groups") }
        let kernel = try n.attributes.ints("kernel_shape") ?? [kh, kw]
        guard kernel == [kh, kw] else { throw ImportFailure("kernel_shape \(kernel) disagrees with weight \(w.shape)") }
        let strides = try n.attributes.ints("strides") ?? [1, 1]
        let dilations = try n.attributes.ints("dilations") ?? [1, 1]
        let outputPadding = try n.attributes.ints("output_padding") ?? [0, 0]
        guard strides.count == 2, dilations.count == 2, outputPadding.count == 2, strides.allSatisfy({ $0 >= 1 }),
              dilations.allSatisfy({ $0 >= 1 }) else { throw ImportFailure("strides, dilations and output_padding need 2 valid entries") }
        var pads = try n.attributes.ints("pads") ?? [0, 0, 0, 0]
        let autoPad = try n.attributes.string("auto_pad", default: "NOTSET")
        if let outputShape = try n.attributes.ints("output_shape") {
            // Total padding from the requested size; the odd cell goes at the end unless SAME_LOWER (as the ONNX
            // backend cases of ConvTranspose expect).
            guard outputShape.count >= 2 else { throw ImportFailure("output_shape needs H and W") }
            let target = Array(outputShape.suffix(2))
            for axis in 0..<2 {
                let total = strides[axis] * ([xs[2], xs[3]][axis] - 1) + outputPadding[axis] + (kernel[axis] - 1) * dilations[axis] + 1 - target[axis]
                let small = total / 2
                (pads[axis], pads[axis + 2]) = autoPad == "SAME_LOWER" ? (total - small, small) : (small, total - small)
            }
        } else if autoPad == "SAME_UPPER" || autoPad == "SAME_LOWER" {
            for axis in 0..<2 {
                let total = max(0, (kernel[axis] - 1) * dilations[axis] + 1 + outputPadding[axis] - strides[axis])
                let small = total / 2
                (pads[axis], pads[axis + 2]) = autoPad == "SAME_LOWER" ? (total - small, small) : (small, total - small)
            }
        } else if autoPad == "VALID" {
            pads = [0, 0, 0, 0]
        }
        guard pads.count == 4 else { throw ImportFailure("pads \(pads) must have 4 entries") }
        let convPads = (0..<4).map { (i: Int) -> Int in
            let reach: Int = dilations[i % 2] * (kernel[i % 2] - 1)
            let extra: Int = i >= 2 ? outputPadding[i % 2] : 0
            return reach - pads[i] + extra
        }
        guard convPads.allSatisfy({ $0 >= 0 }) else {
            throw ImportFailure("pads \(pads) larger than the kernel's reach are not supported")
        }
        // [Cin, Cout/g, kH, kW] → [Cout, Cin/g, kH, kW], flipped in H and W.
        let cinPerGroup = cin / group, cout = coutPerGroup * group
        var flipped = [Float](repeating: 0, count: w.count)
        for g in 0..<group { for i in 0..<cinPerGroup { for o in 0..<coutPerGroup { for y in 0..<kh { for x0 in 0..<kw {
            let source = (((g * cinPerGroup + i) * coutPerGroup + o) * kh + y) * kw + x0
            let target = (((g * coutPerGroup + o) * cinPerGroup + i) * kh + (kh - 1 - y)) * kw + (kw - 1 - x0)
            flipped[target] = w.scalars[source]
        } } } } }
        let weightID = graph.addConstant(name: "\(n.label)/conv_weight", Tensor(shape: [cout, cinPerGroup, kh, kw], scalars: flipped))
        let spread = strides == [1, 1] ? x : try emit(n, .insertZeros(strideH: strides[0], strideW: strides[1]), [x], step: "insert_zeros")
        var inputs = [spread, weightID]
        if n.has(2) { inputs.append(try tensor(n, 2)) }
        try emit(n, .conv(ConvAttributes(strides: [1, 1], pads: convPads, dilations: dilations, group: group)), inputs)
    }

    /// Explicit pads [top, left, bottom, right] from `pads` or `auto_pad`.
    func windowPads(_ n: NodeContext, input: [Int], kernel: [Int], strides: [Int], dilations: [Int]) throws -> [Int] {
        let autoPad = try n.attributes.string("auto_pad", default: "NOTSET")
        switch autoPad {
        case "NOTSET", "":
            let pads = try n.attributes.ints("pads") ?? [0, 0, 0, 0]
            guard pads.count == 4, pads.allSatisfy({ $0 >= 0 }) else { throw ImportFailure("pads \(pads) must be 4 non-negative values") }
            return pads
        case "VALID":
            return [0, 0, 0, 0]
        case "SAME_UPPER", "SAME_LOWER":
            var begin = [0, 0], end = [0, 0]
            for axis in 0..<2 {
                let out = (input[axis] + strides[axis] - 1) / strides[axis]
                let total = max(0, (out - 1) * strides[axis] + (kernel[axis] - 1) * dilations[axis] + 1 - input[axis])
                let small = total / 2
                (begin[axis], end[axis]) = autoPad == "SAME_UPPER" ? (small, total - small) : (total - small, small)
            }
            return [begin[0], begin[1], end[0], end[1]]
        default:
            throw ImportFailure("unknown auto_pad '\(autoPad)'")
        }
    }

    mutating func batchNormalization(_ n: NodeContext) throws {
        guard try n.attributes.int("training_mode", default: 0) == 0 else {
            throw ImportFailure("training_mode=1; export the model in eval mode (model.eval()) so BatchNormalization uses its running statistics")
        }
        try requireSingleOutput(n, "running mean/variance")
        let inputs = try (0..<5).map { try tensor(n, $0) }
        try emit(n, .batchNorm(epsilon: try n.attributes.float("epsilon", default: 1e-5)), inputs)
    }

    mutating func activation(_ n: NodeContext, _ f: Activation) throws {
        try emit(n, .activation(f), [try tensor(n, 0)])
    }

    mutating func clip(_ n: NodeContext) throws {
        let low: Float, high: Float
        if opset < 11 {
            low = try n.attributes.float("min", default: -.greatestFiniteMagnitude)
            high = try n.attributes.float("max", default: .greatestFiniteMagnitude)
        } else {
            low = try scalar(n, 1) ?? -.infinity
            high = try scalar(n, 2) ?? .infinity
        }
        let x = try tensor(n, 0)
        if low == 0 && (high == .infinity || high == .greatestFiniteMagnitude) {
            try emit(n, .activation(.relu), [x])
        } else {
            try emit(n, .activation(.clip(min: low, max: high)), [x])
        }
    }

    /// A known scalar input (nil if absent).
    func scalar(_ n: NodeContext, _ i: Int) throws -> Float? {
        guard let values = try constantFloats(n, i) else { return nil }
        guard values.count == 1 else { throw ImportFailure("input \(i) must be a scalar") }
        return values[0]
    }

    mutating func binary(_ n: NodeContext, _ op: BinaryOp) throws {
        let a = try tensor(n, 0)
        var b = try tensor(n, 1)
        // Before opset 7, `broadcast=1` with `axis` aligns B's dimensions with A's starting at `axis`.
        if opset < 7, try n.attributes.int("broadcast", default: 0) != 0, n.attributes.has("axis") {
            let rank = shape(a).count
            let axis = try Folding.normalizedAxis(try n.attributes.int("axis"), rank: rank)
            let bs = shape(b)
            let trailing = rank - axis - bs.count
            guard trailing >= 0 else { throw ImportFailure("legacy broadcast of \(bs.shapeDescription) at axis \(axis) does not fit rank \(rank)") }
            if trailing > 0 { b = try emit(n, .reshape(shape: bs + [Int](repeating: 1, count: trailing)), [b], step: "broadcast") }
        }
        try emit(n, .binary(op), [a, b])
    }

    mutating func pool(_ n: NodeContext, max: Bool) throws {
        let x = try tensor(n, 0)
        let xs = shape(x)
        guard xs.count == 4 else { throw ImportFailure("only 2-D pooling is supported (input \(xs.shapeDescription))") }
        try requireSingleOutput(n, "Indices")
        guard let kernel = try n.attributes.ints("kernel_shape"), kernel.count == 2 else {
            throw ImportFailure("kernel_shape must have 2 entries")
        }
        let strides = try n.attributes.ints("strides") ?? [1, 1]
        let dilations = try n.attributes.ints("dilations") ?? [1, 1]
        guard strides.count == 2, dilations.count == 2 else { throw ImportFailure("strides and dilations need 2 entries") }
        let pads = try windowPads(n, input: [xs[2], xs[3]], kernel: kernel, strides: strides, dilations: dilations)
        let attributes = PoolAttributes(kernel: kernel, strides: strides, pads: pads, dilations: dilations,
                                        ceilMode: try n.attributes.int("ceil_mode", default: 0) != 0,
                                        countIncludePad: try n.attributes.int("count_include_pad", default: 0) != 0)
        if !max && dilations != [1, 1] { throw ImportFailure("dilated average pooling is not supported") }
        try emit(n, max ? .maxPool(attributes) : .averagePool(attributes), [x])
    }

    mutating func globalAveragePool(_ n: NodeContext) throws {
        let x = try tensor(n, 0)
        guard shape(x).count == 4 else { throw ImportFailure("only 4-D inputs [N, C, H, W] are supported") }
        try emit(n, .globalAveragePool, [x])
    }

    /// LayerNormalization as what it computes, in IR ops: the mean and variance over the axes from `axis` on, then
    /// (x − mean) / √(variance + ε) · scale + bias (and, when read, the mean and 1 / √(variance + ε)).
    mutating func layerNormalization(_ n: NodeContext) throws {
        let x = try tensor(n, 0), scale = try tensor(n, 1)
        let rank = shape(x).count
        let raw = try n.attributes.int("axis", default: -1)
        let axis = raw < 0 ? raw + rank : raw
        guard (1..<rank).contains(axis) else { throw ImportFailure("axis \(raw) must be a non-batch axis of rank \(rank)") }
        let axes = Array(axis..<rank)
        let epsilon = graph.addConstant(name: "\(n.label)/epsilon", Tensor(shape: [], scalars: [try n.attributes.float("epsilon", default: 1e-5)]))
        let mean = try emit(n, .reduceMean(axes: axes, keepDims: true), [x], step: "mean")
        let centred = try emit(n, .binary(.sub), [x, mean], step: "centred")
        let squared = try emit(n, .binary(.mul), [centred, centred], step: "squared")
        let variance = try emit(n, .reduceMean(axes: axes, keepDims: true), [squared], step: "variance")
        let shifted = try emit(n, .binary(.add), [variance, epsilon], step: "variance_epsilon")
        let deviation = try emit(n, .activation(.squareRoot), [shifted], step: "deviation")
        let normalized = try emit(n, .binary(.div), [centred, deviation], step: "normalized")
        // The optional outputs: the mean and 1 / √(variance + ε), with the normalized axes kept as size 1.
        if n.proto.output.count > 1, !n.proto.output[1].isEmpty { values[n.proto.output[1]] = .runtime(mean) }
        if n.proto.output.count > 2, !n.proto.output[2].isEmpty {
            let one = graph.addConstant(name: "\(n.label)/one", Tensor(shape: [], scalars: [1]))
            values[n.proto.output[2]] = .runtime(try emit(n, .binary(.div), [one, deviation], step: "inverse_deviation"))
        }
        if n.has(2) {
            let scaled = try emit(n, .binary(.mul), [normalized, scale], step: "scaled")
            try emit(n, .binary(.add), [scaled, try tensor(n, 2)])
        } else {
            try emit(n, .binary(.mul), [normalized, scale])
        }
    }

    mutating func reduceMean(_ n: NodeContext) throws {
        let x = try tensor(n, 0)
        let rank = shape(x).count
        let given = opset < 18 ? try n.attributes.ints("axes") : try constantInts(n, 1)
        var axes = try (given ?? []).map { try Folding.normalizedAxis($0, rank: rank) }
        if axes.isEmpty {
            if try n.attributes.int("noop_with_empty_axes", default: 0) != 0 {
                alias(n, to: x)
                return
            }
            axes = Array(0..<rank)
        }
        let keepDims = try n.attributes.int("keepdims", default: 1) != 0
        axes = Array(Set(axes)).sorted()
        // The mean over H and W of an image is global average pooling (PyTorch's exporter writes
        // adaptive_avg_pool2d(x, 1) and x.mean((2, 3)) this way); one IR op for it keeps every later stage simple.
        if rank == 4, axes == [2, 3] {
            if keepDims {
                try emit(n, .globalAveragePool, [x])
            } else {
                let pooled = try emit(n, .globalAveragePool, [x], step: "pool")
                try emit(n, .reshape(shape: [shape(x)[0], shape(x)[1]]), [pooled])
            }
            return
        }
        try emit(n, .reduceMean(axes: axes, keepDims: keepDims), [x])
    }

    mutating func flatten(_ n: NodeContext) throws {
        let x = try tensor(n, 0)
        let xs = shape(x)
        let axis = try Folding.normalizedAxis(try n.attributes.int("axis", default: 1), rank: xs.count, inclusive: true)
        let outer = Array(xs[..<axis]), inner = Array(xs[axis...])
        guard !inner.hasBatchDimension else { throw ImportFailure("Flatten at axis \(axis) would merge the batch dimension") }
        let first: Int
        if outer.hasBatchDimension {
            guard outer.filter({ $0 != batchDimension }).elementCount == 1 else {
                throw ImportFailure("Flatten at axis \(axis) would merge the batch dimension with others")
            }
            first = batchDimension
        } else {
            first = outer.elementCount
        }
        try emit(n, .reshape(shape: [first, inner.elementCount]), [x])
    }

    mutating func reshape(_ n: NodeContext) throws {
        let x = try tensor(n, 0)
        var target: [Int?]
        if opset < 5 {
            target = try n.attributes.ints("shape") ?? []
        } else {
            guard let ints = try staticInts(n, 1) else { throw ImportFailure("Reshape needs a shape input") }
            target = ints
        }
        // A fixed-batch export spells the batch size out (`x.view(x.size(0), -1)` becomes [1, -1]).
        if exportedBatch != nil, shape(x).first == batchDimension, target.count == 1,
           target[0] == -1 || target[0] == exportedBatch! * Array(shape(x).dropFirst()).elementCount {
            values[n.proto.output[0]] = .flattened(x)
            return
        }
        if let exportedBatch, shape(x).first == batchDimension, target.first == exportedBatch {
            target[0] = nil
        }
        let dims = try Folding.reshapeTarget(target, input: shape(x),
                                             allowZero: try n.attributes.int("allowzero", default: 0) != 0)
        try emit(n, .reshape(shape: dims.map { $0 ?? batchDimension }), [x])
    }

    mutating func transpose(_ n: NodeContext) throws {
        let x = try tensor(n, 0)
        let rank = shape(x).count
        let perm = try n.attributes.ints("perm") ?? Array((0..<rank).reversed())
        try emit(n, .transpose(perm: perm), [x])
    }

    mutating func concat(_ n: NodeContext) throws {
        let inputs = try (0..<n.proto.input.count).filter { n.has($0) }.map { try tensor(n, $0) }
        guard let first = inputs.first else { throw ImportFailure("Concat needs inputs") }
        let axis = try Folding.normalizedAxis(try n.attributes.int("axis"), rank: shape(first).count)
        try emit(n, .concat(axis: axis), inputs)
    }

    /// Gemm → (Transpose) → MatMul → (Add): Y = alpha · A' · B' + beta · C.
    mutating func gemm(_ n: NodeContext) throws {
        let alpha = try n.attributes.float("alpha", default: 1), beta = try n.attributes.float("beta", default: 1)
        let transA = try n.attributes.int("transA", default: 0) != 0
        let transB = try n.attributes.int("transB", default: 0) != 0
        guard n.has(1) else { throw ImportFailure("Gemm needs inputs A and B, got \(n.proto.input.count) input(s)") }
        var a = try tensor(n, 0)
        guard shape(a).count == 2 else { throw ImportFailure("A must be 2-D, got \(shape(a).shapeDescription)") }
        if transA { a = try emit(n, .transpose(perm: [1, 0]), [a], step: "transposeA") }
        var b: ValueID
        if case .folded(let known)? = values[n.proto.input[1]], !known.dependsOnBatch, case .float(let t) = known.small {
            guard t.rank == 2 else { throw ImportFailure("B must be 2-D, got \(t.shape.shapeDescription)") }
            // Fold transpose and alpha into the weight once.
            var weight = t
            if transB {
                let (values, shape) = TensorLayout.transpose(t.scalars, shape: t.shape, perm: [1, 0])
                weight = Tensor(shape: shape, scalars: values)
            }
            if alpha != 1 { weight.scalars = weight.scalars.map { $0 * alpha } }
            b = transB || alpha != 1 ? graph.addConstant(name: "\(n.proto.input[1])/gemm", weight) : try tensor(n, 1)
        } else {
            b = try tensor(n, 1)
            guard shape(b).count == 2 else { throw ImportFailure("B must be 2-D, got \(shape(b).shapeDescription)") }
            if transB { b = try emit(n, .transpose(perm: [1, 0]), [b], step: "transposeB") }
            if alpha != 1 {
                let scale = graph.addConstant(name: "\(n.label)/alpha", Tensor(scalar: alpha))
                b = try emit(n, .binary(.mul), [b, scale], step: "alpha")
            }
        }
        guard n.has(2), beta != 0 else {
            try emit(n, .matMul, [a, b])
            return
        }
        let product = try emit(n, .matMul, [a, b], step: "matmul")
        var c = try tensor(n, 2)
        if beta != 1 {
            if case .folded(let known)? = values[n.proto.input[2]], !known.dependsOnBatch, case .float(let t) = known.small {
                c = graph.addConstant(name: "\(n.proto.input[2])/beta", Tensor(shape: t.shape, scalars: t.scalars.map { $0 * beta }))
            } else {
                let scale = graph.addConstant(name: "\(n.label)/beta", Tensor(scalar: beta))
                c = try emit(n, .binary(.mul), [c, scale], step: "beta")
            }
        }
        try emit(n, .binary(.add), [product, c])
    }

    mutating func matMul(_ n: NodeContext) throws {
        let a = try tensor(n, 0), b = try tensor(n, 1)
        guard shape(a).count >= 2, shape(b).count >= 2 else {
            throw ImportFailure("1-D MatMul operands are not supported (\(shape(a).shapeDescription) × \(shape(b).shapeDescription))")
        }
        try emit(n, .matMul, [a, b])
    }

    mutating func softmax(_ n: NodeContext) throws {
        let x = try tensor(n, 0)
        let xs = shape(x)
        let axis = try Folding.normalizedAxis(try n.attributes.int("axis", default: opset < 13 ? 1 : -1), rank: xs.count)
        if opset >= 13 || axis == xs.count - 1 {
            try emit(n, .softmax(axis: axis), [x])
            return
        }
        // Before opset 13, Softmax flattens to [outer, inner] at `axis` and normalizes the inner part.
        let outer = Array(xs[..<axis]), inner = Array(xs[axis...])
        guard !inner.hasBatchDimension,
              !outer.hasBatchDimension || outer.filter({ $0 != batchDimension }).elementCount == 1 else {
            throw ImportFailure("Softmax (opset \(opset)) at axis \(axis) would merge the batch dimension")
        }
        let flat = try emit(n, .reshape(shape: [outer.hasBatchDimension ? batchDimension : outer.elementCount, inner.elementCount]), [x], step: "flatten")
        let normalized = try emit(n, .softmax(axis: 1), [flat], step: "softmax")
        try emit(n, .reshape(shape: xs), [normalized])
    }

    mutating func pad(_ n: NodeContext) throws {
        let x = try tensor(n, 0)
        let rank = shape(x).count
        let modeName = try n.attributes.string("mode", default: "constant")
        guard let mode = PadAttributes.Mode(rawValue: modeName) else {
            throw ImportFailure("pad mode '\(modeName)' is not supported (constant, reflect, edge are)")
        }
        var pads: [Int], value: Float
        if opset < 11 {
            pads = try n.attributes.ints("pads") ?? []
            value = try n.attributes.float("value", default: 0)
        } else {
            guard let given = try constantInts(n, 1) else { throw ImportFailure("Pad needs a pads input") }
            pads = given
            value = try scalar(n, 2) ?? 0
            if let axes = try constantInts(n, 3) {
                let normalized = try axes.map { try Folding.normalizedAxis($0, rank: rank) }
                guard pads.count == 2 * axes.count else { throw ImportFailure("pads must have 2 entries per axis") }
                var full = [Int](repeating: 0, count: 2 * rank)
                for (i, axis) in normalized.enumerated() {
                    full[axis] = pads[i]
                    full[axis + rank] = pads[i + axes.count]
                }
                pads = full
            }
        }
        guard pads.count == 2 * rank else { throw ImportFailure("pads has \(pads.count) entries; rank \(rank) needs \(2 * rank)") }
        if pads.allSatisfy({ $0 == 0 }) {
            alias(n, to: x)
            return
        }
        try emit(n, .pad(PadAttributes(pads: pads, mode: mode, value: value)), [x])
    }

    mutating func dropout(_ n: NodeContext) throws {
        try requireSingleOutput(n, "mask")
        if let training = try constantFloats(n, 2), training.first ?? 0 != 0 {
            throw ImportFailure("training_mode is true; Kiln runs models for inference")
        }
        alias(n, to: try tensor(n, 0))
    }

    mutating func cast(_ n: NodeContext) throws {
        let to = try n.attributes.int("to")
        guard [1, 10, 11, 16].contains(to) else {
            throw ImportFailure("Cast of a run-time float tensor to data type \(to) is not supported; Kiln computes in float32")
        }
        alias(n, to: try tensor(n, 0))
    }

    /// CastLike with a run-time operand: a float cast to a float (an alias), or a known value cast to the
    /// run-time operand's float type (a constant).
    mutating func castLike(_ n: NodeContext) throws {
        guard n.has(1), case .runtime? = values[n.proto.input[1]] else {
            throw ImportFailure("CastLike of a run-time float tensor to an integer type is not supported; Kiln computes in float32")
        }
        if case .folded(let folded)? = values[n.proto.input[0]] {
            guard !folded.dependsOnBatch else { throw ImportFailure("input 0 depends on the batch size") }
            values[n.proto.output[0]] = .folded(Folded(try Folding.cast(folded.small, to: 1)))
            return
        }
        alias(n, to: try tensor(n, 0))
    }

    /// Expand of a run-time tensor: nothing when the shape does not grow, else an Add of zeros of the expanded shape
    /// (the IR's broadcasting Add; the batch dimension broadcasts from the data).
    mutating func expand(_ n: NodeContext) throws {
        let x = try tensor(n, 0)
        let xs = shape(x)
        guard let target = try staticInts(n, 1) else { throw ImportFailure("Expand needs a shape input") }
        // N in the target stands for the batch; for broadcasting it is 1 (the data carries N).
        let concrete = target.map { $0 ?? 1 }
        guard concrete.allSatisfy({ $0 >= 0 }), let result = TensorLayout.broadcastShape(xs, concrete) else {
            throw ImportFailure("cannot expand \(xs.shapeDescription) to \(target.map { $0.map(String.init) ?? "N" })")
        }
        if result == xs {
            alias(n, to: x)
            return
        }
        let zeros = graph.addConstant(name: "\(n.label)/zeros", Tensor(shape: concrete, repeating: 0))
        try emit(n, .binary(.add), [x, zeros])
    }

    mutating func gather(_ n: NodeContext) throws {
        if case .flattened(let source)? = values[n.proto.input[0]] {
            try gatherWhole(n, source)
            return
        }
        let x = try tensor(n, 0)
        let xs = shape(x)
        let axis = try Folding.normalizedAxis(try n.attributes.int("axis", default: 0), rank: xs.count)
        guard xs[axis] != batchDimension else { throw ImportFailure("cannot gather along the batch dimension") }
        guard let folded = try known(n, 1), case .int(let indices) = folded.small, !folded.dependsOnBatch else {
            throw ImportFailure("indices must be integers known at import")
        }
        let positions = try indices.values.map { Int64(try Folding.normalizedIndex(Int($0), size: xs[axis])) }
        try emit(n, .gather(axis: axis, indices: IntTensor(shape: indices.shape, values: positions)), [x])
    }

    /// PyTorch's exporter writes `as_strided` of a contiguous view (e.g. after adaptive pooling) as a Reshape of the
    /// whole tensor to one dimension and a Gather of its elements in order. In a fixed-batch export that flattens
    /// the batch too; read as what it is — a reshape of the source keeping the batch first — it runs at any batch.
    mutating func gatherWhole(_ n: NodeContext, _ source: ValueID) throws {
        let perSample = Array(shape(source).dropFirst()).elementCount
        guard try n.attributes.int("axis", default: 0) == 0, let exportedBatch,
              let folded = try known(n, 1), case .int(let indices) = folded.small,
              indices.shape.first == exportedBatch, indices.values.count == exportedBatch * perSample,
              indices.values.elementsEqual(0..<Int64(indices.values.count)) else {
            throw ImportFailure("gathers from a tensor flattened with its batch dimension other than all its elements in order")
        }
        try emit(n, .reshape(shape: [batchDimension] + indices.shape.dropFirst()), [source])
    }

    mutating func slice(_ n: NodeContext) throws {
        let x = try tensor(n, 0)
        let xs = shape(x)
        let starts, ends, axes, steps: [Int]?
        if opset < 10 {
            (starts, ends, axes, steps) = (try n.attributes.ints("starts"), try n.attributes.ints("ends"), try n.attributes.ints("axes"), nil)
        } else {
            (starts, ends, axes, steps) = (try constantInts(n, 1), try constantInts(n, 2), try constantInts(n, 3), try constantInts(n, 4))
        }
        guard let starts, let ends else { throw ImportFailure("Slice needs starts and ends") }
        let slice = try Folding.normalizedSlice(shape: xs, starts: starts, ends: ends, axes: axes, steps: steps)
        if slice.counts == xs && slice.steps.allSatisfy({ $0 == 1 }) {
            alias(n, to: x)
            return
        }
        try emit(n, .slice(slice), [x])
    }

    /// The slices of `x` along `axis` of the given sizes (which must add up to the axis length).
    func parts(of x: ValueID, axis: Int, sizes: [Int]) throws -> [SliceAttributes] {
        let xs = shape(x)
        guard sizes.allSatisfy({ $0 >= 0 }), sizes.reduce(0, +) == xs[axis] else {
            throw ImportFailure("split sizes \(sizes) do not add up to dimension \(axis) of \(xs.shapeDescription)")
        }
        var start = 0
        return sizes.map { size in
            var starts = [Int](repeating: 0, count: xs.count), counts = xs
            (starts[axis], counts[axis]) = (start, size)
            start += size
            return SliceAttributes(starts: starts, counts: counts, steps: [Int](repeating: 1, count: xs.count))
        }
    }

    /// A normalized, non-batch axis attribute of `x`.
    func splitAxis(_ n: NodeContext, _ x: ValueID) throws -> Int {
        let rank = shape(x).count
        let raw = try n.attributes.int("axis", default: 0)
        let axis = raw < 0 ? raw + rank : raw
        guard (0..<rank).contains(axis) else { throw ImportFailure("axis \(raw) is out of range for rank \(rank)") }
        guard shape(x)[axis] != batchDimension else { throw ImportFailure("splitting along the batch dimension is not supported") }
        return axis
    }

    mutating func split(_ n: NodeContext) throws {
        let x = try tensor(n, 0)
        let axis = try splitAxis(n, x)
        let length = shape(x)[axis], count = n.proto.output.count
        var sizes = opset < 13 ? (try n.attributes.ints("split")) : try constantInts(n, 1)
        if sizes == nil {
            // Equal parts; from opset 18 the last may be smaller (num_outputs).
            let chunk = (length + count - 1) / count
            sizes = (0..<count).map { min(chunk, max(0, length - $0 * chunk)) }
        }
        guard let sizes, sizes.count == count else { throw ImportFailure("Split has \(count) outputs but \(sizes?.count ?? 0) sizes") }
        for (index, slice) in try parts(of: x, axis: axis, sizes: sizes).enumerated() where !n.proto.output[index].isEmpty {
            try emit(n, .slice(slice), [x], output: index)
        }
    }

    /// Resize (and the older Upsample): nearest neighbours by whole factors, where every output pixel copies the
    /// input pixel it falls in (the coordinate and rounding modes PyTorch and most exporters write), or bilinear to
    /// any size with the half_pixel, pytorch_half_pixel, align_corners or asymmetric coordinates.
    mutating func resize(_ n: NodeContext) throws {
        let x = try tensor(n, 0)
        let xs = shape(x)
        guard xs.count == 4 else { throw ImportFailure("only 4-D (image) inputs are supported, got \(xs.shapeDescription)") }
        let mode = try n.attributes.string("mode", default: "nearest")
        guard mode == "nearest" || mode == "linear" else { throw ImportFailure("mode '\(mode)' is not supported (nearest and linear are)") }
        var scales: [Float]?
        var sizes: [Int]?
        if n.proto.opType == "Upsample" {
            scales = opset < 9 ? (try n.attributes.floats("scales")) : try constantFloats(n, 1)
        } else if opset < 11 {
            scales = try constantFloats(n, 1)
        } else {
            scales = n.has(2) ? try constantFloats(n, 2) : nil
            if scales?.isEmpty ?? true { scales = nil }
            sizes = n.has(3) ? try constantInts(n, 3) : nil
        }
        // Output H and W (ONNX: floor(input · scale)).
        let output: [Int]
        if let scales, scales.count == 4 {
            guard scales[0] == 1, scales[1] == 1, scales[2] > 0, scales[3] > 0 else { throw ImportFailure("scales \(scales) must keep N and C") }
            output = [Int((Float(xs[2]) * scales[2]).rounded(.down)), Int((Float(xs[3]) * scales[3]).rounded(.down))]
            // Coordinates map through the given scale; Kiln's resize maps through output / input, the same only when
            // the scale is exact.
            guard Float(output[0]) / Float(xs[2]) == scales[2], Float(output[1]) / Float(xs[3]) == scales[3] else {
                throw ImportFailure("scales \(scales) do not give whole output sizes from \(xs.shapeDescription); not supported")
            }
        } else if let sizes, sizes.count == 4 {
            guard sizes[1] == xs[1] else { throw ImportFailure("sizes \(sizes) must keep C") }
            output = [sizes[2], sizes[3]]
        } else {
            throw ImportFailure("needs 4 scales or 4 sizes known at import")
        }
        guard output.allSatisfy({ $0 >= 1 }) else { throw ImportFailure("resize to \(output) is empty") }
        if output == [xs[2], xs[3]] {
            alias(n, to: x)
            return
        }
        let modern = n.proto.opType == "Resize" && opset >= 11
        let coordinates = modern ? try n.attributes.string("coordinate_transformation_mode", default: "half_pixel") : "asymmetric"
        if mode == "linear" {
            guard try n.attributes.int("antialias", default: 0) == 0 else { throw ImportFailure("antialiased resize is not supported") }
            guard let mapping = ResizeCoordinates(rawValue: coordinates) else {
                throw ImportFailure("linear resize with coordinate_transformation_mode '\(coordinates)' is not supported")
            }
            try emit(n, .resizeLinear(height: output[0], width: output[1], coordinates: mapping), [x])
            return
        }
        guard output[0] % xs[2] == 0, output[1] % xs[3] == 0 else {
            throw ImportFailure("nearest resize from \(xs[2])×\(xs[3]) to \(output[0])×\(output[1]) is not by whole factors; not supported")
        }
        let factors = [output[0] / xs[2], output[1] / xs[3]]
        if modern {
            let rounding = try n.attributes.string("nearest_mode", default: "round_prefer_floor")
            let replicates: Bool
            switch coordinates {
            case "asymmetric": replicates = rounding == "floor" || rounding == "round_prefer_floor"
            case "half_pixel", "pytorch_half_pixel": replicates = rounding != "ceil"
            default: replicates = false
            }
            guard replicates else {
                throw ImportFailure("nearest resize with coordinate_transformation_mode '\(coordinates)' and nearest_mode '\(rounding)' does not copy whole pixels; not supported")
            }
        }
        try emit(n, .upsampleNearest(scaleH: factors[0], scaleW: factors[1]), [x])
    }

    mutating func splitToSequence(_ n: NodeContext) throws {
        let x = try tensor(n, 0)
        let axis = try splitAxis(n, x)
        let length = shape(x)[axis]
        var sizes: [Int]
        var squeeze = false
        if let split = try constantInts(n, 1) {
            let scalar = try known(n, 1).map { folded -> Bool in
                if case .int(let t) = folded.small { return t.shape.isEmpty }
                return false
            } ?? false
            if scalar {
                guard let chunk = split.first, chunk >= 1 else { throw ImportFailure("the split size must be positive") }
                sizes = stride(from: 0, to: length, by: chunk).map { min(chunk, length - $0) }
            } else {
                sizes = split
            }
        } else {
            sizes = [Int](repeating: 1, count: length)
            squeeze = try n.attributes.int("keepdims", default: 1) == 0
        }
        var elements: [ValueID] = []
        for (index, slice) in try parts(of: x, axis: axis, sizes: sizes).enumerated() {
            var element = try emit(n, .slice(slice), [x], step: "\(index)")
            if squeeze {
                var target = shape(x)
                target.remove(at: axis)
                element = try emit(n, .reshape(shape: target), [element], step: "\(index)/squeeze")
            }
            elements.append(element)
        }
        values[n.proto.output[0]] = .sequence(elements)
    }

    mutating func sequenceAt(_ n: NodeContext) throws {
        guard case .sequence(let elements)? = values[n.proto.input[0]] else {
            throw ImportFailure("input 0 must be a sequence made by SplitToSequence")
        }
        guard let position = try constantInts(n, 1)?.first else { throw ImportFailure("the position must be known at import") }
        let index = position < 0 ? position + elements.count : position
        guard elements.indices.contains(index) else { throw ImportFailure("position \(position) is outside the \(elements.count)-element sequence") }
        alias(n, to: elements[index])
    }

    mutating func squeezeOrUnsqueeze(_ n: NodeContext, unsqueeze: Bool) throws {
        let x = try tensor(n, 0)
        let axes = opset < 13 ? try n.attributes.ints("axes") : try constantInts(n, 1)
        let target = unsqueeze ? try Folding.unsqueezed(shape(x), axes: axes ?? [])
                               : try Folding.squeezed(shape(x), axes: axes)
        try emit(n, .reshape(shape: target), [x])
    }
}
