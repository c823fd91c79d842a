import ArgumentParser
import KilnRuntime
import KilnTensor

/// The input-domain flags shared by `quantize`, `synthesize` and `eval`: what a real input looks like.
struct InputDomainOptions: ParsableArguments {
    @Option(name: [.customLong("input-mean"), .customLong("mean")],
            help: "Mean subtracted from pixels in [0, 1], one value or one per channel (e.g. 0.485,0.456,0.406).")
    var mean: String?

    @Option(name: [.customLong("input-std"), .customLong("std")],
            help: "Standard deviation the pixels are divided by, one value or one per channel (e.g. 0.229,0.224,0.225).")
    var std: String?

    @Option(name: .customLong("input-range"), help: "The range of the normalized input tensor, LOW,HIGH (instead of mean and std; write --input-range=-1,1 when LOW is negative).")
    var range: String?

    @Option(help: ArgumentHelp("A named input convention: \(InputDomain.presets.map(\.name).joined(separator: ", ")).",
                               discussion: InputDomain.presets.map { "\($0.name): \($0.summary)" }.joined(separator: "; ")))
    var preprocess: String?

    /// The domain the flags state, nil if they state none.
    func stated() throws -> InputDomain? {
        let given = [preprocess != nil, range != nil, mean != nil || std != nil].filter { $0 }.count
        guard given <= 1 else { throw ValidationError("give one of --preprocess, --input-range or --input-mean/--input-std") }
        if let preprocess {
            guard let domain = InputDomain(preset: preprocess) else {
                throw ValidationError("unknown --preprocess '\(preprocess)' (known: \(InputDomain.presets.map(\.name).joined(separator: ", ")))")
            }
            return domain
        }
        func numbers(_ text: String, _ flag: String) throws -> [Float] {
            let values = text.split(separator: ",").map { Float($0.filter { $0 != " " }) }
            guard !values.isEmpty, values.allSatisfy({ $0 != nil }) else {
                throw ValidationError("\(flag) '\(text)' is not a comma-separated list of numbers")
            }
            return values.map { $0! }
        }
        do {
            if let range {
                let bounds = try numbers(range, "--input-range")
                guard bounds.count == 2 else { throw ValidationError("--input-range needs LOW,HIGH") }
                return try InputDomain.range(low: bounds[0], high: bounds[1]).validated()
            }
            guard mean != nil || std != nil else { return nil }
            guard let mean, let std else { throw ValidationError("--input-mean and --input-std go together") }
            return try InputDomain.normalized(mean: try numbers(mean, "--input-mean"), std: try numbers(std, "--input-std")).validated()
        } catch let error as InputDomainError {
            throw ValidationError(error.message)
        }
    }

    /// The stated domain, else the one the model's metadata records; with where it came from ("flags", "model
    /// metadata"). Throws if the domain does not fit a model input of `channels` channels.
    func resolve(metadata: [String: String], channels: Int?, file: String) throws -> (domain: InputDomain, source: String)? {
        do {
            if let domain = try stated() { return (try domain.validated(channels: channels), "flags") }
            if let domain = try InputDomain(metadata: metadata) { return (try domain.validated(channels: channels), "model metadata") }
            return nil
        } catch let error as InputDomainError {
            throw DataFileError(file: file, error.message)
        }
    }
}
