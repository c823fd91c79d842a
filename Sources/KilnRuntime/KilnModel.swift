import FoundationEssentials

/// A problem with the inputs given to a student at run time.
public struct KilnRuntimeError: Error, CustomStringConvertible, Equatable {
    /// What is wrong.
    public var message: String
    /// Creates the error.
    public init(message: String) { self.message = message }
    public var description: String { message }
}

/// Name and logical shape of a model input or output; the first dimension (`runtimeBatchDimension`) is the batch.
public struct TensorSpec: Hashable, Sendable {
    /// Tensor name.
    public var name: String
    /// Logical (NCHW) shape.
    public var shape: [Int]
    /// Elements of one sample (the product of the dimensions after the first).
    public var sampleCount: Int { shape.dropFirst().reduce(1, *) }
}

/// An int8 student loaded from a `.kiln` file, validated before first use.
///
/// ```swift
/// let model = try KilnModel(contentsOf: URL(fileURLWithPath: "student.kiln"))
/// let logits = try model.predict(pixels)          // any batch size N: pixels.count == N × input sample size
/// let context = model.makeContext()               // per thread: no allocation after the first inference
/// ```
/// A model is immutable and may be used from several threads at once; a `KilnContext` belongs to one thread.
public final class KilnModel: Sendable {
    /// The validated student.
    public let student: StudentModel
    /// Model inputs.
    public let inputs: [TensorSpec]
    /// Model outputs.
    public let outputs: [TensorSpec]

    /// Loads and validates a `.kiln` file.
    public convenience init(contentsOf url: URL) throws {
        let data: Data
        do {
            data = try Data(contentsOf: url)
        } catch {
            throw KilnFormatError("\(url.path): cannot read: \(error)")
        }
        do {
            try self.init(bytes: [UInt8](data))
        } catch let error as KilnFormatError {
            throw KilnFormatError("\(url.path): \(error.message)")
        }
    }

    /// Parses and validates the bytes of a `.kiln` file.
    public convenience init(bytes: [UInt8]) throws {
        try self.init(try KilnFile.decode(bytes))
    }

    /// Wraps a student model after validating it.
    public init(_ student: StudentModel) throws {
        try student.validate()
        self.student = student
        inputs = student.inputs.map { TensorSpec(name: student.activations[$0].name, shape: student.activations[$0].shape) }
        outputs = student.outputs.map { TensorSpec(name: student.activations[$0].name, shape: student.activations[$0].shape) }
    }

    /// A reusable execution context (its own activation arena) for one thread.
    public func makeContext() -> KilnContext { KilnContext(model: self) }

    /// Runs a single-input, single-output model on a batch; the batch size is `input.count / inputs[0].sampleCount`.
    public func predict(_ input: [Float]) throws -> [Float] {
        try makeContext().predict(input)
    }
}

/// Per-thread state for running a `KilnModel`: the activation arena and scratch space, planned for the largest
/// batch seen so far, so repeated inference allocates nothing.
public final class KilnContext {
    /// The model this context runs.
    public let model: KilnModel
    private var plan: MemoryPlan?
    private var arena = UnsafeMutableRawPointer.allocate(byteCount: 64, alignment: 64)
    private var arenaSize = 64

    init(model: KilnModel) {
        self.model = model
    }

    deinit { arena.deallocate() }

    /// Runs a single-input, single-output model; returns the output for the whole batch.
    public func predict(_ input: [Float]) throws -> [Float] {
        guard model.inputs.count == 1, model.outputs.count == 1 else {
            throw KilnRuntimeError(message: "predict(_:) needs one input and one output; use run(inputs:outputs:batch:)")
        }
        let batch = try batchSize(of: input.count, model.inputs[0])
        var output = [Float](repeating: 0, count: batch * model.outputs[0].sampleCount)
        try input.withUnsafeBufferPointer { x in
            try output.withUnsafeMutableBufferPointer { y in
                try run(inputs: [x], outputs: [y], batch: batch)
            }
        }
        return output
    }

    /// Runs the model on caller-owned buffers (one per input and output, `batch` samples each) without
    /// allocating once the arena fits this batch size. `observe`, if given, sees each layer's output dequantized
    /// to logical NCHW order (slow; for diagnostics).
    public func run(inputs: [UnsafeBufferPointer<Float>], outputs: [UnsafeMutableBufferPointer<Float>], batch: Int,
                    observe: ((Int, [Float]) -> Void)? = nil) throws {
        let student = model.student
        guard inputs.count == model.inputs.count, outputs.count == model.outputs.count else {
            throw KilnRuntimeError(message: "the model takes \(model.inputs.count) input(s) and \(model.outputs.count) output(s)")
        }
        guard batch >= 1 else { throw KilnRuntimeError(message: "batch size must be at least 1") }
        for (buffer, spec) in zip(inputs, model.inputs) where buffer.count != batch * spec.sampleCount {
            throw KilnRuntimeError(message: "input '\(spec.name)' needs \(batch) × \(spec.sampleCount) values, got \(buffer.count)")
        }
        for (buffer, spec) in zip(outputs, model.outputs) where buffer.count != batch * spec.sampleCount {
            throw KilnRuntimeError(message: "output '\(spec.name)' needs room for \(batch) × \(spec.sampleCount) values, got \(buffer.count)")
        }
        let plan = prepare(batch: batch)
        var floatInputs: [Int: UnsafePointer<Float>] = [:]
        for (index, buffer) in zip(student.inputs, inputs) { floatInputs[index] = buffer.baseAddress! }
        var floatOutputs: [Int: UnsafeMutablePointer<Float>] = [:]
        for (index, buffer) in zip(student.outputs, outputs) { floatOutputs[index] = buffer.baseAddress! }
        let base = arena
        func bytes(_ activation: Int) -> UnsafeMutablePointer<UInt8> {
            (base + plan.offsets[activation]).assumingMemoryBound(to: UInt8.self)
        }
        let scratch = (base + plan.scratchOffset).assumingMemoryBound(to: UInt8.self)
        for (index, layer) in student.layers.enumerated() {
            let outInfo = student.activations[layer.output]
            let inInfo = layer.inputs.map { student.activations[$0] }
            let outImage = ReferenceKernels.Image(outInfo.shape, batch: batch)
            switch layer.op {
            case .quantize:
                let source = floatInputs[layer.inputs[0]]!, destination = bytes(layer.output)
                let sample = outInfo.shape.dropFirst().reduce(1, *)
                for b in 0..<batch {
                    for i in 0..<sample {
                        destination[b * sample + ReferenceKernels.memoryOffset(i, outInfo.shape)] =
                            Requantize.quantize(source[b * sample + i], outInfo.quantization)
                    }
                }
            case .dequantize:
                let source = bytes(layer.inputs[0]), destination = floatOutputs[layer.output]!
                let sample = outInfo.shape.dropFirst().reduce(1, *)
                for b in 0..<batch {
                    for i in 0..<sample {
                        destination[b * sample + i] = Requantize.dequantize(
                            source[b * sample + ReferenceKernels.memoryOffset(i, inInfo[0].shape)], inInfo[0].quantization)
                    }
                }
            case .conv(let c), .gemm(let c):
                ReferenceKernels.conv(c, bytes(layer.inputs[0]), ReferenceKernels.Image(inInfo[0].shape, batch: batch),
                                      inInfo[0].quantization, bytes(layer.output), outImage, outInfo.quantization,
                                      scratch: scratch)
            case .add(let clamp):
                ReferenceKernels.add(bytes(layer.inputs[0]), inInfo[0].quantization, bytes(layer.inputs[1]),
                                     inInfo[1].quantization, bytes(layer.output), outInfo.quantization,
                                     count: batch * outInfo.shape.dropFirst().reduce(1, *), clamp: clamp)
            case .maxPool(let p):
                ReferenceKernels.maxPool(p, bytes(layer.inputs[0]), ReferenceKernels.Image(inInfo[0].shape, batch: batch),
                                         bytes(layer.output), outImage)
            case .averagePool(let p):
                ReferenceKernels.averagePool(p, bytes(layer.inputs[0]), ReferenceKernels.Image(inInfo[0].shape, batch: batch),
                                             inInfo[0].quantization, bytes(layer.output), outImage, outInfo.quantization)
            case .globalAveragePool:
                ReferenceKernels.globalAveragePool(bytes(layer.inputs[0]), ReferenceKernels.Image(inInfo[0].shape, batch: batch),
                                                   inInfo[0].quantization, bytes(layer.output), outInfo.quantization)
            case .concat(let axis):
                concat(layer, axis: axis, batch: batch, bytes)
            case .reshape:
                let source = bytes(layer.inputs[0]), destination = bytes(layer.output)
                let sample = outInfo.shape.dropFirst().reduce(1, *)
                for b in 0..<batch {
                    for i in 0..<sample {
                        destination[b * sample + ReferenceKernels.memoryOffset(i, outInfo.shape)] =
                            source[b * sample + ReferenceKernels.memoryOffset(i, inInfo[0].shape)]
                    }
                }
            }
            if let observe, outInfo.type == .uint8 {
                let sample = outInfo.shape.dropFirst().reduce(1, *)
                let source = bytes(layer.output)
                var values = [Float](repeating: 0, count: batch * sample)
                for b in 0..<batch {
                    for i in 0..<sample {
                        values[b * sample + i] = Requantize.dequantize(
                            source[b * sample + ReferenceKernels.memoryOffset(i, outInfo.shape)], outInfo.quantization)
                    }
                }
                observe(index, values)
            }
        }
    }

    /// Requantized concatenation along a logical axis, done in logical order.
    private func concat(_ layer: Layer, axis: Int, batch: Int, _ bytes: (Int) -> UnsafeMutablePointer<UInt8>) {
        let student = model.student
        let out = student.activations[layer.output]
        let destination = bytes(layer.output)
        let outSample = out.shape.dropFirst().reduce(1, *)
        let inner = out.shape[(axis + 1)...].reduce(1, *)
        let outer = out.shape[1..<axis].reduce(1, *)
        var start = 0
        for input in layer.inputs {
            let info = student.activations[input]
            let source = bytes(input)
            let size = info.shape[axis]
            let sample = info.shape.dropFirst().reduce(1, *)
            let same = info.quantization == out.quantization
            for b in 0..<batch {
                for o in 0..<outer {
                    for a in 0..<size {
                        for i in 0..<inner {
                            let logicalIn = (o * size + a) * inner + i
                            let logicalOut = (o * out.shape[axis] + start + a) * inner + i
                            let q = source[b * sample + ReferenceKernels.memoryOffset(logicalIn, info.shape)]
                            destination[b * outSample + ReferenceKernels.memoryOffset(logicalOut, out.shape)] =
                                same ? q : Requantize.quantize(Requantize.dequantize(q, info.quantization), out.quantization)
                        }
                    }
                }
            }
            start += size
        }
    }

    private func batchSize(of count: Int, _ spec: TensorSpec) throws -> Int {
        guard spec.sampleCount > 0, count > 0, count % spec.sampleCount == 0 else {
            throw KilnRuntimeError(message: "input '\(spec.name)' takes a multiple of \(spec.sampleCount) values (shape \(spec.shape)), got \(count)")
        }
        return count / spec.sampleCount
    }

    /// Plans (or reuses) the arena for a batch size.
    private func prepare(batch: Int) -> MemoryPlan {
        if let plan, plan.batch == batch { return plan }
        let plan = MemoryPlan(model.student, batch: batch)
        if plan.size > arenaSize {
            arena.deallocate()
            arenaSize = plan.size
            arena = UnsafeMutableRawPointer.allocate(byteCount: arenaSize, alignment: 64)
        }
        self.plan = plan
        return plan
    }
}

/// Where each uint8 activation lives in one arena for a given batch size: tensors whose lifetimes do not
/// overlap share bytes (greedy by size, first fit).
struct MemoryPlan {
    let batch: Int
    var offsets: [Int]
    var scratchOffset = 0
    var size = 0

    init(_ student: StudentModel, batch: Int) {
        self.batch = batch
        let count = student.activations.count
        offsets = [Int](repeating: 0, count: count)
        var first = [Int](repeating: Int.max, count: count), last = [Int](repeating: -1, count: count)
        for (index, layer) in student.layers.enumerated() {
            first[layer.output] = min(first[layer.output], index)
            last[layer.output] = max(last[layer.output], index)
            for input in layer.inputs { last[input] = max(last[input], index) }
        }
        func align(_ x: Int) -> Int { (x + 63) / 64 * 64 }
        let sizes = student.activations.map { $0.type == .uint8 ? align(batch * $0.shape.dropFirst().reduce(1, *)) : 0 }
        var placed: [(offset: Int, size: Int, first: Int, last: Int)] = []
        for index in (0..<count).sorted(by: { sizes[$0] > sizes[$1] }) where sizes[index] > 0 {
            var offset = 0
            let overlapping = placed.filter { $0.first <= last[index] && first[index] <= $0.last }
                .sorted { $0.offset < $1.offset }
            for other in overlapping where offset + sizes[index] > other.offset && offset < other.offset + other.size {
                offset = other.offset + other.size
            }
            // A later block may now overlap; rescan until the slot is free.
            var moved = true
            while moved {
                moved = false
                for other in overlapping where offset + sizes[index] > other.offset && offset < other.offset + other.size {
                    offset = other.offset + other.size
                    moved = true
                }
            }
            offsets[index] = offset
            placed.append((offset, sizes[index], first[index], last[index]))
            size = max(size, offset + sizes[index])
        }
        scratchOffset = align(size)
        let scratch = student.layers.map { layer -> Int in
            switch layer.op {
            case .conv(let c), .gemm(let c):
                return c.kernel[0] * c.kernel[1] * student.activations[layer.inputs[0]].shape[1] / c.group
            default: return 0
            }
        }.max() ?? 0
        size = scratchOffset + align(max(scratch, 1))
    }
}
