import CKilnKernels
import FoundationEssentials
@_exported import KilnStudent
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

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
    /// How a model runs.
    public struct Options: Sendable {
        /// Worker threads per context (intra-op parallelism); default: the number of online processors.
        public var threads: Int
        /// Kernel variant; default: the best the CPU supports.
        public var kernels: KernelChoice

        /// Defaults: all cores, best kernels.
        public init(threads: Int = max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))), kernels: KernelChoice = .best) {
            self.threads = max(1, threads)
            self.kernels = kernels
        }
    }

    /// The validated student. With C kernels the weights of the layers they run are kept only in packed form, so
    /// those layers' `weights` arrays here are empty; load with `kernels: .reference` to keep every array.
    public let student: StudentModel
    /// Number of int8 weights.
    public let parameterCount: Int
    /// Multiply-accumulates of one inference of one sample.
    public let macsPerSample: Int
    /// Multiply-accumulates of each layer for one sample.
    public let layerMACs: [Int]
    /// Model inputs.
    public let inputs: [TensorSpec]
    /// Model outputs.
    public let outputs: [TensorSpec]
    /// How it runs.
    public let options: Options
    let compiled: CompiledModel
    /// Idle contexts that `predict(_:)` reuses.
    private let idle = Mutex<[KilnContext]>([])

    /// Loads and validates a `.kiln` file.
    public convenience init(contentsOf url: URL, options: Options = Options()) throws {
        do {
            try self.init(bytes: try KilnFile.readBytes(url.path), options: options)
        } catch let error as KilnFormatError {
            throw KilnFormatError("\(url.path): \(error.message)")
        }
    }

    /// Parses and validates the bytes of a `.kiln` file.
    public convenience init(bytes: [UInt8], options: Options = Options()) throws {
        try self.init(try KilnFile.decode(bytes), options: options)
    }

    /// Wraps a student model after validating it; packs its weights for the chosen kernels.
    public init(_ student: StudentModel, options: Options = Options()) throws {
        try student.validate()
        guard options.kernels.isSupported else {
            throw KilnRuntimeError(message: "this CPU cannot run the \(options.kernels) kernels")
        }
        self.options = options
        parameterCount = student.parameterCount
        layerMACs = student.layerMACs
        macsPerSample = layerMACs.reduce(0, +)
        var slim = student
        compiled = CompiledModel(&slim, kernels: options.kernels)
        self.student = slim
        inputs = student.inputs.map { TensorSpec(name: student.activations[$0].name, shape: student.activations[$0].shape) }
        outputs = student.outputs.map { TensorSpec(name: student.activations[$0].name, shape: student.activations[$0].shape) }
    }

    /// A reusable execution context (its own activation arena) for one thread.
    public func makeContext() -> KilnContext { KilnContext(model: self) }

    /// Runs a single-input, single-output model on a batch; the batch size is `input.count / inputs[0].sampleCount`.
    /// Safe from any number of threads; reuses idle contexts.
    public func predict(_ input: [Float]) throws -> [Float] {
        let context = idle.withLock { $0.popLast() } ?? KilnContext(model: self, retainingModel: false)
        defer { idle.withLock { $0.append(context) } }
        return try context.predict(input)
    }
}

/// Per-thread state for running a `KilnModel`: the activation arena, scratch space and worker threads, planned
/// for the batch size in use, so repeated inference allocates nothing. A context may move between threads but must
/// not be used by two at once.
public final class KilnContext: @unchecked Sendable {
    /// The model this context runs.
    public var model: KilnModel { unownedModel }
    /// Contexts handed to callers keep their model alive; the model's own idle contexts (for `predict`) must not,
    /// or model and pool would keep each other alive forever.
    private unowned let unownedModel: KilnModel
    private let retainedModel: KilnModel?
    private var plan: MemoryPlan?
    /// Per layer: whether its cached indirection buffer (see `MemoryPlan.indirectionOffsets`) is filled for `plan`.
    private var indirectionFilled: [Bool] = []
    private var arena = UnsafeMutableRawPointer.allocate(byteCount: 64, alignment: 64)
    private var arenaSize = 64
    /// Worker threads of this context (nil: single-threaded).
    private let pool: OpaquePointer?

    init(model: KilnModel, retainingModel: Bool = true) {
        unownedModel = model
        retainedModel = retainingModel ? model : nil
        pool = model.options.threads > 1 ? kiln_pool_create(Int32(model.options.threads)) : nil
    }

    deinit {
        arena.deallocate()
        if let pool { kiln_pool_destroy(pool) }
    }

    /// Threads this context computes with.
    var threads: Int { pool.map { Int(kiln_pool_threads($0)) } ?? 1 }

    /// Runs `body(begin, end, worker)` over one chunk of 0..<count per thread of the context.
    func parallelFor(_ count: Int, _ body: (Int, Int, Int) -> Void) {
        guard let pool, count > 1 else {
            if count > 0 { body(0, count, 0) }
            return
        }
        withoutActuallyEscaping(body) { escapable in
            var closure = escapable
            withUnsafeMutablePointer(to: &closure) { pointer in
                kiln_pool_parallel_for(pool, Int32(count), { context, begin, end, worker in
                    context!.assumingMemoryBound(to: ((Int, Int, Int) -> Void).self).pointee(Int(begin), Int(end), Int(worker))
                }, pointer)
            }
        }
    }

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
        try execute(inputs: inputs, outputs: outputs, batch: batch, observe: observe, profile: nil)
    }

    /// Runs the model like `run(inputs:outputs:batch:)` and adds each layer's wall time to `profile`.
    public func run(inputs: [UnsafeBufferPointer<Float>], outputs: [UnsafeMutableBufferPointer<Float>], batch: Int,
                    profile: inout LayerProfile) throws {
        if profile.nanoseconds.count != model.student.layers.count {
            profile = LayerProfile(layers: model.student.layers.count)
        }
        try profile.nanoseconds.withUnsafeMutableBufferPointer { times in
            try execute(inputs: inputs, outputs: outputs, batch: batch, observe: nil, profile: times)
        }
        profile.runs += 1
    }

    private func execute(inputs: [UnsafeBufferPointer<Float>], outputs: [UnsafeMutableBufferPointer<Float>], batch: Int,
                         observe: ((Int, [Float]) -> Void)?, profile: UnsafeMutableBufferPointer<UInt64>?) throws {
        let student = model.student
        guard inputs.count == model.inputs.count, outputs.count == model.outputs.count else {
            throw KilnRuntimeError(message: "the model takes \(model.inputs.count) input(s) and \(model.outputs.count) output(s)")
        }
        guard batch >= 1 else { throw KilnRuntimeError(message: "batch size must be at least 1") }
        guard observe == nil || model.compiled.kernels == .reference else {
            throw KilnRuntimeError(message: "observing every layer needs the reference kernels: load the model with kernels: .reference")
        }
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
        let pointers = (base + plan.tileOffset).assumingMemoryBound(to: UnsafePointer<UInt8>?.self)
        let zeros = (base + plan.zeroOffset).assumingMemoryBound(to: UInt8.self)
        // Diagnostics read every layer's own output, so they run the reference kernels (bit-identical results).
        let compiled = observe == nil ? model.compiled : nil
        var started = profile == nil ? 0 : monotonicNanoseconds()
        for (index, layer) in student.layers.enumerated() {
            defer {
                if let profile {
                    let now = monotonicNanoseconds()
                    profile[index] &+= now &- started
                    started = now
                }
            }
            if let compiled, compiled.skipped.contains(index) { continue }
            if let compiled, let conv = compiled.convs[index] {
                let residual = conv.residual.map { bytes($0.input) }
                let output = bytes(conv.residual?.output ?? layer.output)
                var cached: Indirection?
                if let offset = plan.indirectionOffsets[index] {
                    cached = Indirection(rows: (base + offset).assumingMemoryBound(to: UnsafePointer<UInt8>?.self),
                                         filled: indirectionFilled[index])
                    indirectionFilled[index] = true
                }
                runCompiled(conv, compiled, layer, batch: batch, input: bytes(layer.inputs[0]), output: output,
                            residual: residual, pointers: pointers, maxTaps: compiled.maxTaps, zeros: zeros,
                            im2col: (base + plan.im2colOffset).assumingMemoryBound(to: UInt8.self), cached: cached)
                continue
            }
            let outInfo = student.activations[layer.output]
            let inInfo = layer.inputs.map { student.activations[$0] }
            let outImage = ReferenceKernels.Image(outInfo.shape, batch: batch)
            switch layer.op {
            case .quantize where compiled?.quantize != nil && outInfo.bits == 8:
                let source = floatInputs[layer.inputs[0]]!, destination = bytes(layer.output)
                let sample = outInfo.shape.dropFirst().reduce(1, *)
                let channels = outInfo.shape.count == 4 ? outInfo.shape[1] : 1, plane = sample / channels
                let q = outInfo.quantization
                let quantize = compiled!.quantize!
                for b in 0..<batch {
                    quantize(source + b * sample, Int32(channels), Int32(plane), q.scale, q.zeroPoint,
                                           destination + b * sample)
                }
            case .maxPool(let p) where compiled != nil:
                let image = ReferenceKernels.Image(inInfo[0].shape, batch: batch)
                let (source, destination) = (bytes(layer.inputs[0]), bytes(layer.output))
                parallelFor(batch * outImage.h) { begin, end, _ in
                    for task in begin..<end {
                        let b = task / outImage.h, oy = task % outImage.h
                        kiln_qu8_maxpool(source + b * image.h * image.w * image.c, Int32(image.h), Int32(image.w),
                                         Int32(image.c), Int32(p.kernel[0]), Int32(p.kernel[1]), Int32(p.strides[0]),
                                         Int32(p.strides[1]), Int32(p.pads[0]), Int32(p.pads[1]), Int32(oy),
                                         Int32(outImage.w), destination + (b * outImage.h + oy) * outImage.w * outImage.c)
                    }
                }
            case .quantize:
                let source = floatInputs[layer.inputs[0]]!, destination = bytes(layer.output)
                let sample = outInfo.shape.dropFirst().reduce(1, *)
                for b in 0..<batch {
                    for i in 0..<sample {
                        destination[b * sample + ReferenceKernels.memoryOffset(i, outInfo.shape)] =
                            Requantize.quantize(source[b * sample + i], outInfo.quantization, maxLevel: outInfo.maxLevel)
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
                                             inInfo[0].quantization, bytes(layer.output), outImage, outInfo.quantization,
                                             maxLevel: outInfo.maxLevel)
            case .globalAveragePool where compiled?.gemm != nil:
                // With a following flattening reshape folded in, the pooled values go straight to the reshape's output.
                let target = compiled!.pooledHeads[index] ?? layer.output
                let image = ReferenceKernels.Image(inInfo[0].shape, batch: batch)
                let (source, destination) = (bytes(layer.inputs[0]), bytes(target))
                let (inQ, outQ) = (inInfo[0].quantization, outInfo.quantization)
                for b in 0..<batch {
                    kiln_qu8_global_average_pool(source + b * image.h * image.w * image.c, Int32(image.h * image.w),
                                                 Int32(image.c), inQ.scale, inQ.zeroPoint, outQ.scale, outQ.zeroPoint,
                                                 outInfo.maxLevel, destination + b * image.c)
                }
            case .globalAveragePool:
                ReferenceKernels.globalAveragePool(bytes(layer.inputs[0]), ReferenceKernels.Image(inInfo[0].shape, batch: batch),
                                                   inInfo[0].quantization, bytes(layer.output), outInfo.quantization,
                                                   maxLevel: outInfo.maxLevel)
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

    /// One conv or gemm layer on the C kernels, parallel over output pixels.
    private func runCompiled(_ conv: CompiledConv, _ compiled: CompiledModel, _ layer: Layer, batch: Int,
                             input: UnsafeMutablePointer<UInt8>, output: UnsafeMutablePointer<UInt8>,
                             residual: UnsafeMutablePointer<UInt8>?, pointers: UnsafeMutablePointer<UnsafePointer<UInt8>?>,
                             maxTaps: Int, zeros: UnsafeMutablePointer<UInt8>, im2col: UnsafeMutablePointer<UInt8>,
                             cached: Indirection?) {
        let student = model.student
        let inInfo = student.activations[layer.inputs[0]], outInfo = student.activations[layer.output]
        let m = conv.layer.outputChannels
        var rq = kiln_requant()
        rq.bias = UnsafePointer(conv.bias)
        rq.multiplier = UnsafePointer(conv.multipliers)
        rq.zero_point = outInfo.quantization.zeroPoint
        rq.low = conv.layer.clamp.lowerBound
        rq.high = conv.layer.clamp.upperBound
        rq.ldr = m
        if let fused = conv.residual {
            let other = student.activations[fused.input].quantization, sum = student.activations[fused.output].quantization
            (rq.scale, rq.residual_scale, rq.output_scale) = (outInfo.quantization.scale, other.scale, sum.scale)
            (rq.residual_zero_point, rq.output_zero_point) = (other.zeroPoint, sum.zeroPoint)
            (rq.add_low, rq.add_high) = (fused.clamp.lowerBound, fused.clamp.upperBound)
        }
        let image = ReferenceKernels.Image(inInfo.shape, batch: batch), out = ReferenceKernels.Image(outInfo.shape, batch: batch)
        let weights = UnsafePointer(conv.weights)
        switch conv.kind {
        case .indirect, .im2col:
            let l = conv.layer, taps = conv.taps, tile = MemoryPlan.tileRows
            let pixels = out.h * out.w
            // A gemm's batch rows all belong to one "image" of N pixels.
            let images = layer.op.isGemm ? 1 : batch
            let perImage = layer.op.isGemm ? batch : pixels
            let tilesPerImage = (perImage + tile - 1) / tile
            let zeroRow = UnsafePointer(zeros)
            if conv.kind == .indirect {
                zeros.update(repeating: UInt8(truncatingIfNeeded: inInfo.quantization.zeroPoint), count: conv.kc)
            }
            let gemm = compiled.gemm!
            let (sh, sw, pt, pl, dh, dw) = (l.strides[0], l.strides[1], l.pads[0], l.pads[1], l.dilations[0], l.dilations[1])
            let (kh, kw) = (l.kernel[0], l.kernel[1])
            let zeroPoint = UInt8(truncatingIfNeeded: inInfo.quantization.zeroPoint)
            if let cached, !cached.filled {
                // Input pointers depend only on the arena and the geometry: fill them once for this plan.
                for b in 0..<images {
                    kiln_qu8_conv_indirection(UnsafePointer(input + b * image.h * image.w * image.c), Int32(image.h),
                                              Int32(image.w), Int32(image.c), Int32(kh), Int32(kw), Int32(sh), Int32(sw),
                                              Int32(pt), Int32(pl), Int32(dh), Int32(dw), Int32(out.w), 0, Int32(perImage),
                                              zeroRow, cached.rows + b * perImage * taps)
                }
            }
            parallelFor(images * tilesPerImage) { begin, end, worker in
                let rows = pointers + worker * tile * maxTaps
                let fields = im2col + worker * tile * compiled.maxIm2colBytes
                var local = rq
                for task in begin..<end {
                    let b = task / tilesPerImage, first = (task % tilesPerImage) * tile
                    let count = min(tile, perImage - first)
                    let base = UnsafePointer(input + b * image.h * image.w * image.c)
                    if cached != nil {
                        // Filled above.
                    } else if layer.op.isGemm || conv.isPointwise {
                        for r in 0..<count { rows[r] = base + (first + r) * image.c }
                    } else if conv.kind == .im2col {
                        kiln_qu8_conv_im2col(base, Int32(image.h), Int32(image.w), Int32(image.c), Int32(kh), Int32(kw),
                                             Int32(sh), Int32(sw), Int32(pt), Int32(pl), Int32(dh), Int32(dw),
                                             Int32(out.w), Int32(first), Int32(count), zeroPoint, Int32(conv.kc), fields)
                        for r in 0..<count { rows[r] = UnsafePointer(fields + r * conv.kc) }
                    } else {
                        kiln_qu8_conv_indirection(base, Int32(image.h), Int32(image.w), Int32(image.c), Int32(kh), Int32(kw),
                                                  Int32(sh), Int32(sw), Int32(pt), Int32(pl), Int32(dh), Int32(dw),
                                                  Int32(out.w), Int32(first), Int32(count), zeroRow, rows)
                    }
                    let row0 = b * perImage + first
                    local.residual = residual.map { UnsafePointer($0 + row0 * m) }
                    gemm(Int32(count), Int32(m), Int32(conv.kc), Int32(taps), cached.map { $0.rows + row0 * taps } ?? rows,
                         weights, output + row0 * m, m, &local)
                }
            }
        case .depthwise3x3:
            let dw = compiled.depthwise!, l = conv.layer
            let zero = UInt8(truncatingIfNeeded: inInfo.quantization.zeroPoint)
            parallelFor(batch * out.h) { begin, end, _ in
                var local = rq
                for task in begin..<end {
                    let b = task / out.h, oy = task % out.h
                    let row = (b * out.h + oy) * out.w * m
                    local.residual = residual.map { UnsafePointer($0 + row) }
                    dw(input + b * image.h * image.w * image.c, Int32(image.h), Int32(image.w), Int32(m), Int32(oy),
                       Int32(out.w), Int32(l.strides[0]), Int32(l.pads[0]), Int32(l.pads[1]), zero, weights,
                       output + row, &local)
                }
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
                                same ? q : Requantize.quantize(Requantize.dequantize(q, info.quantization), out.quantization, maxLevel: out.maxLevel)
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
        let plan = MemoryPlan(model.student, batch: batch, compiled: model.compiled, threads: threads)
        indirectionFilled = [Bool](repeating: false, count: model.student.layers.count)
        if plan.size > arenaSize {
            arena.deallocate()
            arenaSize = plan.size
            arena = UnsafeMutableRawPointer.allocate(byteCount: arenaSize, alignment: 64)
        }
        self.plan = plan
        return plan
    }
}

/// A conv layer's input pointers kept in the arena across runs, and whether they are already filled.
struct Indirection {
    var rows: UnsafeMutablePointer<UnsafePointer<UInt8>?>
    var filled: Bool
}

/// Wall time per layer, summed over runs (`KilnContext.run(inputs:outputs:batch:profile:)`).
public struct LayerProfile: Sendable {
    /// Nanoseconds per layer (indexed like `StudentModel.layers`), summed over `runs`.
    public var nanoseconds: [UInt64]
    /// Runs summed.
    public var runs = 0

    /// An empty profile for a model of `layers` layers.
    public init(layers: Int) { nanoseconds = [UInt64](repeating: 0, count: layers) }
}

/// CLOCK_MONOTONIC in nanoseconds.
func monotonicNanoseconds() -> UInt64 {
    var time = timespec()
    clock_gettime(CLOCK_MONOTONIC, &time)
    return UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_nsec)
}

/// Where each uint8 activation lives in one arena for a given batch size: tensors whose lifetimes do not
/// overlap share bytes (greedy by size, first fit).
struct MemoryPlan {
    /// Output pixels per indirect-GEMM tile.
    static let tileRows = 32
    let batch: Int
    var offsets: [Int]
    var scratchOffset = 0
    /// Per-worker tiles of input pointers (tileRows × most taps each), from `tileOffset`.
    var tileOffset = 0
    /// A row of the input zero point, for padding cells.
    var zeroOffset = 0
    /// Per-worker im2col rows (tileRows × the longest im2col row each), from `im2colOffset`.
    var im2colOffset = 0
    /// Per conv layer with cached input pointers: where its batch × pixels × taps pointers start.
    var indirectionOffsets: [Int: Int] = [:]
    /// Most bytes of cached input pointers per context.
    static let indirectionBudget = 1 << 20
    var size = 0

    init(_ student: StudentModel, batch: Int, compiled: CompiledModel, threads: Int) {
        self.batch = batch
        let count = student.activations.count
        offsets = [Int](repeating: 0, count: count)
        var first = [Int](repeating: Int.max, count: count), last = [Int](repeating: -1, count: count)
        for (index, layer) in student.layers.enumerated() {
            first[layer.output] = min(first[layer.output], index)
            last[layer.output] = max(last[layer.output], index)
            for input in layer.inputs { last[input] = max(last[input], index) }
        }
        // A residual add folded into a conv writes its output when the conv runs; so does a pooling layer whose
        // flattening reshape is folded in.
        for (index, conv) in compiled.convs.enumerated() {
            guard let fused = conv?.residual else { continue }
            first[fused.output] = min(first[fused.output], index)
            last[fused.input] = max(last[fused.input], index)
        }
        for (index, output) in compiled.pooledHeads { first[output] = min(first[output], index) }
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
        tileOffset = scratchOffset + align(max(scratch, 1))
        zeroOffset = tileOffset + align(Self.tileRows * max(compiled.maxTaps, 1) * MemoryLayout<UnsafeRawPointer>.size * threads)
        im2colOffset = zeroOffset + align(max(compiled.maxRowBytes, 1))
        size = im2colOffset + align(Self.tileRows * compiled.maxIm2colBytes * threads)
        // Input pointers of convolutions with several taps, kept across runs, narrowest inputs first (where building
        // them costs most relative to the arithmetic), within a budget.
        var budget = Self.indirectionBudget
        let candidates = compiled.convs.indices.filter { index in
            guard let conv = compiled.convs[index], conv.kind == .indirect, conv.taps > 1 else { return false }
            return !student.layers[index].op.isGemm
        }.sorted { compiled.convs[$0]!.kc < compiled.convs[$1]!.kc }
        for index in candidates {
            let pixels = student.activations[student.layers[index].output].shape.dropFirst(2).reduce(1, *)
            let bytes = batch * pixels * compiled.convs[index]!.taps * MemoryLayout<UnsafeRawPointer>.size
            guard bytes <= budget else { continue }
            budget -= bytes
            indirectionOffsets[index] = size
            size += align(bytes)
        }
        // 64 spare bytes: kernels read whole 4-byte groups, up to 3 bytes past a tensor's last row.
        size += 64
    }
}
