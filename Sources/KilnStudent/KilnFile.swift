/// The `.kiln` file format, version 1: little-endian, 64-byte header, section table, 64-byte aligned sections,
/// CRC32 per section.
///
/// ```
/// 0   magic "KILNMDL\0"            8   format version (u32)   12  header size = 64 (u32)
/// 16  section count (u32)          20  section table offset = 64 (u32)
/// 24  file size (u64)              32  reserved (24 bytes, zero)
/// 56  CRC32 of bytes 0..<56        60  CRC32 of the section table
/// 64  section table: per section kind (u32), flags (u32), offset (u64), size (u64), CRC32 (u32), reserved (u32)
/// ```
/// Sections: 1 = model (tensors with their quantization, layers, parameter references), 2 = parameters (every
/// tensor 64-byte aligned), 3 = metadata (key/value strings).
public enum KilnFile {
    /// File magic.
    public static let magic: [UInt8] = Array("KILNMDL".utf8) + [0]
    /// Format version written and read.
    public static let version: UInt32 = 1
    static let headerSize = 64
    static let sectionEntrySize = 32
    static let alignment = 64

    enum SectionKind: UInt32 {
        case model = 1, parameters = 2, metadata = 3
    }

    /// The bytes of a `.kiln` file holding `model`.
    public static func encode(_ model: StudentModel) throws -> [UInt8] {
        try model.validate()
        var parameters = ByteWriter()
        var body = ByteWriter()
        body.u32(UInt32(model.activations.count))
        for activation in model.activations {
            body.string(activation.name)
            body.u8(activation.type.rawValue)
            body.u8(UInt8(activation.bits))
            body.u32(UInt32(activation.shape.count))
            for d in activation.shape { body.i64(Int64(d)) }
            body.f32(activation.quantization.scale)
            body.i32(activation.quantization.zeroPoint)
        }
        body.u32(UInt32(model.inputs.count))
        for i in model.inputs { body.u32(UInt32(i)) }
        body.u32(UInt32(model.outputs.count))
        for i in model.outputs { body.u32(UInt32(i)) }
        body.u32(UInt32(model.layers.count))
        for layer in model.layers {
            body.string(layer.name)
            body.u32(UInt32(layer.inputs.count))
            for i in layer.inputs { body.u32(UInt32(i)) }
            body.u32(UInt32(layer.output))
            encode(layer.op, into: &body, parameters: &parameters)
        }
        var metadata = ByteWriter()
        metadata.u32(UInt32(model.metadata.count))
        for (key, value) in model.metadata.sorted(by: { $0.key < $1.key }) {
            metadata.string(key)
            metadata.string(value)
        }
        let sections: [(SectionKind, [UInt8])] = [(.model, body.bytes), (.parameters, parameters.bytes), (.metadata, metadata.bytes)]
        var offset = align(headerSize + sections.count * sectionEntrySize)
        var table = ByteWriter()
        var placed: [(Int, [UInt8])] = []
        for (kind, bytes) in sections {
            table.u32(kind.rawValue)
            table.u32(0)
            table.u64(UInt64(offset))
            table.u64(UInt64(bytes.count))
            table.u32(crc32(bytes))
            table.u32(0)
            placed.append((offset, bytes))
            offset = align(offset + bytes.count)
        }
        let fileSize = placed.last.map { $0.0 + $0.1.count } ?? offset
        var header = ByteWriter()
        header.raw(magic)
        header.u32(version)
        header.u32(UInt32(headerSize))
        header.u32(UInt32(sections.count))
        header.u32(UInt32(headerSize))
        header.u64(UInt64(fileSize))
        header.raw([UInt8](repeating: 0, count: 24))
        header.u32(crc32(header.bytes))
        header.u32(crc32(table.bytes))
        var file = header.bytes + table.bytes
        for (start, bytes) in placed {
            file += [UInt8](repeating: 0, count: start - file.count)
            file += bytes
        }
        return file
    }

    private static func encode(_ op: LayerOp, into w: inout ByteWriter, parameters: inout ByteWriter) {
        func conv(_ c: ConvLayer) {
            w.u32(UInt32(c.outputChannels))
            for v in c.kernel + c.strides + c.pads + c.dilations { w.u32(UInt32(v)) }
            w.u32(UInt32(c.group))
            w.i32(c.clamp.lowerBound)
            w.i32(c.clamp.upperBound)
            w.reference(parameters.aligned(c.weights.map { UInt8(bitPattern: $0) }), count: c.weights.count)
            w.reference(parameters.aligned(c.bias.flatMap { littleEndianBytes(UInt32(bitPattern: $0)) }), count: c.bias.count)
            w.reference(parameters.aligned(c.multipliers.flatMap { littleEndianBytes($0.bitPattern) }), count: c.multipliers.count)
            w.reference(parameters.aligned(c.weightScales.flatMap { littleEndianBytes($0.bitPattern) }), count: c.weightScales.count)
        }
        func window(_ p: PoolWindow) {
            for v in p.kernel + p.strides + p.pads { w.u32(UInt32(v)) }
            w.u8(p.ceilMode ? 1 : 0)
            w.u8(p.countIncludePad ? 1 : 0)
        }
        switch op {
        case .quantize: w.u8(1)
        case .dequantize: w.u8(2)
        case .conv(let c): w.u8(3); conv(c)
        case .gemm(let c): w.u8(4); conv(c)
        case .add(let clamp): w.u8(5); w.i32(clamp.lowerBound); w.i32(clamp.upperBound)
        case .maxPool(let p): w.u8(6); window(p)
        case .averagePool(let p): w.u8(7); window(p)
        case .globalAveragePool: w.u8(8)
        case .concat(let axis): w.u8(9); w.u32(UInt32(axis))
        case .reshape(let shape):
            w.u8(10)
            w.u32(UInt32(shape.count))
            for d in shape { w.i64(Int64(d)) }
        case .lookup(let l):
            w.u8(11)
            w.string(l.function)
            w.reference(parameters.aligned(l.table), count: l.table.count)
        case .mul: w.u8(12)
        case .sliceChannels(let start, let count):
            w.u8(13)
            w.u32(UInt32(start))
            w.u32(UInt32(count))
        case .resizeLinear(let r):
            w.u8(17)
            w.string(r.coordinates)
            for taps in [r.rows, r.columns] {
                w.u32(UInt32(taps.count))
                for tap in taps {
                    w.u32(UInt32(tap.first))
                    w.u32(UInt32(tap.second))
                    w.f32(tap.fraction)
                }
            }
        case .insertZeros(let sh, let sw):
            w.u8(16)
            w.u32(UInt32(sh))
            w.u32(UInt32(sw))
        case .upsampleNearest(let sh, let sw):
            w.u8(15)
            w.u32(UInt32(sh))
            w.u32(UInt32(sw))
        case .permuteChannels(let permutation):
            w.u8(14)
            w.reference(parameters.aligned(permutation.flatMap { littleEndianBytes(UInt32($0)) }), count: permutation.count)
        case .channelNorm(let n):
            w.u8(19)
            w.f32(n.epsilon)
            w.reference(parameters.aligned(n.scale.flatMap { littleEndianBytes($0.bitPattern) }), count: n.scale.count)
            w.reference(parameters.aligned(n.shift.flatMap { littleEndianBytes($0.bitPattern) }), count: n.shift.count)
        case .float(let f):
            w.u8(18)
            encode(f, into: &w, parameters: &parameters)
        }
    }

    private static func encode(_ op: FloatOp, into w: inout ByteWriter, parameters: inout ByteWriter) {
        func ints(_ values: [Int]) {
            w.u32(UInt32(values.count))
            for v in values { w.i64(Int64(v)) }
        }
        func constant(_ c: FloatConstant?) {
            w.u8(c == nil ? 0 : 1)
            guard let c else { return }
            ints(c.shape)
            w.reference(parameters.aligned(c.values.flatMap { littleEndianBytes($0.bitPattern) }), count: c.values.count)
        }
        switch op {
        case .unary(let f):
            w.u8(1)
            let (tag, values) = f.encoded
            w.u8(tag)
            w.u32(UInt32(values.count))
            for v in values { w.f32(v) }
        case .arithmetic(let a, let c, let constantFirst):
            w.u8(2)
            w.u8(a.rawValue)
            w.u8(constantFirst ? 1 : 0)
            constant(c)
        case .reduceMean(let axes): w.u8(3); ints(axes)
        case .transpose(let permutation): w.u8(4); ints(permutation)
        case .reshape: w.u8(5)
        case .matMul(let c): w.u8(6); constant(c)
        case .softmax(let axis): w.u8(7); ints([axis])
        case .concat(let axis): w.u8(8); ints([axis])
        case .slice(let starts, let counts, let steps): w.u8(9); ints(starts); ints(counts); ints(steps)
        case .pad(let pads, let mode, let value): w.u8(10); ints(pads); w.u8(mode); w.f32(value)
        case .gather(let axis, let indices, let shape):
            w.u8(11)
            ints([axis])
            ints(shape)
            w.reference(parameters.aligned(indices.flatMap { littleEndianBytes(UInt32($0)) }), count: indices.count)
        }
    }

    private static func decodeFloatOp(_ r: inout ByteReader, _ params: ParameterSource) throws -> FloatOp {
        func ints() throws -> [Int] {
            try (0..<r.count(limit: 64, "list length")).map { _ in
                let at = r.position
                let v = Int64(bitPattern: try r.u64())
                guard abs(v) <= 1 << 24 else { throw KilnFormatError("\(r.what), byte \(at): value \(v) out of range") }
                return Int(v)
            }
        }
        func floats() throws -> [Float] {
            try params.read(&r, size: 4) { Float(bitPattern: UInt32(littleEndianFrom: $0, at: $0.startIndex)) }
        }
        func constant() throws -> FloatConstant? {
            let present = try r.u8()
            guard present != 0 else { return nil }
            let shape = try ints()
            return FloatConstant(shape: shape, values: try floats())
        }
        let tag = try r.u8()
        switch tag {
        case 1:
            let function = try r.u8()
            let values = try (0..<r.count(limit: 4, "function parameters")).map { _ in try r.f32() }
            guard let f = FloatFunction(tag: function, parameters: values) else {
                throw r.error("unknown fp32 function \(function) with \(values.count) parameter(s)")
            }
            return .unary(f)
        case 2:
            let at = r.position
            guard let a = FloatArithmetic(rawValue: try r.u8()) else { throw KilnFormatError("\(r.what), byte \(at): unknown fp32 arithmetic") }
            let constantFirst = try r.u8() != 0
            return .arithmetic(a, constant: try constant(), constantFirst: constantFirst)
        case 3: return .reduceMean(axes: try ints())
        case 4: return .transpose(try ints())
        case 5: return .reshape
        case 6: return .matMul(constant: try constant())
        case 7, 8:
            let axis = try ints()
            guard axis.count == 1 else { throw r.error("expected one axis") }
            return tag == 7 ? .softmax(axis: axis[0]) : .concat(axis: axis[0])
        case 9: return .slice(starts: try ints(), counts: try ints(), steps: try ints())
        case 10: return .pad(pads: try ints(), mode: try r.u8(), value: try r.f32())
        case 11:
            let axis = try ints(), shape = try ints()
            guard axis.count == 1 else { throw r.error("expected one axis") }
            return .gather(axis: axis[0], indices: try params.read(&r, size: 4) { Int(UInt32(littleEndianFrom: $0, at: $0.startIndex)) },
                           indicesShape: shape)
        default: throw r.error("unknown fp32 op \(tag)")
        }
    }

    /// Parses and fully validates the bytes of a `.kiln` file; errors name the byte offset or section at fault.
    public static func decode(_ bytes: [UInt8]) throws -> StudentModel {
        guard bytes.count >= headerSize else {
            throw KilnFormatError("file is \(bytes.count) bytes, shorter than the \(headerSize)-byte header")
        }
        var header = ByteReader(bytes[0..<headerSize], base: 0, what: "header")
        guard Array(try header.raw(8)) == magic else { throw KilnFormatError("not a .kiln file (bad magic at byte 0)") }
        let version = try header.u32()
        guard version == KilnFile.version else {
            throw KilnFormatError("format version \(version) at byte 8 is not supported (this runtime reads version \(KilnFile.version))")
        }
        let headerCRC = UInt32(littleEndianFrom: bytes, at: 56), tableCRC = UInt32(littleEndianFrom: bytes, at: 60)
        guard crc32(bytes[0..<56]) == headerCRC else { throw KilnFormatError("header checksum mismatch (bytes 0–55 are corrupt)") }
        guard try header.u32() == UInt32(headerSize) else { throw KilnFormatError("unexpected header size at byte 12") }
        let sectionCount = Int(try header.u32())
        let tableOffset = Int(try header.u32())
        let fileSize = try header.u64()
        guard fileSize == UInt64(bytes.count) else {
            throw KilnFormatError("header says the file has \(fileSize) bytes but it has \(bytes.count) (truncated or padded)")
        }
        guard (1...16).contains(sectionCount), tableOffset == headerSize,
              tableOffset + sectionCount * sectionEntrySize <= bytes.count else {
            throw KilnFormatError("invalid section table (\(sectionCount) sections at byte \(tableOffset))")
        }
        let tableEnd = tableOffset + sectionCount * sectionEntrySize
        guard crc32(bytes[tableOffset..<tableEnd]) == tableCRC else {
            throw KilnFormatError("section table checksum mismatch (bytes \(tableOffset)–\(tableEnd - 1) are corrupt)")
        }
        var table = ByteReader(bytes[tableOffset..<tableEnd], base: tableOffset, what: "section table")
        var sections: [SectionKind: ArraySlice<UInt8>] = [:]
        var sectionOffsets: [SectionKind: Int] = [:]
        for index in 0..<sectionCount {
            let rawKind = try table.u32()
            _ = try table.u32()
            let offset = try table.u64(), size = try table.u64()
            let crc = try table.u32()
            _ = try table.u32()
            guard let kind = SectionKind(rawValue: rawKind) else { throw KilnFormatError("section \(index) has unknown kind \(rawKind)") }
            guard sections[kind] == nil else { throw KilnFormatError("section \(index) repeats kind \(rawKind)") }
            guard offset % UInt64(alignment) == 0, offset >= UInt64(tableEnd), size <= UInt64(bytes.count),
                  offset <= UInt64(bytes.count) - size else {
                throw KilnFormatError("section \(index) (kind \(rawKind)) at byte \(offset) with \(size) bytes lies outside the file or is misaligned")
            }
            let slice = bytes[Int(offset)..<Int(offset + size)]
            guard crc32(slice) == crc else {
                throw KilnFormatError("section \(index) (kind \(rawKind), bytes \(offset)–\(offset + size)) checksum mismatch: the data is corrupt")
            }
            sections[kind] = slice
            sectionOffsets[kind] = Int(offset)
        }
        guard let body = sections[.model], let parameters = sections[.parameters] else {
            throw KilnFormatError("the model or parameter section is missing")
        }
        var reader = ByteReader(body, base: sectionOffsets[.model]!, what: "model section")
        let params = ParameterSource(bytes: parameters, fileOffset: sectionOffsets[.parameters]!)
        let activationCount = try reader.count(limit: 1 << 20, "tensor count")
        var activations: [ActivationInfo] = []
        for _ in 0..<activationCount {
            let name = try reader.string()
            let rawType = try reader.u8()
            guard let type = ElementType(rawValue: rawType) else { throw reader.error("unknown element type \(rawType)") }
            let bits = Int(try reader.u8())
            let rank = try reader.count(limit: 8, "rank")
            let shape = try (0..<rank).map { _ in try reader.dimension() }
            let scale = try reader.f32(), zeroPoint = try reader.i32()
            activations.append(ActivationInfo(name: name, shape: shape, type: type, quantization: Quantization(scale: scale, zeroPoint: zeroPoint),
                                              bits: bits))
        }
        let inputs = try (0..<reader.count(limit: 64, "input count")).map { _ in try reader.index(activationCount) }
        let outputs = try (0..<reader.count(limit: 64, "output count")).map { _ in try reader.index(activationCount) }
        let layerCount = try reader.count(limit: 1 << 20, "layer count")
        var layers: [Layer] = []
        for _ in 0..<layerCount {
            let name = try reader.string()
            let layerInputs = try (0..<reader.count(limit: 256, "layer input count")).map { _ in try reader.index(activationCount) }
            let output = try reader.index(activationCount)
            let op = try decodeOp(&reader, params)
            layers.append(Layer(name: name, op: op, inputs: layerInputs, output: output))
        }
        guard reader.isAtEnd else { throw reader.error("unexpected bytes after the last layer") }
        var metadata: [String: String] = [:]
        if let meta = sections[.metadata] {
            var m = ByteReader(meta, base: sectionOffsets[.metadata]!, what: "metadata section")
            for _ in 0..<(try m.count(limit: 4096, "metadata count")) {
                metadata[try m.string()] = try m.string()
            }
        }
        let model = StudentModel(activations: activations, layers: layers, inputs: inputs, outputs: outputs, metadata: metadata)
        try model.validate()
        return model
    }

    private static func decodeOp(_ r: inout ByteReader, _ params: ParameterSource) throws -> LayerOp {
        func conv() throws -> ConvLayer {
            let m = Int(try r.u32())
            let ints = try (0..<10).map { _ in Int(try r.u32()) }
            let group = Int(try r.u32())
            let lo = try r.i32(), hi = try r.i32()
            guard lo <= hi else { throw r.error("clamp \(lo)...\(hi) is empty") }
            let weights = try params.read(&r, size: 1) { Int8(bitPattern: $0[$0.startIndex]) }
            let bias = try params.read(&r, size: 4) { Int32(bitPattern: UInt32(littleEndianFrom: $0, at: $0.startIndex)) }
            let multipliers = try params.read(&r, size: 4) { Float(bitPattern: UInt32(littleEndianFrom: $0, at: $0.startIndex)) }
            let scales = try params.read(&r, size: 4) { Float(bitPattern: UInt32(littleEndianFrom: $0, at: $0.startIndex)) }
            return ConvLayer(outputChannels: m, kernel: Array(ints[0..<2]), strides: Array(ints[2..<4]), pads: Array(ints[4..<8]),
                             dilations: Array(ints[8..<10]), group: group, clamp: lo...hi, weights: weights, bias: bias,
                             multipliers: multipliers, weightScales: scales)
        }
        func window() throws -> PoolWindow {
            let ints = try (0..<8).map { _ in Int(try r.u32()) }
            let ceil = try r.u8(), include = try r.u8()
            return PoolWindow(kernel: Array(ints[0..<2]), strides: Array(ints[2..<4]), pads: Array(ints[4..<8]),
                              ceilMode: ceil != 0, countIncludePad: include != 0)
        }
        let tag = try r.u8()
        switch tag {
        case 1: return .quantize
        case 2: return .dequantize
        case 3: return .conv(try conv())
        case 4: return .gemm(try conv())
        case 5:
            let lo = try r.i32(), hi = try r.i32()
            guard lo <= hi else { throw r.error("clamp \(lo)...\(hi) is empty") }
            return .add(clamp: lo...hi)
        case 6: return .maxPool(try window())
        case 7: return .averagePool(try window())
        case 8: return .globalAveragePool
        case 9: return .concat(axis: Int(try r.u32()))
        case 10: return .reshape(shape: try (0..<r.count(limit: 8, "rank")).map { _ in try r.dimension() })
        case 11:
            let function = try r.string()
            let table = try params.read(&r, size: 1) { $0[$0.startIndex] }
            return .lookup(LookupTable(function: function, table: table))
        case 12: return .mul
        case 15: return .upsampleNearest(scaleH: Int(try r.u32()), scaleW: Int(try r.u32()))
        case 16: return .insertZeros(strideH: Int(try r.u32()), strideW: Int(try r.u32()))
        case 17:
            let coordinates = try r.string()
            let taps = try (0..<2).map { _ in
                try (0..<r.count(limit: 1 << 16, "resize taps")).map { _ in
                    ResizeTap(first: Int(try r.u32()), second: Int(try r.u32()), fraction: try r.f32())
                }
            }
            return .resizeLinear(LinearResize(coordinates: coordinates, rows: taps[0], columns: taps[1]))
        case 13: return .sliceChannels(start: Int(try r.u32()), count: Int(try r.u32()))
        case 14: return .permuteChannels(try params.read(&r, size: 4) { Int(UInt32(littleEndianFrom: $0, at: $0.startIndex)) })
        case 18: return .float(try decodeFloatOp(&r, params))
        case 19:
            let epsilon = try r.f32()
            let floats = { (r: inout ByteReader) in try params.read(&r, size: 4) { Float(bitPattern: UInt32(littleEndianFrom: $0, at: $0.startIndex)) } }
            let scale = try floats(&r)
            return .channelNorm(ChannelNorm(epsilon: epsilon, scale: scale, shift: try floats(&r)))
        default: throw r.error("unknown layer op \(tag)")
        }
    }

    static func align(_ offset: Int) -> Int { (offset + alignment - 1) / alignment * alignment }
}

/// The parameter section, from which layers read their tensors by (offset, count) references.
struct ParameterSource {
    let bytes: ArraySlice<UInt8>
    let fileOffset: Int

    /// Reads a reference from `r` and decodes `count` elements of `size` bytes each.
    func read<T>(_ r: inout ByteReader, size: Int, _ decode: (ArraySlice<UInt8>) -> T) throws -> [T] {
        let at = r.position
        let offset = try r.u64(), count = try r.u64()
        guard offset % UInt64(KilnFile.alignment) == 0 else {
            throw KilnFormatError("parameter reference at byte \(at): offset \(offset) is not 64-byte aligned")
        }
        guard count <= UInt64(bytes.count), offset <= UInt64(bytes.count),
              UInt64(bytes.count) - offset >= count * UInt64(size) else {
            throw KilnFormatError("parameter reference at byte \(at): \(count) elements at offset \(offset) run outside the \(bytes.count)-byte parameter section")
        }
        let start = bytes.startIndex + Int(offset)
        return (0..<Int(count)).map { i in decode(bytes[(start + i * size)..<(start + (i + 1) * size)]) }
    }
}

/// Appends little-endian values.
struct ByteWriter {
    var bytes: [UInt8] = []

    mutating func raw(_ b: [UInt8]) { bytes += b }
    mutating func u8(_ v: UInt8) { bytes.append(v) }
    mutating func u32(_ v: UInt32) { bytes += littleEndianBytes(v) }
    mutating func i32(_ v: Int32) { u32(UInt32(bitPattern: v)) }
    mutating func u64(_ v: UInt64) { bytes += littleEndianBytes(v) }
    mutating func i64(_ v: Int64) { u64(UInt64(bitPattern: v)) }
    mutating func f32(_ v: Float) { u32(v.bitPattern) }
    mutating func string(_ s: String) {
        let utf8 = Array(s.utf8)
        u32(UInt32(utf8.count))
        bytes += utf8
    }

    /// Appends `data` at the next 64-byte boundary; returns its offset.
    mutating func aligned(_ data: [UInt8]) -> Int {
        bytes += [UInt8](repeating: 0, count: KilnFile.align(bytes.count) - bytes.count)
        let offset = bytes.count
        bytes += data
        return offset
    }

    /// Writes a parameter reference (offset into the parameter section, element count).
    mutating func reference(_ offset: Int, count: Int) {
        u64(UInt64(offset))
        u64(UInt64(count))
    }
}

/// Reads little-endian values with bounds checks; errors give the absolute byte offset.
struct ByteReader {
    let bytes: ArraySlice<UInt8>
    let base: Int
    let what: String
    private(set) var cursor: Int

    init(_ bytes: ArraySlice<UInt8>, base: Int, what: String) {
        self.bytes = bytes
        self.base = base
        self.what = what
        cursor = bytes.startIndex
    }

    /// Absolute file offset of the next byte.
    var position: Int { base + cursor - bytes.startIndex }
    var isAtEnd: Bool { cursor == bytes.endIndex }

    func error(_ message: String) -> KilnFormatError { KilnFormatError("\(what), byte \(position): \(message)") }

    mutating func raw(_ count: Int) throws -> ArraySlice<UInt8> {
        guard count >= 0, bytes.endIndex - cursor >= count else {
            throw error("needs \(count) more bytes but the \(what) ends at byte \(base + bytes.count)")
        }
        defer { cursor += count }
        return bytes[cursor..<(cursor + count)]
    }

    mutating func u8() throws -> UInt8 { try raw(1).first! }
    mutating func u32() throws -> UInt32 { let b = try raw(4); return UInt32(littleEndianFrom: b, at: b.startIndex) }
    mutating func i32() throws -> Int32 { Int32(bitPattern: try u32()) }
    mutating func u64() throws -> UInt64 {
        let b = try raw(8)
        return (0..<8).reduce(UInt64(0)) { $0 | UInt64(b[b.startIndex + $1]) << (8 * UInt64($1)) }
    }
    mutating func f32() throws -> Float { Float(bitPattern: try u32()) }

    mutating func string() throws -> String {
        let length = try count(limit: 1 << 16, "string length")
        return String(decoding: try raw(length), as: UTF8.self)
    }

    /// A u32 count, at most `limit`.
    mutating func count(limit: Int, _ name: String) throws -> Int {
        let at = position
        let value = Int(try u32())
        guard value <= limit else { throw KilnFormatError("\(what), byte \(at): \(name) \(value) exceeds \(limit)") }
        return value
    }

    /// A u32 index below `count`.
    mutating func index(_ count: Int) throws -> Int {
        let at = position
        let value = Int(try u32())
        guard value < count else { throw KilnFormatError("\(what), byte \(at): index \(value) out of range 0..<\(count)") }
        return value
    }

    /// An i64 dimension: the batch marker or 1...2^24.
    mutating func dimension() throws -> Int {
        let at = position
        let raw = Int64(bitPattern: try u64())
        guard raw == Int64(runtimeBatchDimension) || (1...(1 << 24)).contains(raw) else {
            throw KilnFormatError("\(what), byte \(at): invalid dimension \(raw)")
        }
        return Int(raw)
    }
}

func littleEndianBytes<T: FixedWidthInteger>(_ value: T) -> [UInt8] {
    (0..<(T.bitWidth / 8)).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) }
}

extension UInt32 {
    init<C: Collection>(littleEndianFrom bytes: C, at index: C.Index) where C.Element == UInt8 {
        var value: UInt32 = 0
        var i = index
        for shift in 0..<4 {
            value |= UInt32(bytes[i]) << (8 * UInt32(shift))
            i = bytes.index(after: i)
        }
        self = value
    }
}

/// CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320), as in zlib.
public func crc32<C: Collection>(_ bytes: C) -> UInt32 where C.Element == UInt8 {
    var crc: UInt32 = 0xFFFF_FFFF
    for byte in bytes {
        crc = crcTable[Int((crc ^ UInt32(byte)) & 0xFF)] ^ (crc >> 8)
    }
    return crc ^ 0xFFFF_FFFF
}

private let crcTable: [UInt32] = (0..<256).map { n in
    var c = UInt32(n)
    for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
    return c
}
