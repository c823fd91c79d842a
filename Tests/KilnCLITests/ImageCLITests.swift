import Foundation
import KilnRuntime
import KilnTensor
import KilnTestSupport
import Testing

/// Image folders made from Fashion-MNIST test images (written as PNG files by the tests' own writer).
private enum ImageSets {
    static let classes = ["0-tshirt", "1-trouser", "2-pullover", "3-dress", "4-coat", "5-sandal", "6-shirt", "7-sneaker",
                          "8-bag", "9-boot"]

    /// Test images 0..<count as gray PNGs: in ImageFolder layout (DIR/<class>/<index>.png) or flat (DIR/<index>.png).
    static func write(count: Int, to folder: String, classFolders: Bool) throws -> FashionMNIST {
        let data = try FashionMNIST(split: .test)
        for i in 0..<count {
            let directory = classFolders ? "\(folder)/\(classes[data.labels[i]])" : folder
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            let image = PixelImage(width: 28, height: 28, channels: 1, pixels: Array(data.images[(i * 784)..<((i + 1) * 784)]))
            try PNGWriter.write(image, to: "\(directory)/\(String(format: "%05d", i)).png")
        }
        return data
    }

    static func json(_ text: String) throws -> [String: Any] {
        try JSONSerialization.jsonObject(with: Data(text.utf8)) as! [String: Any]
    }
}

@Suite("images in: kiln eval --images, image calibration folders, pixel input in Swift and C")
struct ImageCLITests {
    @Test("kiln eval --images on Fashion-MNIST written as PNG files gives the .npy path's top-1, image for image")
    func evalImagesMatchesTensors() throws {
        let folder = CLI.temporary("eval-images")
        defer { try? FileManager.default.removeItem(atPath: folder) }
        _ = try ImageSets.write(count: 300, to: folder, classFolders: true)
        let images = try CLI.run(["eval", CLI.teacher, "--images", folder, "--json"])
        #expect(images.status == 0, "\(images.stderr)")
        let tensors = try CLI.run(["eval", CLI.teacher, "--dataset", "fashion-mnist", "--limit", "300", "--json"])
        #expect(tensors.status == 0, "\(tensors.stderr)")
        let (a, b) = (try ImageSets.json(images.stdout), try ImageSets.json(tensors.stdout))
        #expect(a["count"] as? Int == 300 && b["count"] as? Int == 300)
        #expect(a["correct"] as? Int == b["correct"] as? Int, "images \(a["correct"] ?? "-"), tensors \(b["correct"] ?? "-")")
        #expect((a["top5"] as? Double ?? 0) >= (a["top1"] as? Double ?? 1))
        // One entry per class, named by its folder, with the class's image count.
        let classes = try #require(a["classes"] as? [[String: Any]])
        #expect(classes.map { $0["name"] as? String } == ImageSets.classes)
        #expect(classes.reduce(0) { $0 + ($1["images"] as? Int ?? 0) } == 300)
        let text = try CLI.run(["eval", CLI.teacher, "--images", folder, "--limit", "50"])
        #expect(text.status == 0 && text.stdout.contains("top-5:") && text.stdout.contains("0-tshirt"), "\(text.stdout)")
        // A flat folder has no labels: it needs a reference.
        try CLI.expectFailure(["eval", CLI.teacher, "--images", "\(folder)/0-tshirt"], ["no class subfolders", "--reference"])
    }

    @Test("a fixed-batch-1 torchvision export is quantized from a 64-image folder; the student records the preprocessing and runs pixels bit-identically to floats")
    func batchOneExportFromImageFolder() throws {
        let folder = CLI.temporary("calibration-images"), student = CLI.temporary("mbv3-images.kiln")
        defer { for path in [folder, student] { try? FileManager.default.removeItem(atPath: path) } }
        let data = try ImageSets.write(count: 64, to: folder, classFolders: false)
        let teacher = CLI.root.appendingPathComponent("models/edge/mobilenet_v3_small.onnx").path
        let quantize = try CLI.run(["quantize", teacher, "--calibration", folder, "--preprocess", "imagenet", "-o", student])
        #expect(quantize.status == 0, "\(quantize.stderr)")
        #expect(quantize.stdout.contains("64 calibration images"), "\(quantize.stdout)")
        let inspect = try CLI.run(["inspect", student])
        // 64×64 input, ImageNet's 0.875 crop fraction: the shorter side goes to 73; gray files become RGB.
        #expect(inspect.stdout.contains("images:      RGB, shorter side to 73, center crop 64×64"), "\(inspect.stdout)")

        let model = try KilnModel(contentsOf: URL(fileURLWithPath: student), options: .init(threads: 1))
        let input = try model.pixelInput()
        let images = (0..<4).map { i in
            PixelImage(width: 28, height: 28, channels: 1, pixels: Array(data.images[(i * 784)..<((i + 1) * 784)]))
        } + [PixelImage(width: 50, height: 30, channels: 3, pixels: (0..<(50 * 30 * 3)).map { UInt8(truncatingIfNeeded: $0 * 37 / 11) })]
        let floats = images.flatMap { input.preprocessing.sample($0, domain: input.domain) }
        #expect(try model.predictOutputs(images: images) == (try model.predictOutputs(floats)))
        // The student runs at any batch size although the teacher was exported with batch 1.
        #expect(try model.predictOutputs(images: Array(images.prefix(1)))[0] == Array(try model.predictOutputs(floats)[0].prefix(model.outputs[0].sampleCount)))

        // kiln eval of the student on unlabelled images against its teacher (an untrained MobileNetV3-Small with
        // hard-swish and squeeze-excitation; plain W8A8 on 64 upscaled gray images follows it at cosine 0.87).
        let eval = try CLI.run(["eval", student, "--images", folder, "--reference", teacher, "--json"])
        #expect(eval.status == 0, "\(eval.stderr)")
        let outputs = try #require(try ImageSets.json(eval.stdout)["outputs"] as? [[String: Any]])
        #expect((outputs.first?["meanCosine"] as? Double ?? 0) > 0.8, "\(eval.stdout)")
    }

    @Test("the C API runs a camera-style frame through the student's recorded preprocessing, bit-identical to Swift, and exposes the metadata")
    func cPixelInput() throws {
        let buildFolder = CLI.executable.deletingLastPathComponent()
        let library = buildFolder.appendingPathComponent("libkilnrt.so")
        try #require(FileManager.default.fileExists(atPath: library.path), "build the library product first (swift build --product kilnrt)")
        let folder = CLI.temporary("c-calibration"), student = CLI.temporary("c-pixels.kiln")
        let program = CLI.temporary("kiln_classify"), frame = CLI.temporary("frame.pgm"), output = CLI.temporary("frame.f32")
        let names = CLI.temporary("class-names.txt")
        defer { for path in [folder, student, program, frame, output, names] { try? FileManager.default.removeItem(atPath: path) } }
        _ = try ImageSets.write(count: 32, to: folder, classFolders: true)
        let quantize = try CLI.run(["quantize", CLI.teacher, "--calibration", folder, "-o", student])
        #expect(quantize.status == 0, "\(quantize.stderr)")
        let compile = try Processes.run("/usr/bin/env", [
            "gcc", "-std=c11", "-Wall", "-Wextra", "-Werror", "-I", CLI.root.appendingPathComponent("include").path,
            CLI.root.appendingPathComponent("Examples/c/kiln_classify.c").path, "-L", buildFolder.path, "-lkilnrt",
            "-Wl,-rpath," + buildFolder.path, "-o", program])
        try #require(compile.status == 0, "gcc failed: \(compile.stderr)")
        // A 40×30 gray frame: resized (shorter side 30 → 28) and center-cropped inside the runtime.
        let pixels = (0..<(40 * 30)).map { UInt8(truncatingIfNeeded: ($0 % 40) * 5 + ($0 / 40) * 3) }
        try (Data("P5\n40 30\n255\n".utf8) + Data(pixels)).write(to: URL(fileURLWithPath: frame))
        let run = try Processes.run(program, [student, frame, output])
        #expect(run.status == 0, "\(run.stdout)\(run.stderr)")
        let model = try KilnModel(contentsOf: URL(fileURLWithPath: student), options: .init(threads: 1))
        for line in ["kernels \(model.options.kernels)", "preprocessing resize 28 crop 28x28 channels 1 bgr 0", "classes 10",
                     "metadata kiln.image_color = grayscale", "normalization 0 mean"] {
            #expect(run.stdout.contains(line), "'\(line)' not in: \(run.stdout)")
        }
        let fromC = try Data(contentsOf: URL(fileURLWithPath: output)).withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
        let fromSwift = try model.predictOutputs(images: [PixelImage(width: 40, height: 30, channels: 1, pixels: pixels)])[0]
        #expect(fromC == fromSwift)
        let best = fromSwift.indices.max { fromSwift[$0] < fromSwift[$1] }!
        #expect(run.stdout.contains("top class \(best) \(ImageSets.classes[best])"), "\(run.stdout)")

        // --class-names overrides the folder's names; a student without recorded preprocessing refuses pixels.
        try "a\nb\nc\nd\ne\nf\ng\nh\ni\nj\n".write(toFile: names, atomically: true, encoding: .utf8)
        let renamed = try CLI.run(["quantize", CLI.teacher, "--calibration", folder, "--class-names", names, "-o", student])
        #expect(renamed.status == 0, "\(renamed.stderr)")
        #expect(try KilnModel(contentsOf: URL(fileURLWithPath: student)).classNames == ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"])
        let old = try KilnModel(contentsOf: CLI.root.appendingPathComponent("models/students/resnet20-w8a8.kiln"))
        #expect(throws: KilnRuntimeError.self) { try old.predictOutputs(images: [PixelImage(width: 28, height: 28, channels: 1, pixels: [UInt8](repeating: 0, count: 784))]) }
    }
}
