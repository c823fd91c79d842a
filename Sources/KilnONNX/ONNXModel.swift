#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import KilnGraph
import SwiftProtobuf

/// A problem with an ONNX file: names the file and, where it applies, the node and what is wrong.
public struct ONNXError: Error, CustomStringConvertible, Equatable {
    /// The file involved.
    public var file: String
    /// What is wrong, naming the node where there is one.
    public var message: String

    /// Creates the error.
    public init(file: String, _ message: String) {
        self.file = file
        self.message = message
    }

    public var description: String { "\(file): \(message)" }
}

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

    let proto: Onnx_ModelProto

    /// Reads and validates an ONNX file.
    public init(contentsOf path: String) throws {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw ONNXError(file: path, "cannot read: \(error.localizedDescription)")
        }
        try self.init(data: data, file: path)
    }

    /// Parses and validates the bytes of an ONNX file; `file` names it in errors.
    public init(data: Data, file: String) throws {
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
    }

    /// Converts the model into the Kiln IR. Throws an `ONNXError` naming the node for anything Kiln cannot read.
    public func importGraph(_ options: ImportOptions = ImportOptions()) throws -> Graph {
        var importer = Importer(model: self, options: options)
        return try importer.run()
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

    /// Default options.
    public init(boundInputs: [String: ImportedTensor] = [:]) {
        self.boundInputs = boundInputs
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
