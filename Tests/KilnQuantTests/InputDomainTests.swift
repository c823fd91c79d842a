import Foundation
import KilnGraph
import KilnQuant
import KilnRuntime
import KilnTensor
import KilnTestSupport
import Testing

@Suite("input domain")
struct InputDomainTests {
    @Test("domains from metadata, presets and per-channel lists; malformed ones are errors")
    func parsing() throws {
        let imagenet = try #require(InputDomain(preset: "imagenet"))
        #expect(imagenet.range(channels: 3).lowerBound == (0 - Float(0.485)) / Float(0.229))
        #expect(imagenet.range(channels: 3).upperBound == (1 - Float(0.406)) / Float(0.225))
        #expect(try InputDomain(metadata: imagenet.metadata) == imagenet)
        #expect(try InputDomain(metadata: ["kiln.input_mean": "0.286", "kiln.input_std": "0.353"]) == .normalized(mean: [0.286], std: [0.353]))
        #expect(try InputDomain(metadata: ["kiln.input_range": "-1,1"]) == .range(low: -1, high: 1))
        #expect(try InputDomain(metadata: [:]) == nil)
        #expect(InputDomain(preset: "unit")!.range(channels: 1) == 0...1)
        #expect(InputDomain(preset: "signed-unit")!.range(channels: 1) == -1...1)
        #expect(InputDomain.range(low: 0, high: 255).normalization.std == [1 / 255])
        #expect(throws: InputDomainError.self) { try InputDomain(metadata: ["kiln.input_mean": "0.5"]) }
        #expect(throws: InputDomainError.self) { try InputDomain(metadata: ["kiln.input_mean": "a,b", "kiln.input_std": "1"]) }
        #expect(throws: InputDomainError.self) { try InputDomain.normalized(mean: [0], std: [0]).validated() }
        #expect(throws: InputDomainError.self) { try imagenet.validated(channels: 1) }
        #expect(throws: InputDomainError.self) { try InputDomain.range(low: 1, high: 1).validated() }
    }

    @Test("the first BatchNorm gives back the real inputs' mean and std", arguments: Repository.fashionTeachers)
    func estimatedStatistics(_ file: String) throws {
        // The committed teachers were trained on (x/255 − 0.286) / 0.353: mean 0, std 1 over the training set.
        let estimate = try #require(InputStatistics.estimate(try Repository.teacher(file)))
        print("\(file): estimated input mean \(estimate.mean), std \(estimate.std), ρ \(estimate.neighbourCorrelation)")
        #expect(abs(estimate.mean[0]) <= 0.05)
        #expect(abs(estimate.std - 1) <= 0.1)
    }

    @Test("EfficientNet-Lite0's first BatchNorm gives ImageNet's per-channel means in its normalization")
    func estimatedImageNetStatistics() throws {
        let estimate = try #require(InputStatistics.estimate(try Repository.teacher("efficientnet_lite0.onnx")))
        // ImageNet's pixel means 0.485, 0.456, 0.406 in this model's normalization (x/255 − 127/255) / (128/255).
        let truth: [Float] = [0.485, 0.456, 0.406].map { ($0 - 127 / 255) / (128 / 255) }
        print("EfficientNet-Lite0: estimated mean \(estimate.mean) (ImageNet \(truth)), std \(estimate.std)")
        for (a, b) in zip(estimate.mean, truth) { #expect(abs(a - b) <= 0.1) }
        #expect(estimate.std > 0.35 && estimate.std < 0.7)
    }

    @Test("without a domain the input quantizer covers the estimated mean −2.5 to +3 std; with one, the domain's range")
    func inputRangeChoice() throws {
        var teacher = try Repository.teacher("resnet20.onnx")
        teacher.metadata = [:]
        let calibration = try NPY.readTensor(Repository.path("calibration/genie-resnet20-128.npy"))
        let unknown = try InputRange.choose(nil, teacher: teacher, calibration: calibration)
        #expect(unknown.domain == nil)
        #expect(unknown.assumption?.contains("first BatchNorm") == true)
        // Real inputs of this teacher reach 2.02 (white pixels); the synthetic set alone stops near 1.4.
        #expect(unknown.range.upperBound >= 2.02 && unknown.range.lowerBound <= -0.81)
        let given = try InputRange.choose(.normalized(mean: [0.286], std: [0.353]), teacher: teacher, calibration: calibration)
        #expect(given.assumption == nil && abs(given.range.upperBound - (1 - 0.286) / 0.353) < 1e-6)
    }

    @Test("synthesis inside a known domain keeps every image in its range")
    func synthesisInDomain() throws {
        let teacher = try Repository.teacher("resnet20.onnx")
        var options = SynthesisOptions(count: 4, iterations: 5, batch: 4)
        options.inputDomain = .normalized(mean: [0.286], std: [0.353])
        let images = try Synthesizer.synthesize(teacher, options: options).images
        let (low, high) = ((0 - 0.286) / 0.353 as Float, (1 - 0.286) / 0.353 as Float)
        #expect(images.scalars.allSatisfy { $0 >= low - 1e-5 && $0 <= high + 1e-5 })
    }
}
