#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import KilnGraph

/// A failure inside the importer, without file or node; the importer adds both before it reaches the caller.
struct ImportFailure: Error {
    var message: String
    init(_ message: String) { self.message = message }
}

/// Largest tensor the importer accepts (elements); protects against absurd dims in corrupt files.
let maximumElementCount = 1 << 31

extension Onnx_TensorProto {
    /// The tensor's values, checked against its declared shape and type.
    func decode() throws -> ImportedTensor {
        let label = name.isEmpty ? "tensor" : "tensor '\(name)'"
        guard dataLocation != .external else {
            throw ImportFailure("\(label) keeps its data in an external file, which only initializers of a model read from a file may do")
        }
        var count = 1
        for d in dims {
            guard d >= 0, d <= Int64(maximumElementCount) else {
                throw ImportFailure("\(label) has an invalid dimension \(d)")
            }
            let (product, overflow) = count.multipliedReportingOverflow(by: Int(d))
            guard !overflow, product <= maximumElementCount else {
                throw ImportFailure("\(label) declares \(dims) — too many elements")
            }
            count = product
        }
        let shape = dims.map { Int($0) }
        guard let type = DataType(rawValue: Int(dataType)) else {
            throw ImportFailure("\(label) has unknown data type \(dataType)")
        }
        func check(_ have: Int, _ source: String) throws {
            guard have == count else {
                throw ImportFailure("\(label) declares shape \(shape) (\(count) elements) but its \(source) holds \(have)")
            }
        }
        func raw<T>(_ width: Int, _ convert: (UnsafeRawBufferPointer, Int) -> T) throws -> [T] {
            try check(rawData.count / width, "raw_data")
            guard rawData.count % width == 0 else {
                throw ImportFailure("\(label) raw_data of \(rawData.count) bytes is not a multiple of \(width)")
            }
            return rawData.withUnsafeBytes { bytes in (0..<count).map { convert(bytes, $0 * width) } }
        }
        switch type {
        case .float:
            if hasRawData {
                return .float(Tensor(shape: shape, scalars: try raw(4) { b, o in
                    Float(bitPattern: UInt32(littleEndian: b.loadUnaligned(fromByteOffset: o, as: UInt32.self)))
                }))
            }
            try check(floatData.count, "float_data")
            return .float(Tensor(shape: shape, scalars: floatData))
        case .double:
            if hasRawData {
                return .float(Tensor(shape: shape, scalars: try raw(8) { b, o in
                    Float(Double(bitPattern: UInt64(littleEndian: b.loadUnaligned(fromByteOffset: o, as: UInt64.self))))
                }))
            }
            try check(doubleData.count, "double_data")
            return .float(Tensor(shape: shape, scalars: doubleData.map { Float($0) }))
        case .float16, .bfloat16:
            let bits: [UInt16]
            if hasRawData {
                bits = try raw(2) { b, o in UInt16(littleEndian: b.loadUnaligned(fromByteOffset: o, as: UInt16.self)) }
            } else {
                try check(int32Data.count, "int32_data")
                bits = int32Data.map { UInt16(truncatingIfNeeded: $0) }
            }
            let scalars = type == .float16 ? bits.map(halfToFloat) : bits.map { Float(bitPattern: UInt32($0) << 16) }
            return .float(Tensor(shape: shape, scalars: scalars))
        case .int64:
            if hasRawData {
                return .int(IntTensor(shape: shape, values: try raw(8) { b, o in
                    Int64(littleEndian: b.loadUnaligned(fromByteOffset: o, as: Int64.self))
                }))
            }
            try check(int64Data.count, "int64_data")
            return .int(IntTensor(shape: shape, values: int64Data))
        case .int32, .int16, .int8, .uint16, .uint8, .bool:
            if hasRawData {
                let values: [Int64]
                switch type {
                case .int32: values = try raw(4) { b, o in Int64(Int32(littleEndian: b.loadUnaligned(fromByteOffset: o, as: Int32.self))) }
                case .int16: values = try raw(2) { b, o in Int64(Int16(littleEndian: b.loadUnaligned(fromByteOffset: o, as: Int16.self))) }
                case .uint16: values = try raw(2) { b, o in Int64(UInt16(littleEndian: b.loadUnaligned(fromByteOffset: o, as: UInt16.self))) }
                case .int8: values = try raw(1) { b, o in Int64(Int8(bitPattern: b[o])) }
                default: values = try raw(1) { b, o in Int64(b[o]) }
                }
                return .int(IntTensor(shape: shape, values: values))
            }
            try check(int32Data.count, "int32_data")
            return .int(IntTensor(shape: shape, values: int32Data.map { Int64($0) }))
        case .uint32, .uint64:
            if hasRawData {
                let width = type == .uint32 ? 4 : 8
                return .int(IntTensor(shape: shape, values: try raw(width) { b, o in
                    width == 4 ? Int64(UInt32(littleEndian: b.loadUnaligned(fromByteOffset: o, as: UInt32.self)))
                               : Int64(truncatingIfNeeded: UInt64(littleEndian: b.loadUnaligned(fromByteOffset: o, as: UInt64.self)))
                }))
            }
            try check(uint64Data.count, "uint64_data")
            return .int(IntTensor(shape: shape, values: uint64Data.map { Int64(truncatingIfNeeded: $0) }))
        case .undefined, .string, .complex64, .complex128:
            throw ImportFailure("\(label) has data type \(type), which Kiln does not read")
        }
    }
}

/// IEEE 754 half precision to single precision.
func halfToFloat(_ h: UInt16) -> Float {
    let sign = UInt32(h >> 15) << 31
    let exponent = Int((h >> 10) & 0x1F)
    let mantissa = UInt32(h & 0x3FF)
    if exponent == 0 {
        let value = Float(mantissa) * Float(sign == 0 ? 1 : -1) / Float(1 << 24)
        return value
    }
    if exponent == 31 { return Float(bitPattern: sign | 0x7F80_0000 | mantissa << 13) }
    return Float(bitPattern: sign | UInt32(exponent - 15 + 127) << 23 | mantissa << 13)
}

/// Typed access to a node's attributes, with errors that say which attribute is wrong.
struct Attributes {
    private let byName: [String: Onnx_AttributeProto]

    init(_ node: Onnx_NodeProto) {
        byName = Dictionary(node.attribute.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
    }

    func has(_ name: String) -> Bool { byName[name] != nil }

    func int(_ name: String, default value: Int? = nil) throws -> Int {
        guard let attribute = byName[name] else {
            if let value { return value }
            throw ImportFailure("missing attribute '\(name)'")
        }
        guard attribute.type == .int || attribute.hasI else { throw ImportFailure("attribute '\(name)' must be an int") }
        guard let result = Int(exactly: attribute.i) else { throw ImportFailure("attribute '\(name)' is out of range") }
        return result
    }

    func ints(_ name: String) throws -> [Int]? {
        guard let attribute = byName[name] else { return nil }
        guard attribute.type == .ints || attribute.type == .undefined else {
            throw ImportFailure("attribute '\(name)' must be a list of ints")
        }
        return attribute.ints.map { Int(clamping: $0) }
    }

    func float(_ name: String, default value: Float) throws -> Float {
        guard let attribute = byName[name] else { return value }
        guard attribute.type == .float || attribute.hasF else { throw ImportFailure("attribute '\(name)' must be a float") }
        return attribute.f
    }

    func floats(_ name: String) throws -> [Float]? {
        guard let attribute = byName[name] else { return nil }
        guard attribute.type == .floats || attribute.type == .undefined else {
            throw ImportFailure("attribute '\(name)' must be a list of floats")
        }
        return attribute.floats
    }

    func string(_ name: String, default value: String) throws -> String {
        guard let attribute = byName[name] else { return value }
        guard attribute.type == .string || attribute.hasS else { throw ImportFailure("attribute '\(name)' must be a string") }
        return String(decoding: attribute.s, as: UTF8.self)
    }

    func tensor(_ name: String) throws -> ImportedTensor? {
        guard let attribute = byName[name] else { return nil }
        guard attribute.type == .tensor || attribute.hasT else { throw ImportFailure("attribute '\(name)' must be a tensor") }
        return try attribute.t.decode()
    }
}
