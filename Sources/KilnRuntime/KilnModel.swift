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
    /// The pixel input, or why the model has none.
    let pixelInputResult: Result<PixelInput, KilnRuntimeError>
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
        pixelInputResult = Result { try PixelInput(student) }.mapError { $0 as? KilnRuntimeError ?? KilnRuntimeError(message: "\($0)") }
    }

    /// A reusable execution context (its own activation arena) for one thread.
    public func makeContext() -> KilnContext { KilnContext(model: self) }

    /// Runs a single-input, single-output model on a batch; the batch size is `input.count / inputs[0].sampleCount`.
    /// Safe from any number of threads; reuses idle contexts.
    public func predict(_ input: [Float]) throws -> [Float] {
        try withIdleContext { try $0.predict(input) }
    }

    /// Runs a single-input model on a batch with a pooled context; returns every output, in the model's order.
    public func predictOutputs(_ input: [Float]) throws -> [[Float]] {
        try withIdleContext { try $0.predictOutputs(input) }
    }

    /// Calls `body` with an idle context (a new one when all are busy) and returns it to the pool afterwards.
    func withIdleContext<T>(_ body: (KilnContext) throws -> T) rethrows -> T {
        let context = idle.withLock { $0.popLast() } ?? KilnContext(model: self, retainingModel: false)
        defer { idle.withLock { $0.append(context) } }
        return try body(context)
    }
}
