import Foundation
import KilnGraph
import KilnStudent

/// NumPy `.npy` files (format versions 1–3, C order, little-endian).
public enum NPY {
    /// Element types Kiln reads.
    public enum DType: String, Sendable {
        case float32 = "<f4", float64 = "<f8", int64 = "<i8", int32 = "<i4", uint8 = "|u1"

        var size: Int {
            switch self {
            case .float32, .int32: return 4
            case .float64, .int64: return 8
            case .uint8: return 1
            }
        }
    }

    /// A parsed `.npy` file: its shape, element type and the raw little-endian payload.
    public struct Array {
        /// Dimensions.
        public var shape: [Int]
        /// Element type.
        public var dtype: DType
        /// Payload bytes, `shape.elementCount * dtype.size` of them.
        public var payload: Data
        /// The note after the header's dictionary (a Python comment, `# …`), if the writer left one.
        public var note: String?

        /// The array as a tensor, when it holds float32 (`file` names it in the error otherwise).
        public func float32Tensor(file: String) throws -> Tensor {
            guard dtype == .float32 else {
                throw DataFileError(file: file, "dtype '\(dtype.rawValue)' is not float32 ('<f4'); save the array with .astype(np.float32)")
            }
            let scalars = payload.withUnsafeBytes { raw in
                (0..<shape.elementCount).map { Float(bitPattern: raw.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self).littleEndian) }
            }
            return Tensor(shape: shape, scalars: scalars)
        }
    }

    /// Reads a float32 array (the ONNX input layout).
    public static func readTensor(_ path: String) throws -> Tensor {
        try read(path).float32Tensor(file: path)
    }

    /// Reads a 1-D array of integer class labels (int64, int32 or uint8).
    public static func readLabels(_ path: String) throws -> [Int] {
        let array = try read(path)
        guard array.shape.count == 1 else {
            throw DataFileError(file: path, "labels must be 1-D, got shape \(array.shape.shapeDescription)")
        }
        return try array.payload.withUnsafeBytes { raw in
            try (0..<array.shape[0]).map { i -> Int in
                switch array.dtype {
                case .int64: return Int(Int64(littleEndian: raw.loadUnaligned(fromByteOffset: i * 8, as: Int64.self)))
                case .int32: return Int(Int32(littleEndian: raw.loadUnaligned(fromByteOffset: i * 4, as: Int32.self)))
                case .uint8: return Int(raw[i])
                case .float32, .float64:
                    throw DataFileError(file: path, "labels must be int64, int32 or uint8, got '\(array.dtype.rawValue)'")
                }
            }
        }
    }

    /// Reads and validates any supported `.npy` file.
    public static func read(_ path: String) throws -> Array {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw DataFileError(file: path, "cannot read: \(error.localizedDescription)")
        }
        return try parse(data, file: path)
    }

    /// Parses the bytes of a `.npy` file; `file` names it in errors.
    public static func parse(_ data: Data, file: String) throws -> Array {
        let bytes = [UInt8](data)
        let magic: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59]
        guard !bytes.isEmpty else { throw DataFileError(file: file, "file is empty") }
        guard bytes.count >= 10, Swift.Array(bytes[0..<6]) == magic else {
            throw DataFileError(file: file, "not a .npy file (bad magic at byte 0)")
        }
        let major = bytes[6]
        let headerLength: Int, headerStart: Int
        switch major {
        case 1:
            headerLength = Int(bytes[8]) | Int(bytes[9]) << 8
            headerStart = 10
        case 2, 3:
            guard bytes.count >= 12 else { throw DataFileError(file: file, "truncated header at byte \(bytes.count)") }
            headerLength = Int(bytes[8]) | Int(bytes[9]) << 8 | Int(bytes[10]) << 16 | Int(bytes[11]) << 24
            headerStart = 12
        default:
            throw DataFileError(file: file, "unsupported .npy format version \(major) at byte 6")
        }
        guard headerStart + headerLength <= bytes.count else {
            throw DataFileError(file: file, "header of \(headerLength) bytes runs past the end of the file (\(bytes.count) bytes)")
        }
        guard let header = String(bytes: bytes[headerStart..<(headerStart + headerLength)], encoding: .utf8) else {
            throw DataFileError(file: file, "header at byte \(headerStart) is not text")
        }
        let fields = try parseHeader(header, file: file, offset: headerStart)
        let payloadStart = headerStart + headerLength
        let (count, overflow) = fields.shape.reduce((1, false)) { acc, d in
            let (p, o) = acc.0.multipliedReportingOverflow(by: d)
            return (p, acc.1 || o)
        }
        let (needed, overflow2) = count.multipliedReportingOverflow(by: fields.dtype.size)
        guard !overflow, !overflow2 else { throw DataFileError(file: file, "shape \(fields.shape) is too large") }
        let available = bytes.count - payloadStart
        guard available == needed else {
            throw DataFileError(file: file, "shape \(fields.shape.shapeDescription) of '\(fields.dtype.rawValue)' needs \(needed) data bytes after byte \(payloadStart), file has \(available)")
        }
        return Array(shape: fields.shape, dtype: fields.dtype, payload: data.subdata(in: (data.startIndex + payloadStart)..<data.endIndex),
                     note: fields.note)
    }

    /// Reads `descr`, `fortran_order` and `shape` from the Python-literal header dictionary, and the note after it.
    private static func parseHeader(_ text: String, file: String, offset: Int) throws -> (dtype: DType, shape: [Int], note: String?) {
        // The dictionary ends at its first closing brace (its values hold none); a note (`# …`) may follow.
        let close = text.firstIndex(of: "}")
        let header = close.map { text[...$0] } ?? Substring(text)
        let note = close.flatMap { text[$0...].firstIndex(of: "#") }
            .map { text[text.index(after: $0)...].trimmingCharacters(in: .whitespacesAndNewlines) }
        func value(of key: String) throws -> Substring {
            guard let keyRange = header.range(of: "'\(key)'") else {
                throw DataFileError(file: file, "header at byte \(offset) has no '\(key)'")
            }
            var rest = header[keyRange.upperBound...].drop { $0 == " " }
            guard rest.first == ":" else { throw DataFileError(file: file, "malformed header at byte \(offset)") }
            rest = rest.dropFirst().drop { $0 == " " }
            return rest
        }
        let descrField = try value(of: "descr")
        guard let quote = descrField.first, quote == "'" || quote == "\"",
              let end = descrField.dropFirst().firstIndex(of: quote) else {
            throw DataFileError(file: file, "malformed 'descr' in header at byte \(offset)")
        }
        let descr = String(descrField[descrField.index(after: descrField.startIndex)..<end])
        let canonical = descr == "<u1" ? "|u1" : descr
        guard let dtype = DType(rawValue: canonical) else {
            throw DataFileError(file: file, "unsupported dtype '\(descr)' (Kiln reads <f4, <f8, <i8, <i4, |u1)")
        }
        let fortran = try value(of: "fortran_order")
        if fortran.hasPrefix("True") {
            throw DataFileError(file: file, "Fortran-order arrays are not supported; save with np.ascontiguousarray")
        }
        guard fortran.hasPrefix("False") else { throw DataFileError(file: file, "malformed 'fortran_order' in header") }
        let shapeField = try value(of: "shape")
        guard shapeField.first == "(", let close = shapeField.firstIndex(of: ")") else {
            throw DataFileError(file: file, "malformed 'shape' in header at byte \(offset)")
        }
        let inner = shapeField[shapeField.index(after: shapeField.startIndex)..<close]
        let parts = inner.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        let shape = try parts.map { part -> Int in
            guard let d = Int(part), d >= 0 else {
                throw DataFileError(file: file, "bad dimension '\(part)' in header shape")
            }
            return d
        }
        return (dtype, shape, note)
    }

    /// The bytes of a float32 `.npy` file holding the tensor, with an optional one-line note after the header's
    /// dictionary (as a Python comment, which NumPy's reader skips).
    public static func encode(_ tensor: Tensor, note: String? = nil) -> Data {
        let shapeText = tensor.shape.count == 1 ? "(\(tensor.shape[0]),)" : "(" + tensor.shape.map(String.init).joined(separator: ", ") + ")"
        var header = "{'descr': '<f4', 'fortran_order': False, 'shape': \(shapeText), }"
        if let note {
            precondition(!note.contains("\n") && !note.contains("\r"), "an .npy note is one line")
            header += " # " + note
        }
        // Pad so that the payload starts on a 64-byte boundary, ending the header with a newline.
        let unpadded = 10 + header.utf8.count + 1
        header += String(repeating: " ", count: (64 - unpadded % 64) % 64) + "\n"
        var data = Data([0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, 1, 0])
        let length = UInt16(header.utf8.count)
        data.append(contentsOf: [UInt8(length & 0xFF), UInt8(length >> 8)])
        data.append(contentsOf: Swift.Array(header.utf8))
        tensor.scalars.withUnsafeBufferPointer { data.append(UnsafeBufferPointer(start: UnsafeRawPointer($0.baseAddress!).assumingMemoryBound(to: UInt8.self), count: $0.count * 4)) }
        return data
    }

    /// Writes a float32 `.npy` file atomically, with an optional one-line note in its header.
    public static func write(_ tensor: Tensor, to path: String, note: String? = nil) throws {
        try AtomicFile.write(encode(tensor, note: note), to: path)
    }
}

