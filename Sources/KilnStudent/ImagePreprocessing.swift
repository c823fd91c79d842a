/// An 8-bit image: rows top to bottom, channels interleaved (HWC): 1 channel gray, 3 RGB (or BGR where a
/// preprocessing says so).
public struct PixelImage: Hashable, Sendable {
    public var width: Int
    public var height: Int
    public var channels: Int
    public var pixels: [UInt8]

    /// An image; `pixels` holds height × width × channels bytes.
    public init(width: Int, height: Int, channels: Int, pixels: [UInt8]) {
        precondition(pixels.count == width * height * channels, "pixels must hold height × width × channels bytes")
        (self.width, self.height, self.channels, self.pixels) = (width, height, channels, pixels)
    }
}

/// How an image becomes a model input, as torchvision's eval transforms write it: convert the color, resize the
/// shorter side, center-crop, then scale and normalize (the `InputDomain`). Stated by the user, recorded in the
/// student, applied the same way by `kiln eval --images`, calibration folders and the runtime's pixel input.
public struct ImagePreprocessing: Hashable, Sendable, CustomStringConvertible {
    /// The channel order and count the model takes.
    public enum Color: String, Hashable, Sendable, CaseIterable {
        case rgb, bgr, grayscale

        /// Channels of the model input.
        public var channels: Int { self == .grayscale ? 1 : 3 }
    }

    /// The length the shorter side is resized to (the longer side keeps the aspect ratio).
    public var resize: Int
    /// Height and width of the center crop: the model input's spatial size.
    public var cropHeight: Int, cropWidth: Int
    public var color: Color

    /// A preprocessing; validate with `validated()`.
    public init(resize: Int, cropHeight: Int, cropWidth: Int, color: Color) {
        (self.resize, self.cropHeight, self.cropWidth, self.color) = (resize, cropHeight, cropWidth, color)
    }

    /// The preprocessing for a model input of [channels, height, width] when the user states only some of it:
    /// the crop is the input's size, the resize the crop's shorter side divided by `cropFraction` (torchvision's
    /// ImageNet evaluation resizes to 256 for a 224 crop: 0.875; 1 resizes straight to the crop), the color from
    /// the channels (3: RGB, 1: grayscale).
    public static func forInput(channels: Int, height: Int, width: Int, resize: Int? = nil, cropFraction: Double = 1,
                                color: Color? = nil) throws -> ImagePreprocessing {
        guard channels == 1 || channels == 3 else {
            throw InputDomainError("the model's input has \(channels) channels; images give 1 (grayscale) or 3 (RGB)")
        }
        let color = color ?? (channels == 1 ? .grayscale : .rgb)
        let shorter = Double(min(height, width))
        let resize = resize ?? Int((shorter / cropFraction).rounded(.down))
        return try ImagePreprocessing(resize: resize, cropHeight: height, cropWidth: width, color: color)
            .validated(channels: channels)
    }

    /// Checks the sizes (positive, the crop no larger than 16384) and, given the model's input channels, the color.
    public func validated(channels: Int? = nil) throws -> ImagePreprocessing {
        for (name, value) in [("resize", resize), ("crop height", cropHeight), ("crop width", cropWidth)]
        where value < 1 || value > 16384 {
            throw InputDomainError("image \(name) \(value) must be between 1 and 16384")
        }
        if let channels, channels != color.channels {
            throw InputDomainError("color \(color.rawValue) gives \(color.channels) channel(s) but the model's input has \(channels)")
        }
        return self
    }

    /// "RGB, shorter side to 256, center crop 224×224".
    public var description: String {
        "\(color == .grayscale ? "grayscale" : color.rawValue.uppercased()), shorter side to \(resize), center crop \(cropHeight)×\(cropWidth)"
    }

    // MARK: - Metadata

    /// Metadata keys: `kiln.image_resize` ("256"), `kiln.image_crop` ("224,224", height and width), `kiln.image_color`
    /// (rgb, bgr or grayscale).
    public static let resizeKey = "kiln.image_resize", cropKey = "kiln.image_crop", colorKey = "kiln.image_color"

    /// The preprocessing a model's metadata states, nil if it states none; throws if the entries are malformed or
    /// incomplete.
    public init?(metadata: [String: String]) throws {
        let keys = [Self.resizeKey, Self.cropKey, Self.colorKey]
        let present = keys.filter { metadata[$0] != nil }
        guard !present.isEmpty else { return nil }
        guard present.count == keys.count else {
            throw InputDomainError("metadata has \(present.joined(separator: ", ")) but not \(keys.filter { metadata[$0] == nil }.joined(separator: ", "))")
        }
        let crop = metadata[Self.cropKey]!.split(separator: ",").map { Int($0.filter { $0 != " " }) }
        guard let resize = Int(metadata[Self.resizeKey]!), crop.count == 2, let height = crop[0], let width = crop[1],
              let color = Color(rawValue: metadata[Self.colorKey]!) else {
            throw InputDomainError("metadata \(Self.resizeKey) = '\(metadata[Self.resizeKey]!)', \(Self.cropKey) = '\(metadata[Self.cropKey]!)', \(Self.colorKey) = '\(metadata[Self.colorKey]!)' is not a resize, a crop HEIGHT,WIDTH and one of \(Color.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        self = try ImagePreprocessing(resize: resize, cropHeight: height, cropWidth: width, color: color).validated()
    }

    /// `metadata` with this preprocessing's entries.
    public func written(into metadata: [String: String]) -> [String: String] {
        metadata.merging([Self.resizeKey: "\(resize)", Self.cropKey: "\(cropHeight),\(cropWidth)",
                          Self.colorKey: color.rawValue]) { $1 }
    }

    // MARK: - Applying it

    /// The image converted to the color, resized and center-cropped: cropHeight × cropWidth × channels bytes.
    public func apply(to image: PixelImage) -> PixelImage {
        let converted = convert(image)
        // torchvision: the shorter side becomes `resize`, the longer one int(resize · longer / shorter).
        let (width, height) = converted.width <= converted.height
            ? (resize, Int(Double(resize) * Double(converted.height) / Double(converted.width)))
            : (Int(Double(resize) * Double(converted.width) / Double(converted.height)), resize)
        let resized = width == converted.width && height == converted.height
            ? converted : Self.resample(converted, width: width, height: height)
        return Self.centerCrop(resized, height: cropHeight, width: cropWidth)
    }

    /// The image in this preprocessing's channels: gray replicated to three channels, color reduced to gray by
    /// ITU-R 601 luma (PIL's weights), RGB reordered to BGR.
    func convert(_ image: PixelImage) -> PixelImage {
        let count = image.width * image.height
        switch (image.channels, color) {
        case (1, .grayscale), (3, .rgb):
            return image
        case (1, _):
            var pixels = [UInt8](repeating: 0, count: count * 3)
            for i in 0..<count { for c in 0..<3 { pixels[i * 3 + c] = image.pixels[i] } }
            return PixelImage(width: image.width, height: image.height, channels: 3, pixels: pixels)
        case (_, .grayscale):
            let pixels = (0..<count).map { i -> UInt8 in
                let (r, g, b) = (UInt32(image.pixels[i * 3]), UInt32(image.pixels[i * 3 + 1]), UInt32(image.pixels[i * 3 + 2]))
                return UInt8((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16)
            }
            return PixelImage(width: image.width, height: image.height, channels: 1, pixels: pixels)
        default:  // RGB to BGR
            var pixels = image.pixels
            for i in 0..<count { pixels.swapAt(i * 3, i * 3 + 2) }
            return PixelImage(width: image.width, height: image.height, channels: 3, pixels: pixels)
        }
    }

    /// Bilinear resampling with antialiasing as PIL does it (what torchvision's Resize calls on images): the
    /// triangle filter widened by the downscale factor, rows then columns, each pass in PIL's 22-bit fixed point
    /// and rounded to 8 bits — so the pixels are PIL's, not merely close to them.
    static func resample(_ image: PixelImage, width: Int, height: Int) -> PixelImage {
        let channels = image.channels
        let columns = FilterTaps(input: image.width, output: width), rows = FilterTaps(input: image.height, output: height)
        // Horizontal pass: image.height × width × channels.
        var horizontal = [UInt8](repeating: 0, count: image.height * width * channels)
        for y in 0..<image.height {
            let source = y * image.width * channels, target = y * width * channels
            for x in 0..<width {
                for c in 0..<channels {
                    var sum = FilterTaps.half
                    for (k, weight) in columns.weights[x].enumerated() {
                        sum += Int(image.pixels[source + (columns.starts[x] + k) * channels + c]) * weight
                    }
                    horizontal[target + x * channels + c] = FilterTaps.clip(sum)
                }
            }
        }
        var pixels = [UInt8](repeating: 0, count: height * width * channels)
        let row = width * channels
        for y in 0..<height {
            for i in 0..<row {
                var sum = FilterTaps.half
                for (k, weight) in rows.weights[y].enumerated() {
                    sum += Int(horizontal[(rows.starts[y] + k) * row + i]) * weight
                }
                pixels[y * row + i] = FilterTaps.clip(sum)
            }
        }
        return PixelImage(width: width, height: height, channels: channels, pixels: pixels)
    }

    /// The centered height × width window (torchvision's rounding); parts beyond a smaller image are zero.
    static func centerCrop(_ image: PixelImage, height: Int, width: Int) -> PixelImage {
        let top = Int((Double(image.height - height) / 2).rounded(.toNearestOrEven))
        let left = Int((Double(image.width - width) / 2).rounded(.toNearestOrEven))
        let channels = image.channels
        var pixels = [UInt8](repeating: 0, count: height * width * channels)
        for y in 0..<height where (0..<image.height).contains(top + y) {
            for x in 0..<width where (0..<image.width).contains(left + x) {
                for c in 0..<channels {
                    pixels[(y * width + x) * channels + c] = image.pixels[((top + y) * image.width + left + x) * channels + c]
                }
            }
        }
        return PixelImage(width: width, height: height, channels: channels, pixels: pixels)
    }

    /// The preprocessed image as a float CHW sample normalized by `domain` (cropHeight × cropWidth × channels
    /// values, channel-major).
    public func sample(_ image: PixelImage, domain: InputDomain) -> [Float] {
        let cropped = apply(to: image)
        let (mean, std) = domain.normalization
        let plane = cropHeight * cropWidth, channels = cropped.channels
        var out = [Float](repeating: 0, count: plane * channels)
        for c in 0..<channels {
            let m = mean.count == 1 ? mean[0] : mean[c], s = std.count == 1 ? std[0] : std[c]
            for i in 0..<plane { out[c * plane + i] = (Float(cropped.pixels[i * channels + c]) / 255 - m) / s }
        }
        return out
    }
}

/// Per output position, the first input position and the fixed-point weights of an antialiased bilinear (triangle)
/// filter, computed as PIL's resampling computes them.
struct FilterTaps {
    /// Fraction bits of the weights (PIL's PRECISION_BITS), and the rounding term a sum starts from.
    static let precision = 22, half = 1 << (precision - 1)
    let starts: [Int], weights: [[Int]]

    init(input: Int, output: Int) {
        let scale = Double(input) / Double(output)
        let support = max(scale, 1)  // the triangle's half-width in input pixels
        var starts: [Int] = [], weights: [[Int]] = []
        for o in 0..<output {
            let center = (Double(o) + 0.5) * scale
            let first = max(0, Int(center - support + 0.5))
            let end = min(input, Int(center + support + 0.5))
            var w = (first..<max(first, end)).map { i in max(0, 1 - abs((Double(i) - center + 0.5) / support)) }
            let total = w.reduce(0, +)
            if total != 0 { w = w.map { $0 / total } }
            starts.append(first)
            weights.append(w.map { Int(($0 * Double(1 << Self.precision) + ($0 < 0 ? -0.5 : 0.5)).rounded(.towardZero)) })
        }
        (self.starts, self.weights) = (starts, weights)
    }

    /// A fixed-point sum as an 8-bit value.
    static func clip(_ sum: Int) -> UInt8 { UInt8(max(0, min(255, sum >> precision))) }
}

/// The names of a classifier's classes, by output index, as a student records them (`kiln.class_names`, one name
/// per line): from an ImageFolder calibration set's subfolders or `kiln quantize --class-names`.
public enum ClassNames {
    /// The metadata key.
    public static let key = "kiln.class_names"

    /// The names `metadata` records (empty when none).
    public static func read(_ metadata: [String: String]) -> [String] {
        metadata[key].map { $0.split(separator: "\n", omittingEmptySubsequences: false).map(String.init) } ?? []
    }

    /// `metadata` with `names` recorded; throws if a name is empty or holds a line break.
    public static func written(_ names: [String], into metadata: [String: String]) throws -> [String: String] {
        for name in names where name.isEmpty || name.contains(where: \.isNewline) {
            throw InputDomainError("class name '\(name)' is empty or holds a line break")
        }
        return metadata.merging([key: names.joined(separator: "\n")]) { $1 }
    }
}
