/// A `.kiln` file or student model that cannot be used, with where and what.
public struct KilnFormatError: Error, CustomStringConvertible, Equatable {
    /// What is wrong, naming the byte offset, section or layer where it applies.
    public var message: String

    /// Creates the error.
    public init(_ message: String) { self.message = message }

    public var description: String { message }
}

extension StudentModel {
    /// Checks every index, shape, type, quantization and parameter size; throws naming the first layer at fault.
    public func validate() throws {
        func fail(_ message: String) -> KilnFormatError { KilnFormatError(message) }
        guard !layers.isEmpty else { throw fail("the model has no layers") }
        for (index, activation) in activations.enumerated() {
            guard !activation.shape.isEmpty, activation.shape[0] == runtimeBatchDimension,
                  activation.shape.dropFirst().allSatisfy({ $0 >= 1 && $0 <= 1 << 24 }) else {
                throw fail("tensor \(index) ('\(activation.name)') has invalid shape \(activation.shape)")
            }
            if activation.type == .uint8 {
                let q = activation.quantization
                guard (2...8).contains(activation.bits) else {
                    throw fail("tensor \(index) ('\(activation.name)') has invalid bit width \(activation.bits)")
                }
                guard q.scale.isFinite, q.scale > 0, (0...activation.maxLevel).contains(q.zeroPoint) else {
                    throw fail("tensor \(index) ('\(activation.name)') has invalid quantization scale \(q.scale), zero point \(q.zeroPoint)")
                }
            }
        }
        var defined = [Bool](repeating: false, count: activations.count)
        for input in inputs {
            guard activations.indices.contains(input), activations[input].type == .float32, !defined[input] else {
                throw fail("model input \(input) is not a distinct float32 tensor")
            }
            defined[input] = true
        }
        for (index, layer) in layers.enumerated() {
            let label = "layer \(index) ('\(layer.name)')"
            for input in layer.inputs {
                guard activations.indices.contains(input), defined[input] else {
                    throw fail("\(label) reads tensor \(input), which is not defined before it")
                }
            }
            guard activations.indices.contains(layer.output), !defined[layer.output] else {
                throw fail("\(label) writes tensor \(layer.output), which is out of range or already defined")
            }
            do {
                let inputs = layer.inputs.map { activations[$0] }
                try checkTypes(layer.op, inputs: inputs.map(\.type), output: activations[layer.output].type)
                let shape = try layer.op.outputShape(inputShapes: inputs.map(\.shape), recorded: activations[layer.output].shape)
                guard shape == activations[layer.output].shape else {
                    throw KilnFormatError("output recorded as \(activations[layer.output].shape) but computed as \(shape)")
                }
                if case .maxPool = layer.op, inputs[0].quantization != activations[layer.output].quantization || inputs[0].bits != activations[layer.output].bits {
                    throw KilnFormatError("max pooling must keep its input's quantization")
                }
                let top = activations[layer.output].maxLevel
                switch layer.op {
                case .conv(let c), .gemm(let c):
                    guard c.clamp.lowerBound >= 0, c.clamp.upperBound <= top else { throw KilnFormatError("clamp \(c.clamp) exceeds the output's \(activations[layer.output].bits)-bit levels") }
                case .add(let clamp):
                    guard clamp.lowerBound >= 0, clamp.upperBound <= top else { throw KilnFormatError("clamp \(clamp) exceeds the output's \(activations[layer.output].bits)-bit levels") }
                case .globalAveragePool:
                    // Its sum is requantized with this multiplier (see ReferenceKernels.globalAveragePool).
                    let multiplier = inputs[0].quantization.scale / (activations[layer.output].quantization.scale * Float(inputs[0].shape[2] * inputs[0].shape[3]))
                    guard multiplier.isFinite, multiplier > 0 else {
                        throw KilnFormatError("input and output scales give the requantization multiplier \(multiplier), which must be positive and finite")
                    }
                case .mul:
                    let multiplier = inputs[0].quantization.scale * inputs[1].quantization.scale / activations[layer.output].quantization.scale
                    guard multiplier.isFinite, multiplier > 0 else {
                        throw KilnFormatError("input and output scales give the requantization multiplier \(multiplier), which must be positive and finite")
                    }
                case .lookup(let l):
                    guard l.table.count == 256 else { throw KilnFormatError("a lookup table has 256 entries, this one \(l.table.count)") }
                    guard let highest = l.table[0...Int(inputs[0].maxLevel)].max(), Int32(highest) <= top else {
                        throw KilnFormatError("lookup table entries exceed the output's \(activations[layer.output].bits)-bit levels")
                    }
                case .reshape, .sliceChannels, .permuteChannels, .upsampleNearest, .insertZeros, .resizeLinear:
                    guard inputs[0].quantization == activations[layer.output].quantization, inputs[0].bits == activations[layer.output].bits else {
                        throw KilnFormatError("a \(layer.op.displayName) layer must keep its input's quantization")
                    }
                default: break
                }
            } catch let error as KilnFormatError {
                throw fail("\(label): \(error.message)")
            }
            defined[layer.output] = true
        }
        for output in outputs {
            guard activations.indices.contains(output), defined[output], activations[output].type == .float32 else {
                throw fail("model output \(output) is not a computed float32 tensor")
            }
        }
        guard !inputs.isEmpty, !outputs.isEmpty else { throw fail("the model needs inputs and outputs") }
    }

    private func checkTypes(_ op: LayerOp, inputs: [ElementType], output: ElementType) throws {
        let expected: ([ElementType], ElementType)
        switch op {
        case .quantize: expected = ([.float32], .uint8)
        case .dequantize: expected = ([.uint8], .float32)
        case .add, .mul: expected = ([.uint8, .uint8], .uint8)
        case .concat: expected = ([ElementType](repeating: .uint8, count: max(inputs.count, 1)), .uint8)
        case .float: expected = ([ElementType](repeating: .float32, count: max(inputs.count, 1)), .float32)
        default: expected = ([.uint8], .uint8)
        }
        guard inputs == expected.0, output == expected.1 else {
            throw KilnFormatError("takes \(expected.0.map { "\($0)" }) → \(expected.1), got \(inputs.map { "\($0)" }) → \(output)")
        }
    }
}

extension LayerOp {
    /// Output shape for inputs of the given logical shapes (batch dimension symbolic or concrete); `recorded` is the
    /// shape the student records for the output (an fp32 reshape or mean takes its result from it).
    public func outputShape(inputShapes s: [[Int]], recorded: [Int]) throws -> [Int] {
        func image(_ shape: [Int]) throws {
            guard shape.count == 4 else { throw KilnFormatError("expects a 4-D input, got \(shape)") }
        }
        func window(_ size: Int, _ k: Int, _ stride: Int, _ begin: Int, _ end: Int, _ dilation: Int, ceil: Bool) throws -> Int {
            guard k >= 1, stride >= 1, dilation >= 1, begin >= 0, end >= 0, begin < 1 << 16, end < 1 << 16,
                  k < 1 << 16, stride < 1 << 16, dilation < 1 << 16 else {
                throw KilnFormatError("invalid window (kernel \(k), stride \(stride), pads \(begin)/\(end), dilation \(dilation))")
            }
            let span = dilation * (k - 1) + 1, padded = size + begin + end
            guard padded >= span else { throw KilnFormatError("window \(span) larger than input \(size) with padding") }
            var out = (padded - span) / stride + 1
            if ceil && (padded - span) % stride != 0 {
                out += 1
                if (out - 1) * stride >= size + begin { out -= 1 }
            }
            return out
        }
        switch self {
        case .quantize, .dequantize:
            guard s.count == 1 else { throw KilnFormatError("takes one input") }
            return s[0]
        case .conv(let c):
            guard s.count == 1 else { throw KilnFormatError("takes one input") }
            try image(s[0])
            try c.check(inputChannels: s[0][1])
            let h = try window(s[0][2], c.kernel[0], c.strides[0], c.pads[0], c.pads[2], c.dilations[0], ceil: false)
            let w = try window(s[0][3], c.kernel[1], c.strides[1], c.pads[1], c.pads[3], c.dilations[1], ceil: false)
            return [s[0][0], c.outputChannels, h, w]
        case .gemm(let c):
            guard s.count == 1, s[0].count == 2 else { throw KilnFormatError("takes one [N, K] input") }
            guard c.kernel == [1, 1], c.group == 1 else { throw KilnFormatError("a gemm has a 1×1 kernel and one group") }
            try c.check(inputChannels: s[0][1])
            return [s[0][0], c.outputChannels]
        case .add(let clamp):
            guard s.count == 2, s[0] == s[1] else { throw KilnFormatError("adds two tensors of one shape, got \(s)") }
            try checkClamp(clamp)
            return s[0]
        case .maxPool(let p), .averagePool(let p):
            guard s.count == 1 else { throw KilnFormatError("takes one input") }
            try image(s[0])
            guard p.kernel.count == 2, p.strides.count == 2, p.pads.count == 4 else { throw KilnFormatError("bad window") }
            let h = try window(s[0][2], p.kernel[0], p.strides[0], p.pads[0], p.pads[2], 1, ceil: p.ceilMode)
            let w = try window(s[0][3], p.kernel[1], p.strides[1], p.pads[1], p.pads[3], 1, ceil: p.ceilMode)
            return [s[0][0], s[0][1], h, w]
        case .globalAveragePool:
            guard s.count == 1 else { throw KilnFormatError("takes one input") }
            try image(s[0])
            return [s[0][0], s[0][1], 1, 1]
        case .concat(let axis):
            return try concatenatedShape(s, axis: axis)
        case .reshape(let shape):
            guard s.count == 1, shape.first == runtimeBatchDimension || shape.first == s[0].first,
                  shape.dropFirst().allSatisfy({ $0 >= 1 }),
                  shape.dropFirst().reduce(1, *) == s[0].dropFirst().reduce(1, *) else {
                throw KilnFormatError("cannot reshape \(s.first ?? []) to \(shape)")
            }
            return [s[0][0]] + shape.dropFirst()
        case .lookup:
            guard s.count == 1 else { throw KilnFormatError("takes one input") }
            return s[0]
        case .sliceChannels(let start, let count):
            guard s.count == 1, s[0].count == 4 || s[0].count == 2 else { throw KilnFormatError("takes one 4-D or 2-D input") }
            guard start >= 0, count >= 1, start <= s[0][1], count <= s[0][1] - start else {
                throw KilnFormatError("channels \(start) ..< \(start + count) are outside the input's \(s[0][1])")
            }
            var shape = s[0]
            shape[1] = count
            return shape
        case .upsampleNearest(let sh, let sw):
            guard s.count == 1 else { throw KilnFormatError("takes one input") }
            try image(s[0])
            guard (1...64).contains(sh), (1...64).contains(sw), s[0][2] * sh <= 1 << 16, s[0][3] * sw <= 1 << 16 else {
                throw KilnFormatError("upsampling factors \(sh)×\(sw) out of range")
            }
            return [s[0][0], s[0][1], s[0][2] * sh, s[0][3] * sw]
        case .resizeLinear(let r):
            guard s.count == 1 else { throw KilnFormatError("takes one input") }
            try image(s[0])
            for (taps, size) in [(r.rows, s[0][2]), (r.columns, s[0][3])] {
                guard !taps.isEmpty, taps.allSatisfy({ (0..<size).contains($0.first) && (0..<size).contains($0.second)
                                                       && $0.fraction >= 0 && $0.fraction <= 1 }) else {
                    throw KilnFormatError("resize taps outside the input's \(size) cells or with weights outside 0...1")
                }
            }
            return [s[0][0], s[0][1], r.rows.count, r.columns.count]
        case .insertZeros(let sh, let sw):
            guard s.count == 1 else { throw KilnFormatError("takes one input") }
            try image(s[0])
            guard (1...64).contains(sh), (1...64).contains(sw), s[0][2] * sh <= 1 << 16, s[0][3] * sw <= 1 << 16 else {
                throw KilnFormatError("strides \(sh)×\(sw) out of range")
            }
            return [s[0][0], s[0][1], (s[0][2] - 1) * sh + 1, (s[0][3] - 1) * sw + 1]
        case .permuteChannels(let permutation):
            guard s.count == 1, s[0].count == 4 || s[0].count == 2 else { throw KilnFormatError("takes one 4-D or 2-D input") }
            guard permutation.count == s[0][1], Set(permutation) == Set(0..<s[0][1]) else {
                throw KilnFormatError("is not a permutation of the input's \(s[0][1]) channels")
            }
            return s[0]
        case .mul:
            guard s.count == 2, s[0] == s[1] || (s[0].count == 4 && s[1] == [s[0][0], s[0][1], 1, 1]) else {
                throw KilnFormatError("multiplies a tensor by one of the same shape or [N, C, 1, 1], got \(s)")
            }
            return s[0]
        case .channelNorm(let n):
            guard s.count == 1, s[0].count == 4 || s[0].count == 2 else { throw KilnFormatError("takes one 4-D or 2-D input") }
            guard n.scale.count == s[0][1], n.shift.count == s[0][1] else {
                throw KilnFormatError("needs one scale and shift per channel (\(s[0][1])), has \(n.scale.count) and \(n.shift.count)")
            }
            guard n.epsilon.isFinite, n.epsilon >= 0, (n.scale + n.shift).allSatisfy(\.isFinite) else {
                throw KilnFormatError("epsilon, scales and shifts must be finite (epsilon ≥ 0)")
            }
            return s[0]
        case .float(let f):
            return try f.outputShape(inputShapes: s, recorded: recorded)
        }
    }

    private func checkClamp(_ clamp: ClosedRange<Int32>) throws {
        guard clamp.lowerBound >= 0, clamp.upperBound <= 255 else { throw KilnFormatError("clamp \(clamp) outside 0...255") }
    }
}

extension ConvLayer {
    /// Checks attribute ranges and parameter sizes against the input channel count.
    func check(inputChannels: Int) throws {
        guard kernel.count == 2, strides.count == 2, pads.count == 4, dilations.count == 2 else {
            throw KilnFormatError("conv attributes have the wrong number of entries")
        }
        guard group >= 1, outputChannels >= 1, inputChannels % group == 0, outputChannels % group == 0 else {
            throw KilnFormatError("\(inputChannels) input and \(outputChannels) output channels do not split into \(group) groups")
        }
        guard kernel.allSatisfy({ $0 >= 1 && $0 <= 64 }) else { throw KilnFormatError("kernel \(kernel) out of range") }
        let perChannel = kernel[0] * kernel[1] * (inputChannels / group)
        guard weights.count == outputChannels * perChannel else {
            throw KilnFormatError("has \(weights.count) weights, expected \(outputChannels * perChannel)")
        }
        guard bias.count == outputChannels, multipliers.count == outputChannels, weightScales.count == outputChannels else {
            throw KilnFormatError("needs one bias, multiplier and weight scale per output channel")
        }
        guard multipliers.allSatisfy({ $0.isFinite && $0 > 0 }), weightScales.allSatisfy({ $0.isFinite && $0 > 0 }) else {
            throw KilnFormatError("multipliers and weight scales must be positive and finite")
        }
        guard clamp.lowerBound >= 0, clamp.upperBound <= 255 else { throw KilnFormatError("clamp \(clamp) outside 0...255") }
    }
}
