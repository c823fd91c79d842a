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
    /// Metadata keys in sorted order and their values.
    let metadataKeys: [UnsafeMutablePointer<CChar>]
    let metadataValues: [String: UnsafeMutablePointer<CChar>]
    let classNames: [UnsafeMutablePointer<CChar>]
    let isa: UnsafeMutablePointer<CChar>

    init(_ model: KilnModel) {
        self.model = model
        inputNames = model.inputs.map { strdup($0.name)! }
        outputNames = model.outputs.map { strdup($0.name)! }
        let metadata = model.student.metadata
        metadataKeys = metadata.keys.sorted().map { strdup($0)! }
        metadataValues = metadata.mapValues { strdup($0)! }
        classNames = model.classNames.map { strdup($0)! }
        isa = strdup("\(model.options.kernels)")!
    }

    deinit {
        for string in inputNames + outputNames + metadataKeys + Array(metadataValues.values) + classNames + [isa] {
            free(string)
        }
    }
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

@_cdecl("kiln_run_image")
public func kiln_run_image(_ context: OpaquePointer?, _ pixels: UnsafePointer<UInt8>?, _ width: Int, _ height: Int,
                           _ channels: Int, _ stride: Int, _ outputs: UnsafePointer<UnsafeMutablePointer<Float>?>?,
                           _ error: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    guard let context, let pixels, let outputs else {
        return fail(.invalidArgument, "kiln_run_image: context, pixels and outputs must not be NULL", error)
    }
    guard channels == 1 || channels == 3 else {
        return fail(.invalidArgument, "kiln_run_image: channels must be 1 (gray) or 3 (RGB), got \(channels)", error)
    }
    guard width >= 1, height >= 1, width <= 65536, height <= 65536 else {
        return fail(.invalidArgument, "kiln_run_image: width and height must be 1 to 65536, got \(width) × \(height)", error)
    }
    let row = width * channels, stride = stride == 0 ? row : stride
    guard stride >= row else {
        return fail(.invalidArgument, "kiln_run_image: stride \(stride) is less than width × channels = \(row)", error)
    }
    let handle = Unmanaged<ContextHandle>.fromOpaque(UnsafeRawPointer(context)).takeUnretainedValue()
    let model = handle.owner.model
    var outputBuffers: [UnsafeMutableBufferPointer<Float>] = []
    for (i, spec) in model.outputs.enumerated() {
        guard let pointer = outputs[i] else { return fail(.invalidArgument, "kiln_run_image: output \(i) ('\(spec.name)') is NULL", error) }
        outputBuffers.append(UnsafeMutableBufferPointer(start: pointer, count: spec.sampleCount))
    }
    var bytes = [UInt8](repeating: 0, count: row * height)
    for y in 0..<height { for x in 0..<row { bytes[y * row + x] = pixels[y * stride + x] } }
    do {
        let input = try model.pixelInput()
        let cropped = try input.cropped([PixelImage(width: width, height: height, channels: channels, pixels: bytes)])
        try cropped.withUnsafeBufferPointer { cropped in
            try handle.context.run(croppedPixels: cropped.baseAddress!, outputs: outputBuffers, batch: 1)
        }
        return Status.ok.rawValue
    } catch let thrown {
        return fail(thrown, error)
    }
}

@_cdecl("kiln_model_metadata")
public func kiln_model_metadata(_ model: OpaquePointer?, _ key: UnsafePointer<CChar>?) -> UnsafePointer<CChar>? {
    guard let handle = modelHandle(model), let key else { return nil }
    return handle.metadataValues[String(cString: key)].map { UnsafePointer($0) }
}

@_cdecl("kiln_model_metadata_count")
public func kiln_model_metadata_count(_ model: OpaquePointer?) -> Int { modelHandle(model)?.metadataKeys.count ?? 0 }

@_cdecl("kiln_model_metadata_key")
public func kiln_model_metadata_key(_ model: OpaquePointer?, _ index: Int) -> UnsafePointer<CChar>? {
    guard let keys = modelHandle(model)?.metadataKeys, keys.indices.contains(index) else { return nil }
    return UnsafePointer(keys[index])
}

@_cdecl("kiln_model_input_normalization")
public func kiln_model_input_normalization(_ model: OpaquePointer?, _ mean: UnsafeMutablePointer<Float>?,
                                           _ std: UnsafeMutablePointer<Float>?, _ capacity: Int) -> Int {
    guard let handle = modelHandle(model), let domain = try? InputDomain(metadata: handle.model.student.metadata) else { return 0 }
    let (means, stds) = domain.normalization
    let count = max(means.count, stds.count)
    for i in 0..<min(count, max(0, capacity)) {
        mean?[i] = means.count == 1 ? means[0] : means[i]
        std?[i] = stds.count == 1 ? stds[0] : stds[i]
    }
    return count
}

@_cdecl("kiln_model_image_preprocessing")
public func kiln_model_image_preprocessing(_ model: OpaquePointer?, _ resize: UnsafeMutablePointer<Int32>?,
                                           _ cropHeight: UnsafeMutablePointer<Int32>?, _ cropWidth: UnsafeMutablePointer<Int32>?,
                                           _ channels: UnsafeMutablePointer<Int32>?, _ bgr: UnsafeMutablePointer<Int32>?) -> Int32 {
    guard let handle = modelHandle(model),
          let preprocessing = try? ImagePreprocessing(metadata: handle.model.student.metadata) else { return 0 }
    resize?.pointee = Int32(preprocessing.resize)
    cropHeight?.pointee = Int32(preprocessing.cropHeight)
    cropWidth?.pointee = Int32(preprocessing.cropWidth)
    channels?.pointee = Int32(preprocessing.color.channels)
    bgr?.pointee = preprocessing.color == .bgr ? 1 : 0
    return 1
}

@_cdecl("kiln_model_class_count")
public func kiln_model_class_count(_ model: OpaquePointer?) -> Int { modelHandle(model)?.classNames.count ?? 0 }

@_cdecl("kiln_model_class_name")
public func kiln_model_class_name(_ model: OpaquePointer?, _ index: Int) -> UnsafePointer<CChar>? {
    guard let names = modelHandle(model)?.classNames, names.indices.contains(index) else { return nil }
    return UnsafePointer(names[index])
}

@_cdecl("kiln_model_isa")
public func kiln_model_isa(_ model: OpaquePointer?) -> UnsafePointer<CChar>? {
    modelHandle(model).map { UnsafePointer($0.isa) }
}

@_cdecl("kiln_string_free")
public func kiln_string_free(_ string: UnsafeMutablePointer<CChar>?) { free(string) }
