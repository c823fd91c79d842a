import CZlib
import Foundation
import KilnGraph
import KilnStudent

/// IDX files (the MNIST family's format), plain or gzip-compressed.
public enum IDX {
    /// A parsed IDX file of unsigned bytes.
    public struct Array {
        /// Dimensions.
        public var shape: [Int]
        /// The elements, row-major.
        public var bytes: [UInt8]
    }

    /// Reads an IDX file of unsigned bytes (type code 0x08), decompressing it if it is gzip.
    public static func read(_ path: String) throws -> Array {
        let bytes = try readMaybeGzip(path)
        guard bytes.count >= 4 else { throw DataFileError(file: path, "too short for an IDX header (\(bytes.count) bytes)") }
        guard bytes[0] == 0, bytes[1] == 0 else { throw DataFileError(file: path, "not an IDX file (bad magic at byte 0)") }
        guard bytes[2] == 0x08 else {
            throw DataFileError(file: path, "IDX element type 0x\(String(bytes[2], radix: 16)) at byte 2 is not unsigned byte (0x08)")
        }
        let rank = Int(bytes[3])
        guard rank >= 1, bytes.count >= 4 + 4 * rank else {
            throw DataFileError(file: path, "truncated IDX header: rank \(rank) needs \(4 + 4 * rank) bytes")
        }
        let shape = (0..<rank).map { d in
            (0..<4).reduce(0) { $0 << 8 | Int(bytes[4 + 4 * d + $1]) }
        }
        let needed = shape.reduce(1, *)
        let available = bytes.count - 4 - 4 * rank
        guard needed == available else {
            throw DataFileError(file: path, "shape \(shape.shapeDescription) needs \(needed) bytes of data after byte \(4 + 4 * rank), file has \(available)")
        }
        return Array(shape: shape, bytes: Swift.Array(bytes[(4 + 4 * rank)...]))
    }

    /// The file's bytes, inflated if they start with the gzip magic.
    private static func readMaybeGzip(_ path: String) throws -> [UInt8] {
        guard let file = gzopen(path, "rb") else { throw DataFileError(file: path, "cannot open") }
        defer { gzclose(file) }
        var result: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let read = chunk.withUnsafeMutableBytes { gzread(file, $0.baseAddress, UInt32($0.count)) }
            if read < 0 { throw DataFileError(file: path, "corrupt gzip data after \(result.count) bytes") }
            if read == 0 { break }
            result.append(contentsOf: chunk[0..<Int(read)])
        }
        return result
    }
}

/// The Fashion-MNIST dataset in IDX files (Debian package dataset-fashion-mnist).
public struct FashionMNIST {
    /// Where Debian installs the dataset.
    public static let defaultDirectory = "/usr/share/datasets/fashion-mnist"

    /// Which half of the dataset.
    public enum Split: String, Sendable {
        case train, test = "t10k"
    }

    /// Images, 28×28 bytes each, row-major.
    public var images: [UInt8]
    /// Class of each image, 0–9.
    public var labels: [Int]
    /// Number of images.
    public var count: Int { labels.count }

    /// Loads one split from a folder holding `{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`.
    public init(split: Split, directory: String = FashionMNIST.defaultDirectory) throws {
        func file(_ kind: String) -> String {
            let base = "\(directory)/\(split.rawValue)-\(kind)-ubyte"
            return FileManager.default.fileExists(atPath: base + ".gz") || !FileManager.default.fileExists(atPath: base) ? base + ".gz" : base
        }
        let imageFile = file("images-idx3"), labelFile = file("labels-idx1")
        let images = try IDX.read(imageFile)
        let labels = try IDX.read(labelFile)
        guard images.shape.count == 3, images.shape[1] == 28, images.shape[2] == 28 else {
            throw DataFileError(file: imageFile, "expected images of shape [N, 28, 28], got \(images.shape.shapeDescription)")
        }
        guard labels.shape == [images.shape[0]] else {
            throw DataFileError(file: labelFile, "expected \(images.shape[0]) labels, got shape \(labels.shape.shapeDescription)")
        }
        self.images = images.bytes
        self.labels = labels.bytes.map { Int($0) }
    }

    /// Images `range` as a float32 [n, 1, 28, 28] tensor, (pixel / 255 − mean) / std.
    public func tensor(_ range: Range<Int>, mean: Float = 0, std: Float = 1) -> Tensor {
        let pixels = 28 * 28
        let scalars = images[(range.lowerBound * pixels)..<(range.upperBound * pixels)].map {
            (Float($0) / 255 - mean) / std
        }
        return Tensor(shape: [range.count, 1, 28, 28], scalars: scalars)
    }
}
