import Foundation
import KilnStudent
import KilnTensor
import KilnTestSupport
import Testing

/// The image fixtures (scripts/make_image_fixtures.py): files and what PIL and torchvision make of them.
private enum ImageFixtures {
    static func path(_ name: String) -> String { Repository.path("Tests/KilnTensorTests/Fixtures/images/\(name)") }

    /// PIL's decoded pixels of `name`, uint8 HWC.
    static func pixels(_ name: String) throws -> (shape: [Int], bytes: [UInt8]) {
        let array = try NPY.read(path("\(name).pixels.npy"))
        #expect(array.dtype == .uint8)
        return (array.shape, [UInt8](array.payload))
    }
}

@Suite("images: PNG and JPEG decoding, preprocessing as torchvision, image folders")
struct ImageTests {
    @Test("PNG files decode to exactly PIL's pixels (color, gray, alpha dropped)", arguments: ["color.png", "gray.png", "alpha.png"])
    func png(_ name: String) throws {
        let image = try ImageFile.read(ImageFixtures.path(name))
        let expected = try ImageFixtures.pixels(name)
        #expect([image.height, image.width, image.channels] == expected.shape)
        #expect(image.pixels == expected.bytes)
    }

    @Test("JPEG files decode to PIL's pixels within one level (both libjpeg-turbo, possibly different versions)",
          arguments: ["color.jpg", "gray.jpg"])
    func jpeg(_ name: String) throws {
        let image = try ImageFile.read(ImageFixtures.path(name))
        let expected = try ImageFixtures.pixels(name)
        #expect([image.height, image.width, image.channels] == expected.shape)
        let differences = zip(image.pixels, expected.bytes).map { abs(Int($0) - Int($1)) }
        #expect(differences.max()! <= 1)
    }

    @Test("resize, center crop, color and normalization match torchvision's transforms",
          arguments: [("color.png", "down"), ("color.png", "up"), ("color.png", "gray"), ("gray.png", "down"),
                      ("gray.png", "up"), ("gray.png", "gray")])
    func preprocessing(_ name: String, _ caseName: String) throws {
        let cases: [String: (ImagePreprocessing, InputDomain)] = [
            "down": (.init(resize: 20, cropHeight: 16, cropWidth: 16, color: .rgb),
                     .normalized(mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225])),
            "up": (.init(resize: 64, cropHeight: 64, cropWidth: 48, color: .rgb), .normalized(mean: [0.5], std: [0.5])),
            "gray": (.init(resize: 24, cropHeight: 24, cropWidth: 24, color: .grayscale), .normalized(mean: [0], std: [1])),
        ]
        let (preprocessing, domain) = cases[caseName]!
        let expected = try NPY.readTensor(ImageFixtures.path("\(name).\(caseName).npy"))
        let sample = preprocessing.sample(try ImageFile.read(ImageFixtures.path(name)), domain: domain)
        #expect(expected.shape == [preprocessing.color.channels, preprocessing.cropHeight, preprocessing.cropWidth])
        // Kiln resamples in PIL's fixed point: the same 8-bit pixels, so the same floats up to the order of the
        // normalization's float operations (torch divides a tensor, Kiln each value).
        let std = domain.normalization.std.min()!
        let levels = zip(sample, expected.scalars).map { abs($0 - $1) * std * 255 }
        #expect(levels.max()! < 0.01)
    }

    @Test("broken and foreign files are refused with the file named")
    func badFiles() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("kiln-bad-images-\(UUID())").path
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let png = try Data(contentsOf: URL(fileURLWithPath: ImageFixtures.path("color.png")))
        let jpeg = try Data(contentsOf: URL(fileURLWithPath: ImageFixtures.path("color.jpg")))
        let cases: [(String, Data, String)] = [
            ("cut.png", png.prefix(png.count / 2), "cannot decode the image"),
            ("cut.jpg", jpeg.prefix(40), "cannot decode the image"),
            ("text.png", Data("not an image".utf8), "not a PNG or JPEG"),
            ("empty.jpg", Data(), "not a PNG or JPEG"),
        ]
        for (name, bytes, message) in cases {
            let path = "\(folder)/\(name)"
            try bytes.write(to: URL(fileURLWithPath: path))
            do {
                _ = try ImageFile.read(path)
                Issue.record("\(name) was accepted")
            } catch let error as DataFileError {
                #expect(error.file == path && error.message.contains(message), "\(error)")
            }
        }
    }

    @Test("an ImageFolder lists classes in sorted order, reads PNGs the writer made, and batches them")
    func folder() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("kiln-folder-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: root) }
        var written: [PixelImage] = []
        for (label, name) in ["b-shirt", "a-coat"].enumerated() {
            try FileManager.default.createDirectory(atPath: "\(root)/\(name)", withIntermediateDirectories: true)
            for i in 0..<3 {
                let pixels = (0..<(6 * 5)).map { UInt8(truncatingIfNeeded: $0 * 7 + i * 31 + label * 101) }
                let image = PixelImage(width: 5, height: 6, channels: 1, pixels: pixels)
                try PNGWriter.write(image, to: "\(root)/\(name)/\(i).png")
                written.append(image)
            }
        }
        try Data("not an image".utf8).write(to: URL(fileURLWithPath: "\(root)/a-coat/notes.txt"))
        let folder = try ImageFolder(root)
        #expect(folder.classes == ["a-coat", "b-shirt"])
        #expect(folder.labels == [0, 0, 0, 1, 1, 1])
        #expect(folder.files.map { URL(fileURLWithPath: $0).lastPathComponent } == ["0.png", "1.png", "2.png", "0.png", "1.png", "2.png"])
        let batch = try folder.batch(1..<4, preprocessing: .init(resize: 5, cropHeight: 6, cropWidth: 5, color: .grayscale),
                                     domain: .normalized(mean: [0], std: [1]))
        #expect(batch.shape == [3, 1, 6, 5])
        // a-coat was written second: its images are written[3...5]; files 1 and 2 of a-coat, then 0 of b-shirt.
        let expected = [written[4], written[5], written[0]].flatMap { $0.pixels.map { Float($0) / 255 } }
        #expect(batch.scalars == expected)
        #expect(throws: DataFileError.self) { try ImageFolder("\(root)/a-coat/notes.txt") }
    }
}
