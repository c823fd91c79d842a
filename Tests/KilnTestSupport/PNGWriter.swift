import CZlib
import Foundation
import KilnStudent

/// Writes 8-bit gray or RGB PNG files (no filtering, zlib-compressed), so that tests can lay out image folders
/// without an image library; what Kiln reads back is checked against the pixels written.
public enum PNGWriter {
    /// The PNG file of `image` (1 or 3 channels).
    public static func encode(_ image: PixelImage) -> Data {
        precondition(image.channels == 1 || image.channels == 3, "PNG writer takes gray or RGB")
        var rows = Data()
        let stride = image.width * image.channels
        for y in 0..<image.height {
            rows.append(0)  // filter: none
            rows.append(contentsOf: image.pixels[(y * stride)..<((y + 1) * stride)])
        }
        var compressedSize = compressBound(uLong(rows.count))
        var compressed = [UInt8](repeating: 0, count: Int(compressedSize))
        let status = rows.withUnsafeBytes { raw in
            compress2(&compressed, &compressedSize, raw.bindMemory(to: UInt8.self).baseAddress, uLong(rows.count), 6)
        }
        precondition(status == Z_OK, "zlib compress2 failed")
        var header = Data()
        header.append(bigEndian: UInt32(image.width))
        header.append(bigEndian: UInt32(image.height))
        header.append(contentsOf: [8, image.channels == 1 ? 0 : 2, 0, 0, 0])  // depth, color type, methods
        var file = Data([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
        file.appendChunk("IHDR", header)
        file.appendChunk("IDAT", Data(compressed.prefix(Int(compressedSize))))
        file.appendChunk("IEND", Data())
        return file
    }

    /// Writes `image` as a PNG file at `path`.
    public static func write(_ image: PixelImage, to path: String) throws {
        try encode(image).write(to: URL(fileURLWithPath: path))
    }
}

extension Data {
    fileprivate mutating func append(bigEndian value: UInt32) {
        Swift.withUnsafeBytes(of: value.bigEndian) { append(contentsOf: $0) }
    }

    fileprivate mutating func appendChunk(_ type: String, _ body: Data) {
        append(bigEndian: UInt32(body.count))
        let typed = Data(type.utf8) + body
        append(typed)
        let crc = typed.withUnsafeBytes { raw in
            crc32(0, raw.bindMemory(to: UInt8.self).baseAddress, uInt(typed.count))
        }
        append(bigEndian: UInt32(crc))
    }
}
