// The C API of KilnRuntime (include/kiln.h), exported with @_cdecl. Handles are retained Swift objects passed
// as opaque pointers; errors become strdup'ed messages the caller frees with kiln_string_free. Nothing here may
// trap on bad input from C: every pointer and index is checked first.
import FoundationEssentials
import KilnRuntime
#if canImport(Glibc)
import Glibc
#endif

/// A loaded model and the C strings and shapes handed out for it (alive as long as the model).
final class ModelHandle {
    let model: KilnModel
    let inputNames: [UnsafeMutablePointer<CChar>]
    let outputNames: [UnsafeMutablePointer<CChar>]

    init(_ model: KilnModel) {
        self.model = model
        inputNames = model.inputs.map { strdup($0.name)! }
        outputNames = model.outputs.map { strdup($0.name)! }
    }

    deinit { for name in inputNames + outputNames { free(name) } }
}

/// A context and the model it belongs to (kept alive with it).
final class ContextHandle {
    let owner: ModelHandle
    let context: KilnContext

    init(_ owner: ModelHandle) {
        self.owner = owner
        context = owner.model.makeContext()
    }
}

/// kiln_status values of kiln.h.
enum Status: Int32 {
    case ok = 0, invalidArgument = 1, format = 2, runtime = 3
}

/// Stores `message` in `*error` when the caller asked for it; returns `status`.
func fail(_ status: Status, _ message: String, _ error: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    error?.pointee = strdup(message)
    return status.rawValue
}

/// Maps a thrown error to a status and message.
func fail(_ thrown: Error, _ error: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    switch thrown {
    case let e as KilnFormatError: return fail(.format, e.message, error)
    case let e as KilnRuntimeError: return fail(.runtime, e.message, error)
    default: return fail(.runtime, "\(thrown)", error)
    }
}

func modelHandle(_ pointer: OpaquePointer?) -> ModelHandle? {
    pointer.map { Unmanaged<ModelHandle>.fromOpaque(UnsafeRawPointer($0)).takeUnretainedValue() }
}

/// Model options for `threads` (0: one per core), with the kernels `KILN_ISA` forces if it is set.
func options(threads: Int32) throws -> KilnModel.Options {
    let kernels = try KernelChoice.requested(getenv("KILN_ISA").map { String(cString: $0) })
    return threads > 0 ? KilnModel.Options(threads: Int(threads), kernels: kernels) : KilnModel.Options(kernels: kernels)
}

func publish(_ model: KilnModel, _ out: UnsafeMutablePointer<OpaquePointer?>) -> Int32 {
    out.pointee = OpaquePointer(Unmanaged.passRetained(ModelHandle(model)).toOpaque())
    return Status.ok.rawValue
}

private let versionString: StaticString = "kiln 0.6"

@_cdecl("kiln_version")
public func kiln_version() -> UnsafePointer<CChar> {
    UnsafeRawPointer(versionString.utf8Start).assumingMemoryBound(to: CChar.self)
}

@_cdecl("kiln_model_open_file")
public func kiln_model_open_file(_ path: UnsafePointer<CChar>?, _ threads: Int32, _ model: UnsafeMutablePointer<OpaquePointer?>?,
                                 _ error: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    guard let path, let model else { return fail(.invalidArgument, "kiln_model_open_file: path and model must not be NULL", error) }
    model.pointee = nil
    do {
        return publish(try KilnModel(contentsOf: URL(fileURLWithPath: String(cString: path)), options: try options(threads: threads)), model)
    } catch let thrown {
        return fail(thrown, error)
    }
}

@_cdecl("kiln_model_open_memory")
public func kiln_model_open_memory(_ data: UnsafeRawPointer?, _ size: Int, _ threads: Int32, _ model: UnsafeMutablePointer<OpaquePointer?>?,
                                   _ error: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    guard let model, data != nil || size == 0 else {
        return fail(.invalidArgument, "kiln_model_open_memory: data and model must not be NULL", error)
    }
    model.pointee = nil
    let bytes = data.map { [UInt8](UnsafeRawBufferPointer(start: $0, count: size)) } ?? []
    do {
        return publish(try KilnModel(bytes: bytes, options: try options(threads: threads)), model)
    } catch let thrown as KilnFormatError {
        return fail(.format, "memory buffer: \(thrown.message)", error)
    } catch let thrown {
        return fail(thrown, error)
    }
}

@_cdecl("kiln_model_free")
public func kiln_model_free(_ model: OpaquePointer?) {
    guard let model else { return }
    Unmanaged<ModelHandle>.fromOpaque(UnsafeRawPointer(model)).release()
}

@_cdecl("kiln_model_input_count")
public func kiln_model_input_count(_ model: OpaquePointer?) -> Int { modelHandle(model)?.model.inputs.count ?? 0 }

@_cdecl("kiln_model_output_count")
public func kiln_model_output_count(_ model: OpaquePointer?) -> Int { modelHandle(model)?.model.outputs.count ?? 0 }

@_cdecl("kiln_model_input_name")
public func kiln_model_input_name(_ model: OpaquePointer?, _ index: Int) -> UnsafePointer<CChar>? {
    guard let names = modelHandle(model)?.inputNames, names.indices.contains(index) else { return nil }
    return UnsafePointer(names[index])
}

@_cdecl("kiln_model_output_name")
public func kiln_model_output_name(_ model: OpaquePointer?, _ index: Int) -> UnsafePointer<CChar>? {
    guard let names = modelHandle(model)?.outputNames, names.indices.contains(index) else { return nil }
    return UnsafePointer(names[index])
}

/// Writes up to `capacity` dimensions of `spec` (batch as −1) and returns the rank.
func writeShape(_ spec: TensorSpec?, _ dims: UnsafeMutablePointer<Int64>?, _ capacity: Int) -> Int {
    guard let spec else { return 0 }
    if let dims {
        for (i, d) in spec.shape.enumerated().prefix(max(0, capacity)) { dims[i] = i == 0 ? -1 : Int64(d) }
    }
    return spec.shape.count
}

func spec(_ specs: [TensorSpec]?, _ index: Int) -> TensorSpec? {
    guard let specs, specs.indices.contains(index) else { return nil }
    return specs[index]
}

@_cdecl("kiln_model_input_shape")
public func kiln_model_input_shape(_ model: OpaquePointer?, _ index: Int, _ dims: UnsafeMutablePointer<Int64>?, _ capacity: Int) -> Int {
    writeShape(spec(modelHandle(model)?.model.inputs, index), dims, capacity)
}

@_cdecl("kiln_model_output_shape")
public func kiln_model_output_shape(_ model: OpaquePointer?, _ index: Int, _ dims: UnsafeMutablePointer<Int64>?, _ capacity: Int) -> Int {
    writeShape(spec(modelHandle(model)?.model.outputs, index), dims, capacity)
}

@_cdecl("kiln_model_input_sample_size")
public func kiln_model_input_sample_size(_ model: OpaquePointer?, _ index: Int) -> Int {
    spec(modelHandle(model)?.model.inputs, index)?.sampleCount ?? 0
}

@_cdecl("kiln_model_output_sample_size")
public func kiln_model_output_sample_size(_ model: OpaquePointer?, _ index: Int) -> Int {
    spec(modelHandle(model)?.model.outputs, index)?.sampleCount ?? 0
}

@_cdecl("kiln_context_create")
public func kiln_context_create(_ model: OpaquePointer?, _ context: UnsafeMutablePointer<OpaquePointer?>?,
                                _ error: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    guard let owner = modelHandle(model), let context else {
        return fail(.invalidArgument, "kiln_context_create: model and context must not be NULL", error)
    }
    context.pointee = OpaquePointer(Unmanaged.passRetained(ContextHandle(owner)).toOpaque())
    return Status.ok.rawValue
}

@_cdecl("kiln_context_free")
public func kiln_context_free(_ context: OpaquePointer?) {
    guard let context else { return }
    Unmanaged<ContextHandle>.fromOpaque(UnsafeRawPointer(context)).release()
}

@_cdecl("kiln_run")
public func kiln_run(_ context: OpaquePointer?, _ inputs: UnsafePointer<UnsafePointer<Float>?>?,
                     _ outputs: UnsafePointer<UnsafeMutablePointer<Float>?>?, _ batch: Int,
                     _ error: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    guard let context, let inputs, let outputs else {
        return fail(.invalidArgument, "kiln_run: context, inputs and outputs must not be NULL", error)
    }
    guard batch >= 1 else { return fail(.invalidArgument, "kiln_run: batch must be at least 1", error) }
    let handle = Unmanaged<ContextHandle>.fromOpaque(UnsafeRawPointer(context)).takeUnretainedValue()
    let model = handle.owner.model
    var inputBuffers: [UnsafeBufferPointer<Float>] = []
    for (i, spec) in model.inputs.enumerated() {
        guard let pointer = inputs[i] else { return fail(.invalidArgument, "kiln_run: input \(i) ('\(spec.name)') is NULL", error) }
        inputBuffers.append(UnsafeBufferPointer(start: pointer, count: batch * spec.sampleCount))
    }
    var outputBuffers: [UnsafeMutableBufferPointer<Float>] = []
    for (i, spec) in model.outputs.enumerated() {
        guard let pointer = outputs[i] else { return fail(.invalidArgument, "kiln_run: output \(i) ('\(spec.name)') is NULL", error) }
        outputBuffers.append(UnsafeMutableBufferPointer(start: pointer, count: batch * spec.sampleCount))
    }
    do {
        try handle.context.run(inputs: inputBuffers, outputs: outputBuffers, batch: batch)
        return Status.ok.rawValue
    } catch let thrown {
        return fail(thrown, error)
    }
}

@_cdecl("kiln_string_free")
public func kiln_string_free(_ string: UnsafeMutablePointer<CChar>?) { free(string) }
