import Foundation
import KilnRuntime
import Synchronization
import Testing

@Suite("reliability")
struct ReliabilityTests {
    @Test("8 threads × 10k inferences on one model (the committed student) are bit-identical to one thread")
    func manyThreads() throws {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("models/students/resnet20-w8a8.kiln")
        let model = try KilnModel(contentsOf: url, options: KilnModel.Options(threads: 1))
        let size = model.inputs[0].sampleCount
        // 64 distinct inputs in the normalized pixel range, and their outputs from a single thread.
        var state: UInt64 = 42
        let inputs: [[Float]] = (0..<64).map { _ in
            (0..<size).map { _ in
                state = state &* 6364136223846793005 &+ 1442695040888963407
                return Float(state >> 40) / Float(1 << 24) * 3.6 - 0.8
            }
        }
        let reference = model.makeContext()
        let expected = try inputs.map { try reference.predict($0) }
        let mismatches = Mutex(0), failures = Mutex<[String]>([])
        let group = DispatchGroup()
        for t in 0..<8 {
            group.enter()
            let thread = Thread {
                defer { group.leave() }
                let context = model.makeContext()
                var wrong = 0
                for i in 0..<10_000 {
                    let k = (i * 7 + t * 13) % inputs.count
                    do {
                        if try context.predict(inputs[k]) != expected[k] { wrong += 1 }
                    } catch {
                        failures.withLock { $0.append("\(error)") }
                        return
                    }
                }
                mismatches.withLock { $0 += wrong }
            }
            thread.stackSize = 1 << 20
            thread.start()
        }
        group.wait()
        #expect(failures.withLock { $0 }.isEmpty)
        #expect(mismatches.withLock { $0 } == 0)
    }
}
