#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import KilnGraph
import KilnStudent
import SwiftProtobuf

/// A problem with an ONNX file: names the file and, where it applies, the node and what is wrong (the one file
/// error type of Kiln, `DataFileError`).
public typealias ONNXError = DataFileError

/// A parsed and validated ONNX model file, before import into the IR.
public struct ONNXModel {
    /// Opset range of the default (ai.onnx) domain that the importer reads (a few ops need a newer opset; see
    /// `Importer.minimumOpset`).
    public static let supportedOpsets = 1...21

    /// ONNX op types (default domain) the importer reads.
    public static var supportedOpTypes: Set<String> {
        Set(Importer.handlers.keys).union(Folding.ops).union(["Shape", "Constant", "ConstantOfShape"])
    }

    /// Path or label used in error messages.
    public let file: String
    /// ONNX IR version of the file.
    public var irVersion: Int { Int(proto.irVersion) }
    /// Version of the default operator set.
    public let opset: Int
    /// Producer name and version, e.g. "pytorch 2.15.0".
    public var producer: String {
        [proto.producerName, proto.producerVersion].filter { !$0.isEmpty }.joined(separator: " ")
    }
    /// Key/value metadata of the model (e.g. `kiln.input_mean`).
    public var metadata: [String: String] {
        Dictionary(proto.metadataProps.map { ($0.key, $0.value) }, uniquingKeysWith: { _, last in last })
    }
    /// Number of nodes per ONNX op type, before import rewrites them.
    public var opHistogram: [String: Int] {
        proto.graph.node.reduce(into: [:]) { $0[$1.qualifiedOpType, default: 0] += 1 }
    }

    var proto: Onnx_ModelProto

    /// Reads and validates an ONNX file, and the external data files its initializers name (as PyTorch's exporter
    /// writes them: `model.onnx.data` next to `model.onnx`).
    public init(contentsOf path: String) throws {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw ONNXError(file: path, "cannot read: \(error.localizedDescription)")
        }
        try self.init(data: data, file: path, directory: URL(fileURLWithPath: path).deletingLastPathComponent().path)
    }

    /// Parses and validates the bytes of an ONNX file; `file` names it in errors. Initializers kept in external
    /// files are read from `directory` (an error without one).
    public init(data: Data, file: String, directory: String? = nil) throws {
        self.file = file
        guard !data.isEmpty else { throw ONNXError(file: file, "file is empty") }
        let proto: Onnx_ModelProto
        do {
            proto = try Onnx_ModelProto(serializedBytes: data)
        } catch {
            throw ONNXError(file: file, "not an ONNX model: the protobuf does not parse (\(error))")
        }
        guard proto.hasGraph, !proto.graph.node.isEmpty || !proto.graph.output.isEmpty else {
            throw ONNXError(file: file, "not an ONNX model: it has no graph (is the file truncated or not ONNX?)")
        }
        guard proto.irVersion >= 3 else {
            throw ONNXError(file: file, "not an ONNX model or too old: IR version \(proto.irVersion) (Kiln reads 3 and newer)")
        }
        let defaultDomain = proto.opsetImport.first { $0.domain.isEmpty || $0.domain == "ai.onnx" }
        guard let version = defaultDomain?.version else {
            throw ONNXError(file: file, "the model imports no ai.onnx opset")
        }
        guard ONNXModel.supportedOpsets.contains(Int(version)) else {
            throw ONNXError(file: file, "opset \(version) is not supported (Kiln reads opsets \(ONNXModel.supportedOpsets.lowerBound)–\(ONNXModel.supportedOpsets.upperBound))")
        }
        self.opset = Int(version)
        self.proto = proto
        if self.proto.graph.initializer.contains(where: { $0.dataLocation == .external }) {
            try loadExternalData(from: directory)
        }
    }

    /// Moves the bytes of every initializer stored in an external file into the tensor, after checking the file
    /// name (relative, inside `directory`), offset and length against the file.
    mutating func loadExternalData(from directory: String?) throws {
        var files: [String: Data] = [:]
        for index in proto.graph.initializer.indices where proto.graph.initializer[index].dataLocation == .external {
            var tensor = proto.graph.initializer[index]
            let label = "external data of initializer '\(tensor.name)'"
            guard let directory else { throw ONNXError(file: file, "\(label): the model was read from memory, so there is no folder to read it from") }
            let entries = Dictionary(tensor.externalData.map { ($0.key, $0.value) }, uniquingKeysWith: { _, last in last })
            guard let location = entries["location"], !location.isEmpty else { throw ONNXError(file: file, "\(label) names no file (location)") }
            guard !location.hasPrefix("/"), !location.split(separator: "/").contains("..") else {
                throw ONNXError(file: file, "\(label): location '\(location)' must be a relative path inside the model's folder")
            }
            func number(_ key: String) throws -> Int? {
                guard let text = entries[key] else { return nil }
                guard let value = Int(text), value >= 0 else { throw ONNXError(file: file, "\(label): \(key) '\(text)' is not a non-negative integer") }
                return value
            }
            let path = directory.isEmpty ? location : "\(directory)/\(location)"
            if files[location] == nil {
                do {
                    files[location] = try Data(contentsOf: URL(fileURLWithPath: path), options: .alwaysMapped)
                } catch {
                    throw ONNXError(file: file, "\(label): cannot read '\(path)' (it must sit next to the model): \(error.localizedDescription)")
                }
            }
            let bytes = files[location]!
            let offset = try number("offset") ?? 0
            let length = try number("length") ?? (bytes.count - min(offset, bytes.count))
            guard offset <= bytes.count, length <= bytes.count - offset else {
                throw ONNXError(file: path, "\(label): bytes \(offset)..<\(offset + length) lie beyond the file's \(bytes.count) bytes")
            }
            tensor.rawData = bytes.subdata(in: (bytes.startIndex + offset)..<(bytes.startIndex + offset + length))
            tensor.externalData = []
            tensor.dataLocation = .default
            proto.graph.initializer[index] = tensor
        }
    }

    /// Converts the model into the Kiln IR. Throws an `ONNXError` naming the node for anything Kiln cannot read.
    public func importGraph(_ options: ImportOptions = ImportOptions()) throws -> Graph {
        var importer = Importer(model: self, options: options)
        do {
            return try importer.run()
        } catch where importer.exportedBatch != nil {
            // Some op ties the graph to the batch size it was exported with: import it as exported.
            var fixed = options
            fixed.generalizeFixedBatch = false
            var asExported = Importer(model: self, options: fixed)
            return try asExported.run()
        }
    }

    /// The names, element types and shapes of the graph inputs that are not initializers.
    public var inputNames: [String] {
        let initialized = Set(proto.graph.initializer.map(\.name))
        return proto.graph.input.map(\.name).filter { !initialized.contains($0) }
    }
}

/// Choices for `ONNXModel.importGraph`.
public struct ImportOptions {
    /// Graph inputs fixed to known values; they become constants and everything computed from them is folded
    /// (e.g. int64 index inputs of a test model).
    public var boundInputs: [String: ImportedTensor] = [:]
    /// Whether a model exported with a fixed batch size (the first dimension of its image inputs, usually 1) is
    /// imported with a batch dimension N, so that it runs, calibrates and synthesizes at any batch size. Reshape
    /// targets that repeat the exported batch size in their first entry keep the batch. The graph records the
    /// exported size in its metadata (`kiln.exported_batch`); whether samples then stay independent is checked by
    /// running the graph (`Interpreter.checkBatchIndependence`).
    public var generalizeFixedBatch = true

    /// Default options.
    public init(boundInputs: [String: ImportedTensor] = [:], generalizeFixedBatch: Bool = true) {
        self.boundInputs = boundInputs
        self.generalizeFixedBatch = generalizeFixedBatch
    }
}

/// A tensor read from ONNX: float data or integer data (int64 and narrower types, bool).
public enum ImportedTensor: Equatable, Sendable {
    case float(Tensor)
    case int(IntTensor)

    /// Dimensions.
    public var shape: [Int] {
        switch self {
        case .float(let t): return t.shape
        case .int(let t): return t.shape
        }
    }
}

/// Serialized `TensorProto` files, as in the ONNX backend test data (`input_0.pb`, `output_0.pb`).
public enum ONNXTensorFile {
    /// Reads one `TensorProto` file; returns its name and value.
    public static func read(_ path: String) throws -> (name: String, value: ImportedTensor) {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw ONNXError(file: path, "cannot read: \(error.localizedDescription)")
        }
        let proto: Onnx_TensorProto
        do {
            proto = try Onnx_TensorProto(serializedBytes: data)
        } catch {
            throw ONNXError(file: path, "not a TensorProto: \(error)")
        }
        do {
            return (proto.name, try proto.decode())
        } catch let failure as ImportFailure {
            throw ONNXError(file: path, failure.message)
        }
    }
}

extension Onnx_NodeProto {
    /// Op type prefixed by its domain unless it is the default one: `Conv`, `com.microsoft.FusedConv`.
    var qualifiedOpType: String {
        domain.isEmpty || domain == "ai.onnx" ? opType : "\(domain).\(opType)"
    }
}
