/// The values a model's input tensor takes for real images: how 8-bit pixels are normalized, or the range of the
/// normalized tensor. Part of a model: stated by the user or read from metadata, recorded in the student, used for
/// the input quantizer and for synthetic calibration images.
public enum InputDomain: Hashable, Sendable, CustomStringConvertible {
    /// x = (pixel / 255 − mean[c]) / std[c] for channel c (one value for every channel, or one per channel), with
    /// mean and std in the [0, 1] pixel scale as torchvision writes them.
    case normalized(mean: [Float], std: [Float])
    /// The normalized tensor lies in [low, high] (every channel alike).
    case range(low: Float, high: Float)

    /// Named preprocessing conventions (`--preprocess NAME`).
    public static let presets: [(name: String, domain: InputDomain, summary: String)] = [
        ("imagenet", .normalized(mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]),
         "torchvision's ImageNet normalization: mean 0.485,0.456,0.406, std 0.229,0.224,0.225"),
        ("unit", .normalized(mean: [0], std: [1]), "pixel / 255, in [0, 1]"),
        ("signed-unit", .normalized(mean: [0.5], std: [0.5]), "pixel / 127.5 − 1, in [−1, 1] (Inception, many TF models)"),
        ("pixels", .range(low: 0, high: 255), "raw pixel values in [0, 255]"),
    ]

    /// The preset of that name.
    public init?(preset name: String) {
        guard let preset = InputDomain.presets.first(where: { $0.name == name.lowercased() }) else { return nil }
        self = preset.domain
    }

    /// Checks sizes and values: means finite, stds positive and finite, mean and std lists of equal length (or one
    /// of them a single value), a non-empty range.
    public func validated(channels: Int? = nil) throws -> InputDomain {
        switch self {
        case .normalized(let mean, let std):
            guard !mean.isEmpty, !std.isEmpty, mean.allSatisfy(\.isFinite), std.allSatisfy({ $0.isFinite && $0 > 0 }) else {
                throw InputDomainError("input mean and std must be finite numbers and every std positive (got mean \(mean), std \(std))")
            }
            guard mean.count == std.count || mean.count == 1 || std.count == 1 else {
                throw InputDomainError("input mean has \(mean.count) values and std \(std.count): give one value or one per channel for each")
            }
            if let channels {
                for (name, values) in [("mean", mean), ("std", std)] where values.count != 1 && values.count != channels {
                    throw InputDomainError("input \(name) has \(values.count) values but the model's input has \(channels) channels")
                }
            }
        case .range(let low, let high):
            guard low.isFinite, high.isFinite, low < high else {
                throw InputDomainError("input range \(low),\(high) must be two finite numbers, low < high")
            }
        }
        return self
    }

    /// The normalized range of channel `c`: [(0 − mean)/std, (1 − mean)/std], or the stated range.
    public func channelRange(_ c: Int) -> ClosedRange<Float> {
        switch self {
        case .normalized(let mean, let std):
            let m = mean.count == 1 ? mean[0] : mean[c], s = std.count == 1 ? std[0] : std[c]
            return ((0 - m) / s)...((1 - m) / s)
        case .range(let low, let high):
            return low...high
        }
    }

    /// Per-channel mean and std in the [0, 1] pixel scale that map pixels onto this domain (a range [low, high] is
    /// pixels spread linearly over it).
    public var normalization: (mean: [Float], std: [Float]) {
        switch self {
        case .normalized(let mean, let std): return (mean, std)
        case .range(let low, let high): return ([-low / (high - low)], [1 / (high - low)])
        }
    }

    /// The range covering every channel (what a per-tensor input quantizer needs).
    public func range(channels: Int) -> ClosedRange<Float> {
        let ranges = (0..<max(channels, 1)).map(channelRange)
        return ranges.map(\.lowerBound).min()!...ranges.map(\.upperBound).max()!
    }

    /// "(x/255 − 0.286) / 0.353" and the like.
    public var description: String {
        func list(_ values: [Float]) -> String { values.map { "\($0)" }.joined(separator: ",") }
        switch self {
        case .normalized(let mean, let std):
            if mean == [0] && std == [1] { return "x/255" }
            return "(x/255 - \(list(mean))) / \(list(std))"
        case .range(let low, let high):
            return "range [\(low), \(high)]"
        }
    }

    // MARK: - Metadata

    /// Metadata keys that carry the domain: `kiln.input_mean` and `kiln.input_std` (comma-separated, [0, 1] pixel
    /// scale), or `kiln.input_range` ("low,high").
    public static let meanKey = "kiln.input_mean", stdKey = "kiln.input_std", rangeKey = "kiln.input_range"

    /// The domain a model's metadata states, nil if it states none; throws if the entries are malformed.
    public init?(metadata: [String: String]) throws {
        func floats(_ key: String) throws -> [Float]? {
            guard let text = metadata[key] else { return nil }
            let values = text.split(separator: ",").map { Float(String($0.filter { $0 != " " })) }
            guard !values.isEmpty, values.allSatisfy({ $0 != nil }) else {
                throw InputDomainError("metadata \(key) = '\(text)' is not a comma-separated list of numbers")
            }
            return values.map { $0! }
        }
        if let range = try floats(InputDomain.rangeKey) {
            guard range.count == 2 else { throw InputDomainError("metadata \(InputDomain.rangeKey) needs two numbers, low,high") }
            self = try InputDomain.range(low: range[0], high: range[1]).validated()
            return
        }
        let mean = try floats(InputDomain.meanKey), std = try floats(InputDomain.stdKey)
        guard mean != nil || std != nil else { return nil }
        guard let mean, let std else {
            throw InputDomainError("metadata has \(mean == nil ? InputDomain.stdKey : InputDomain.meanKey) without \(mean == nil ? InputDomain.meanKey : InputDomain.stdKey)")
        }
        self = try InputDomain.normalized(mean: mean, std: std).validated()
    }

    /// The metadata entries that state this domain.
    public var metadata: [String: String] {
        func list(_ values: [Float]) -> String { values.map { "\($0)" }.joined(separator: ",") }
        switch self {
        case .normalized(let mean, let std): return [InputDomain.meanKey: list(mean), InputDomain.stdKey: list(std)]
        case .range(let low, let high): return [InputDomain.rangeKey: "\(low),\(high)"]
        }
    }

    /// `metadata` without any domain entries, then with this domain's.
    public func written(into metadata: [String: String]) -> [String: String] {
        var result = metadata.filter { ![InputDomain.meanKey, InputDomain.stdKey, InputDomain.rangeKey].contains($0.key) }
        result.merge(self.metadata) { $1 }
        return result
    }
}

/// A malformed input domain (flags or metadata).
public struct InputDomainError: Error, CustomStringConvertible, Equatable {
    /// What is wrong.
    public var message: String
    /// Creates the error.
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
