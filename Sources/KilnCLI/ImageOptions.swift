import ArgumentParser
import KilnGraph
import KilnRuntime

/// The image flags shared by `quantize` and `eval`: how PNG and JPEG files become model inputs (resize, crop,
/// color), completed from the model's metadata and input shape.
struct ImageOptions: ParsableArguments {
    @Option(help: "Resize images so that their shorter side has this length (default: the crop's shorter side, or crop / 0.875 with --preprocess imagenet, as torchvision evaluates ImageNet).")
    var resize: Int?

    @Option(help: "Center crop, SIZE or HEIGHT,WIDTH (default and only accepted value: the model input's size).")
    var crop: String?

    @Option(help: "Channel order the model takes: \(ImagePreprocessing.Color.allCases.map(\.rawValue).joined(separator: ", ")) (default: rgb for 3 channels, grayscale for 1).")
    var color: String?

    /// Whether any image flag was given.
    var given: Bool { resize != nil || crop != nil || color != nil }

    /// The preprocessing for a model with `inputShape` ([N, C, H, W]) and `metadata`: flags first, then what the
    /// metadata records, then defaults from the input's shape and the input domain's preset (`preset`).
    func resolve(inputShape: [Int], metadata: [String: String], preset: String?, file: String) throws -> ImagePreprocessing {
        guard inputShape.count == 4 else {
            throw DataFileError(file: file, "images need a model input of [N, C, H, W]; this one is \(inputShape.shapeDescription)")
        }
        let (channels, height, width) = (inputShape[1], inputShape[2], inputShape[3])
        do {
            let color = try color.map { name -> ImagePreprocessing.Color in
                guard let color = ImagePreprocessing.Color(rawValue: name.lowercased()) else {
                    throw ValidationError("unknown --color '\(name)' (known: \(ImagePreprocessing.Color.allCases.map(\.rawValue).joined(separator: ", ")))")
                }
                return color
            }
            if let crop {
                let sizes = crop.split(separator: ",").map { Int($0.filter { $0 != " " }) }
                guard sizes.count == 1 || sizes.count == 2, sizes.allSatisfy({ $0 != nil }) else {
                    throw ValidationError("--crop '\(crop)' is not SIZE or HEIGHT,WIDTH")
                }
                let (h, w) = (sizes[0]!, sizes.count == 2 ? sizes[1]! : sizes[0]!)
                guard h == height && w == width else {
                    throw DataFileError(file: file, "--crop \(h),\(w) differs from the model's input size \(height)×\(width); the crop is what the model takes")
                }
            }
            let stored = try ImagePreprocessing(metadata: metadata)
            var result = try stored ?? ImagePreprocessing.forInput(
                channels: channels, height: height, width: width,
                cropFraction: preset?.lowercased() == "imagenet" ? 0.875 : 1)
            if let resize { result.resize = resize }
            if let color { result.color = color }
            return try result.validated(channels: channels)
        } catch let error as InputDomainError {
            throw DataFileError(file: file, error.message)
        }
    }
}
