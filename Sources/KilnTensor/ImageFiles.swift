import CKilnImage
import Synchronization
import Foundation
import KilnGraph
import KilnStudent

/// PNG and JPEG files, decoded with libpng and libjpeg-turbo.
public enum ImageFile {
    /// File name extensions read as images (compared without case).
    public static let extensions: Set<String> = ["png", "jpg", "jpeg"]

    /// Whether `path` names an image by its extension.
    public static func isImage(_ path: String) -> Bool {
        extensions.contains((path as NSString).pathExtension.lowercased())
    }

    /// The decoded image of `path` (1 channel for gray files, 3 for color; alpha dropped); errors name the file.
    public static func read(_ path: String) throws -> PixelImage {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw DataFileError(file: path, "cannot be read")
        }
        return try decode(data, file: path)
    }

    /// The decoded image held in `data` (`file` names it in errors).
    public static func decode(_ data: Data, file: String) throws -> PixelImage {
        var image = kiln_decoded_image()
        var message = [CChar](repeating: 0, count: 256)
        let status = data.withUnsafeBytes { raw in
            kiln_image_decode(raw.bindMemory(to: UInt8.self).baseAddress, raw.count, &image, &message, message.count)
        }
        guard status == 0 else {
            let text = message.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
            throw DataFileError(file: file, "cannot decode the image: \(text)")
        }
        defer { kiln_image_free(&image) }
        let count = Int(image.width) * Int(image.height) * Int(image.channels)
        return PixelImage(width: Int(image.width), height: Int(image.height), channels: Int(image.channels),
                          pixels: Array(UnsafeBufferPointer(start: image.pixels, count: count)))
    }
}

/// The image files of a folder: torchvision's ImageFolder layout (`DIR/<class>/*.png`, classes in sorted order =
/// label index) or, for unlabelled use, any folder of images (subfolders included). Files are listed once; each
/// batch is decoded when asked for, so a large set is never held in memory at once.
public struct ImageFolder: Sendable {
    /// The folder.
    public let path: String
    /// Class names (the subfolders holding images, sorted), empty when the images lie in the folder itself.
    public let classes: [String]
    /// Every image file, by class then name.
    public let files: [String]
    /// The label (index into `classes`) of each file; empty without classes.
    public let labels: [Int]

    /// Lists the images under `path`; throws if it is not a folder or holds no image.
    public init(_ path: String) throws {
        let manager = FileManager.default
        var isDirectory: ObjCBool = false
        guard manager.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw DataFileError(file: path, "is not a folder")
        }
        self.path = path
        let entries = try manager.contentsOfDirectory(atPath: path).filter { !$0.hasPrefix(".") }.sorted()
        let subfolders = entries.filter { entry in
            var folder: ObjCBool = false
            return manager.fileExists(atPath: "\(path)/\(entry)", isDirectory: &folder) && folder.boolValue
        }
        let direct = entries.filter(ImageFile.isImage).map { "\(path)/\($0)" }
        var classes: [String] = [], files: [String] = [], labels: [Int] = []
        if direct.isEmpty {
            for folder in subfolders {
                let images = try Self.images(under: "\(path)/\(folder)")
                guard !images.isEmpty else { continue }
                labels += [Int](repeating: classes.count, count: images.count)
                classes.append(folder)
                files += images
            }
        } else {
            files = try Self.images(under: path)
        }
        guard !files.isEmpty else {
            throw DataFileError(file: path, "holds no PNG or JPEG images (\(ImageFile.extensions.sorted().joined(separator: ", ")))")
        }
        (self.classes, self.files, self.labels) = (classes, files, labels)
    }

    /// Every image file under `folder`, subfolders included, sorted by path.
    private static func images(under folder: String) throws -> [String] {
        guard let walker = FileManager.default.enumerator(atPath: folder) else {
            throw DataFileError(file: folder, "cannot be listed")
        }
        return walker.compactMap { $0 as? String }.filter(ImageFile.isImage).sorted().map { "\(folder)/\($0)" }
    }

    /// Number of images.
    public var count: Int { files.count }

    /// Images `range` decoded, preprocessed and normalized, as an [n, channels, cropHeight, cropWidth] batch;
    /// decoded in parallel.
    public func batch(_ range: Range<Int>, preprocessing: ImagePreprocessing, domain: InputDomain) throws -> Tensor {
        let sample = preprocessing.color.channels * preprocessing.cropHeight * preprocessing.cropWidth
        let results = Mutex<[Int: Result<[Float], Error>]>([:])
        let files = Array(self.files[range])
        DispatchQueue.concurrentPerform(iterations: files.count) { i in
            let result = Result { preprocessing.sample(try ImageFile.read(files[i]), domain: domain) }
            results.withLock { $0[i] = result }
        }
        var scalars: [Float] = []
        scalars.reserveCapacity(files.count * sample)
        let decoded = results.withLock { $0 }
        for i in files.indices { scalars += try decoded[i]!.get() }
        return Tensor(shape: [files.count, preprocessing.color.channels, preprocessing.cropHeight, preprocessing.cropWidth],
                      scalars: scalars)
    }
}
