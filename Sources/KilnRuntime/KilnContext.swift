import CKilnKernels
import FoundationEssentials
import KilnStudent
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Per-thread state for running a `KilnModel`: the activation arena, scratch space and worker threads, planned
/// for the batch size in use, so repeated inference allocates nothing. A context may move between threads but must
/// not be used by two at once.
public final class KilnContext: @unchecked Sendable {
    /// The model this context runs.
    public var model: KilnModel { unownedModel }
    /// Contexts handed to callers keep their model alive; the model's own idle contexts (for `predict`) must not,
    /// or model and pool would keep each other alive forever.
    unowned let unownedModel: KilnModel
    let retainedModel: KilnModel?
    var plan: MemoryPlan?
    /// Per layer: whether its cached indirection buffer (see `MemoryPlan.indirectionOffsets`) is filled for `plan`.
    var indirectionFilled: [Bool] = []
    var arena = UnsafeMutableRawPointer.allocate(byteCount: 64, alignment: 64)
    var arenaSize = 64
    /// Worker threads of this context (nil: single-threaded).
    let pool: OpaquePointer?

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
        guard model.outputs.count == 1 else {
            throw KilnRuntimeError(message: "predict(_:) needs one output; use predictOutputs(_:) or run(inputs:outputs:batch:)")
        }
        return try predictJoined(input).values
    }

    /// Runs a single-input model (a detector or segmenter may have several outputs); returns every output for the
    /// whole batch, in the model's output order.
    public func predictOutputs(_ input: [Float]) throws -> [[Float]] {
        let (values, batch) = try predictJoined(input)
        return splitOutputs(values, batch: batch)
    }

    /// Every output of a single-input model, one after another in one array (the whole result when there is one).
    func predictJoined(_ input: [Float]) throws -> (values: [Float], batch: Int) {
        guard model.inputs.count == 1 else {
            throw KilnRuntimeError(message: "predict needs one input; use run(inputs:outputs:batch:)")
        }
        let batch = try batchSize(of: input.count, model.inputs[0])
        let values = try withJoinedOutputs(batch: batch) { outputs in
            try input.withUnsafeBufferPointer { x in try run(inputs: [x], outputs: outputs, batch: batch) }
        }
        return (values, batch)
    }

    /// Every output for `batch` samples in one array, filled by `body` through one buffer per output.
    func withJoinedOutputs(batch: Int, _ body: ([UnsafeMutableBufferPointer<Float>]) throws -> Void) rethrows -> [Float] {
        var values = [Float](repeating: 0, count: model.outputs.reduce(0) { $0 + batch * $1.sampleCount })
        try values.withUnsafeMutableBufferPointer { all in
            var start = 0
            let buffers = model.outputs.map { spec -> UnsafeMutableBufferPointer<Float> in
                defer { start += batch * spec.sampleCount }
                return UnsafeMutableBufferPointer(rebasing: all[start..<(start + batch * spec.sampleCount)])
            }
            try body(buffers)
        }
        return values
    }

    /// One array of every output for `batch` samples, split into the model's outputs.
    func splitOutputs(_ values: [Float], batch: Int) -> [[Float]] {
        var start = 0
        return model.outputs.map { spec in
            defer { start += batch * spec.sampleCount }
            return Array(values[start..<(start + batch * spec.sampleCount)])
        }
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

    func batchSize(of count: Int, _ spec: TensorSpec) throws -> Int {
        guard spec.sampleCount > 0, count > 0, count % spec.sampleCount == 0 else {
            throw KilnRuntimeError(message: "input '\(spec.name)' takes a multiple of \(spec.sampleCount) values (shape \(spec.shape)), got \(count)")
        }
        return count / spec.sampleCount
    }

    /// Plans (or reuses) the arena for a batch size.
    func prepare(batch: Int) -> MemoryPlan {
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
