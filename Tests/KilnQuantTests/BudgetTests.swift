import KilnGraph
@testable import KilnQuant
import KilnTensor
import KilnTestSupport
import Testing

@Suite("budgets: presets scaled by the teacher's cost, plateau stop, time limits")
struct BudgetTests {
    @Test("small teachers get the preset; costly ones fewer images (a multiple of 8), then fewer iterations")
    func planScales() {
        // The committed ResNet-20 (31 M MACs and 0.5 M activations at 28×28, generator about 17 M MACs and
        // 0.2 M activations): the whole preset fits every cap.
        let small = QuantizationBudget.ImageCost(macs: 31_000_000, activations: 520_000)
        let smallGenerator = GenieGenerator.cost(latentSize: 256, output: [1, 28, 28])
        for budget in QuantizationBudget.allCases {
            let plan = budget.plan(teacher: small, generator: smallGenerator)
            #expect(plan.images == budget.preset.images && plan.iterations == budget.preset.iterations && !plan.scaledDown)
            #expect(plan.iterationsPerBlock == budget.preset.iterationsPerBlock)
        }
        // ResNet-18 at 224×224 with Genie's generator there (1.11 G MACs, 9.3 M activations): images cut to fit
        // the default cap, iterations kept.
        let generator = GenieGenerator.cost(latentSize: 256, output: [3, 224, 224])
        #expect(generator.macs == 256 * 128 * 56 * 56 + 128 * 64 * 9 * 112 * 112 + 64 * 3 * 9 * 224 * 224)
        #expect(generator.activations == 4 * 128 * 56 * 56 + 128 * 112 * 112 + 3 * 64 * 112 * 112 + 64 * 224 * 224
                + 3 * 3 * 224 * 224)
        let resnet18Cost = QuantizationBudget.ImageCost(macs: 1_814_073_344, activations: 8_231_888)
        let resnet18 = QuantizationBudget.default.plan(teacher: resnet18Cost, generator: generator)
        #expect(resnet18.scaledDown && resnet18.images % 8 == 0 && resnet18.iterations == 200)
        #expect(Double(resnet18.images * resnet18.iterations) * (resnet18Cost + generator).equivalentMACs
                <= QuantizationBudget.default.cap)
        #expect(resnet18.images >= 16 && resnet18.images < 128)
        // EfficientNet-Lite0: a fifth of ResNet-18's multiply-accumulates but three times its activations, so it
        // costs more and gets fewer iterations, not more images.
        let efficientNet = QuantizationBudget.default.plan(
            teacher: .init(macs: 385_187_552, activations: 24_616_883), generator: generator)
        #expect(efficientNet.images == QuantizationBudget.floor.images && efficientNet.iterations < resnet18.iterations)
        // A teacher so costly that the image floor is reached: then the iterations fall, to their floor at most.
        let huge = QuantizationBudget.default.plan(teacher: .init(macs: 40_000_000_000, activations: 0),
                                                   generator: .init(macs: 0, activations: 0))
        #expect(huge.images == QuantizationBudget.floor.images)
        #expect(huge.iterations < 200 && huge.iterations >= QuantizationBudget.floor.iterations)
        // More budget never gives less work.
        let fast = QuantizationBudget.fast.plan(teacher: resnet18Cost, generator: generator)
        let thorough = QuantizationBudget.thorough.plan(teacher: resnet18Cost, generator: generator)
        #expect(fast.images * fast.iterations <= resnet18.images * resnet18.iterations)
        #expect(resnet18.images * resnet18.iterations <= thorough.images * thorough.iterations)
    }

    @Test("a plateau stops once the lowest loss has not fallen by the minimum for `patience` iterations")
    func plateau() {
        // Falling by more than 10% each time, then 39 and 38 (within 10% of 40) around a spike (no improvement):
        // the third step without a 10% fall stops.
        var tracker = PlateauStop.Tracker(PlateauStop(patience: 3, minimumImprovement: 0.1))
        var stops: [Bool] = []
        for loss: Float in [100, 80, 60, 40, 39, 500, 38] { stops.append(tracker.update(loss: loss)) }
        #expect(stops == [false, false, false, false, false, false, true])
        // A non-finite loss never counts as an improvement.
        var other = PlateauStop.Tracker(PlateauStop(patience: 2, minimumImprovement: 0.01))
        stops = []
        for loss: Float in [10, .nan, .infinity] { stops.append(other.update(loss: loss)) }
        #expect(stops == [false, false, true])
    }

    @Test("synthesis stops batches on a plateau, reports the iterations run, and keeps the lowest-loss images")
    func synthesisPlateau() throws {
        let teacher = try Repository.teacher("resnet20.onnx")
        var options = SynthesisOptions(method: .zeroq, count: 4, iterations: 60, batch: 2, seed: 3)
        options.plateau = PlateauStop(patience: 5, minimumImprovement: 0.5)  // stops soon: halving every 5 steps is rare
        var seen: [Int: Int] = [:]
        let result = try Synthesizer.synthesize(teacher, options: options) { p in seen[p.batch, default: 0] += 1 }
        #expect(result.iterationsRun.count == 2)
        #expect(result.iterationsRun.allSatisfy { $0 < 60 && $0 >= 6 })
        #expect(result.iterationsRun == [seen[0]!, seen[1]!])
        #expect(result.iterationsDescription(of: options).hasPrefix("at most 60 iterations, "))
        options.plateau = nil
        let full = try Synthesizer.synthesize(teacher, options: options)
        #expect(full.iterationsRun == [60, 60] && full.iterationsDescription(of: options) == "60 iterations")
        // The same first iterations: a plateau stop only cuts the run short.
        #expect(zip(result.finalLosses, full.finalLosses).allSatisfy { $0 >= $1 })
    }

    @Test("a time limit ends synthesis within its share; a passed deadline still runs one iteration per batch")
    func synthesisDeadline() throws {
        let teacher = try Repository.teacher("resnet20.onnx")
        var options = SynthesisOptions(method: .zeroq, count: 4, iterations: 1_000_000, batch: 2, seed: 3)
        options.plateau = nil
        options.deadline = Deadline(secondsFromNow: 1.5)
        let clock = ContinuousClock(), start = clock.now
        let result = try Synthesizer.synthesize(teacher, options: options)
        let elapsed = clock.now - start
        #expect(elapsed < .seconds(10), "a 1.5 s limit took \(elapsed)")
        #expect(result.iterationsRun.count == 2 && result.iterationsRun.allSatisfy { $0 >= 1 && $0 < 1_000_000 })
        options.deadline = Deadline(secondsFromNow: -1)
        #expect(try Synthesizer.synthesize(teacher, options: options).iterationsRun == [1, 1])
    }

    @Test("a deadline shares the time left equally among the remaining parts")
    func deadlineShares() {
        let deadline = Deadline(secondsFromNow: 100)
        let share = deadline.share(of: 4).secondsLeft
        #expect(share > 24 && share <= 25.01)
        #expect(deadline.share(of: 1).secondsLeft > 99)
        #expect(Deadline(secondsFromNow: -5).share(of: 3).passed)
    }
}
