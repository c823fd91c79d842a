import Foundation
@testable import KilnRuntime
@testable import KilnStudent
import Testing

/// A small student exercising every layer kind: quantize → conv (ReLU) and depthwise conv → add → max pool →
/// average pool → concat → global average pool → reshape → gemm → dequantize.
enum TinyStudent {
    static func conv(_ m: Int, _ cin: Int, group: Int = 1, kernel: Int = 3, seed: Int, clamp: ClosedRange<Int32> = 0...255) -> ConvLayer {
        let k = kernel * kernel * cin / group
        let weights = (0..<(m * k)).map { Int8(truncatingIfNeeded: ($0 * 37 + seed * 11) % 255 - 127) }
        return ConvLayer(outputChannels: m, kernel: [kernel, kernel], strides: [1, 1], pads: [kernel / 2, kernel / 2, kernel / 2, kernel / 2],
                         dilations: [1, 1], group: group, clamp: clamp, weights: weights,
                         bias: (0..<m).map { Int32($0 * 100 - 150) }, multipliers: (0..<m).map { 0.0004 + Float($0) * 0.0001 },
                         weightScales: (0..<m).map { 0.01 + Float($0) * 0.001 })
    }

    static func make() -> StudentModel {
        let q = { (s: Float, z: Int32) in Quantization(scale: s, zeroPoint: z) }
        let activations = [
            ActivationInfo(name: "input", shape: [-1, 4, 6, 6], type: .float32),                 // 0
            ActivationInfo(name: "x", shape: [-1, 4, 6, 6], type: .uint8, quantization: q(0.02, 128)),  // 1
            ActivationInfo(name: "a", shape: [-1, 4, 6, 6], type: .uint8, quantization: q(0.05, 0)),     // 2
            ActivationInfo(name: "b", shape: [-1, 4, 6, 6], type: .uint8, quantization: q(0.04, 100)),   // 3
            ActivationInfo(name: "sum", shape: [-1, 4, 6, 6], type: .uint8, quantization: q(0.06, 0)),   // 4
            ActivationInfo(name: "max", shape: [-1, 4, 3, 3], type: .uint8, quantization: q(0.06, 0)),   // 5
            ActivationInfo(name: "avg", shape: [-1, 4, 3, 3], type: .uint8, quantization: q(0.03, 0)),   // 6
            ActivationInfo(name: "cat", shape: [-1, 8, 3, 3], type: .uint8, quantization: q(0.05, 0)),   // 7
            ActivationInfo(name: "gap", shape: [-1, 8, 1, 1], type: .uint8, quantization: q(0.02, 0)),   // 8
            ActivationInfo(name: "flat", shape: [-1, 8], type: .uint8, quantization: q(0.02, 0)),        // 9
            ActivationInfo(name: "fc", shape: [-1, 3], type: .uint8, quantization: q(0.1, 120)),         // 10
            ActivationInfo(name: "logits", shape: [-1, 3], type: .float32),                              // 11
        ]
        var gemm = conv(3, 8, kernel: 1, seed: 5)
        gemm.pads = [0, 0, 0, 0]
        let window = PoolWindow(kernel: [2, 2], strides: [2, 2], pads: [0, 0, 0, 0], ceilMode: false, countIncludePad: false)
        let layers = [
            Layer(name: "quantize", op: .quantize, inputs: [0], output: 1),
            Layer(name: "conv", op: .conv(conv(4, 4, seed: 1, clamp: 0...255)), inputs: [1], output: 2),
            Layer(name: "depthwise", op: .conv(conv(4, 4, group: 4, seed: 2, clamp: 100...200)), inputs: [1], output: 3),
            Layer(name: "add", op: .add(clamp: 0...255), inputs: [2, 3], output: 4),
            Layer(name: "maxpool", op: .maxPool(window), inputs: [4], output: 5),
            Layer(name: "avgpool", op: .averagePool(window), inputs: [4], output: 6),
            Layer(name: "concat", op: .concat(axis: 1), inputs: [5, 6], output: 7),
            Layer(name: "gap", op: .globalAveragePool, inputs: [7], output: 8),
            Layer(name: "flatten", op: .reshape(shape: [-1, 8]), inputs: [8], output: 9),
            Layer(name: "fc", op: .gemm(gemm), inputs: [9], output: 10),
            Layer(name: "dequantize", op: .dequantize, inputs: [10], output: 11),
        ]
        return StudentModel(activations: activations, layers: layers, inputs: [0], outputs: [11], metadata: ["kiln.test": "tiny"])
    }

    /// Deterministic inputs for `batch` samples.
    static func input(batch: Int) -> [Float] {
        (0..<(batch * 144)).map { Float(($0 * 7919) % 200) / 100 - 1 }
    }
}

@Suite(".kiln file format")
struct KilnFileTests {
    @Test("a student round-trips through the file format unchanged")
    func roundTrip() throws {
        let student = TinyStudent.make()
        let bytes = try KilnFile.encode(student)
        #expect(Array(bytes.prefix(8)) == KilnFile.magic)
        #expect(try KilnFile.decode(bytes) == student)
    }

    @Test("every section starts 64-byte aligned and parameters are 64-byte aligned")
    func alignment() throws {
        let bytes = try KilnFile.encode(TinyStudent.make())
        let count = Int(UInt32(littleEndianFrom: bytes, at: 16))
        for i in 0..<count {
            let entry = 64 + 32 * i
            let offset = (0..<8).reduce(0) { $0 | Int(bytes[entry + 8 + $1]) << (8 * $1) }
            #expect(offset % 64 == 0)
        }
    }

    func decodeError(_ bytes: [UInt8]) -> String? {
        do {
            _ = try KilnFile.decode(bytes)
            return nil
        } catch {
            return "\(error)"
        }
    }

    @Test("wrong magic, wrong version, truncation")
    func basicErrors() throws {
        let bytes = try KilnFile.encode(TinyStudent.make())
        var magic = bytes
        magic[0] = UInt8(ascii: "X")
        #expect(decodeError(magic) == "not a .kiln file (bad magic at byte 0)")
        var version = bytes
        version[8] = 7
        #expect(decodeError(version)?.contains("format version 7") == true)
        #expect(decodeError([])?.contains("shorter than the 64-byte header") == true)
        for length in stride(from: 1, to: bytes.count, by: 97) {
            #expect(decodeError(Array(bytes.prefix(length))) != nil, "truncated to \(length) bytes")
        }
    }

    @Test("flipping any byte of the header or section table is an error")
    func flippedHeaderBytes() throws {
        let bytes = try KilnFile.encode(TinyStudent.make())
        let tableEnd = 64 + 3 * 32
        for position in 0..<tableEnd {
            for flip: UInt8 in [0x01, 0x80, 0xFF] {
                var corrupt = bytes
                corrupt[position] ^= flip
                #expect(decodeError(corrupt) != nil, "byte \(position) ^ \(flip) went unnoticed")
            }
        }
    }

    @Test("random corruption of the sections is caught (or lands in padding), never a trap")
    func randomCorruption() throws {
        let bytes = try KilnFile.encode(TinyStudent.make())
        var state: UInt64 = 42
        func next() -> Int {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Int(state >> 33)
        }
        var caught = 0
        for _ in 0..<2000 {
            var corrupt = bytes
            let position = 160 + next() % (bytes.count - 160)
            corrupt[position] ^= UInt8(1 + next() % 255)
            if decodeError(corrupt) != nil { caught += 1 } else {
                #expect(try KilnFile.decode(corrupt) == TinyStudent.make(), "an unnoticed flip at \(position) changed the model")
            }
        }
        #expect(caught > 1500)
    }

    /// Re-encodes a valid file after `patch` edits the model section, with fresh checksums, so only validation
    /// (not the CRC) can catch the inconsistency.
    func patchedModelSection(_ patch: (inout [UInt8], Int) -> Void) throws -> [UInt8] {
        var bytes = try KilnFile.encode(TinyStudent.make())
        let offset = (0..<8).reduce(0) { $0 | Int(bytes[64 + 8 + $1]) << (8 * $1) }
        let size = (0..<8).reduce(0) { $0 | Int(bytes[64 + 16 + $1]) << (8 * $1) }
        var section = Array(bytes[offset..<(offset + size)])
        patch(&section, offset)
        bytes.replaceSubrange(offset..<(offset + size), with: section)
        let crc = crc32(section)
        for i in 0..<4 { bytes[64 + 24 + i] = UInt8(truncatingIfNeeded: crc >> (8 * UInt32(i))) }
        let tableCRC = crc32(bytes[64..<(64 + 3 * 32)])
        for i in 0..<4 { bytes[60 + i] = UInt8(truncatingIfNeeded: tableCRC >> (8 * UInt32(i))) }
        return bytes
    }

    @Test("consistent checksums but disagreeing shapes or out-of-range references are rejected")
    func semanticErrors() throws {
        // Activation 1 ('x') is the second tensor record; its first non-batch dimension follows name, type, bits,
        // rank and N.
        let wrongShape = try patchedModelSection { section, _ in
            let firstRecord = 4 + 4 + "input".utf8.count + 1 + 1 + 4 + 4 * 8 + 8
            let channels = firstRecord + 4 + "x".utf8.count + 1 + 1 + 4 + 8
            section[channels] = 5
        }
        let message = decodeError(wrongShape)
        print("wrong shape:", message ?? "accepted")
        #expect(message?.contains("layer 0 ('quantize')") == true)
        let badTensorCount = try patchedModelSection { section, _ in section[0] = 0xFF; section[1] = 0xFF; section[2] = 0xFF }
        #expect(decodeError(badTensorCount)?.contains("exceeds") == true)
    }
}

@Suite("KilnRuntime execution")
struct RuntimeTests {
    @Test("any batch size gives the same rows as one sample at a time")
    func batching() throws {
        let model = try KilnModel(TinyStudent.make())
        let batch = TinyStudent.input(batch: 7)
        let all = try model.predict(batch)
        #expect(all.count == 21)
        let context = model.makeContext()
        for i in 0..<7 {
            let one = try context.predict(Array(batch[(i * 144)..<((i + 1) * 144)]))
            #expect(one == Array(all[(i * 3)..<((i + 1) * 3)]))
        }
        #expect(Set(all).count > 3, "outputs should vary across samples")
    }

    @Test("one model used from 8 threads at once gives identical outputs")
    func concurrency() async throws {
        let model = try KilnModel(TinyStudent.make())
        let input = TinyStudent.input(batch: 5)
        let expected = try model.predict(input)
        try await withThrowingTaskGroup(of: Bool.self) { group in
            for _ in 0..<8 {
                group.addTask {
                    let context = model.makeContext()
                    for _ in 0..<50 where try context.predict(input) != expected { return false }
                    return true
                }
            }
            for try await ok in group { #expect(ok) }
        }
    }

    @Test("a model is freed once its last user lets go, even after predict(); a caller's context keeps it alive")
    func lifetimes() throws {
        let input = TinyStudent.input(batch: 2)
        weak var released: KilnModel?
        var expected: [Float] = []
        do {
            let model = try KilnModel(TinyStudent.make())
            expected = try model.predict(input)
            released = model
        }
        #expect(released == nil, "the model's idle contexts must not keep it alive")
        var context: KilnContext?
        weak var kept: KilnModel?
        do {
            let model = try KilnModel(TinyStudent.make())
            context = model.makeContext()
            kept = model
        }
        #expect(kept != nil)
        #expect(try context?.predict(input) == expected)
        context = nil
        #expect(kept == nil)
    }

    @Test("wrong input sizes are errors")
    func badInputs() throws {
        let model = try KilnModel(TinyStudent.make())
        #expect(throws: KilnRuntimeError.self) { try model.predict([1, 2, 3]) }
        #expect(throws: KilnRuntimeError.self) { try model.predict([]) }
    }

    @Test("the requantization scheme rounds half to even and clamps")
    func requantize() {
        #expect(Requantize.level(5, multiplier: 0.5, zeroPoint: 0, clamp: 0...255) == 2)   // 2.5 → 2
        #expect(Requantize.level(7, multiplier: 0.5, zeroPoint: 0, clamp: 0...255) == 4)   // 3.5 → 4
        #expect(Requantize.level(-100, multiplier: 1, zeroPoint: 10, clamp: 0...255) == 0)
        #expect(Requantize.level(1000, multiplier: 1, zeroPoint: 10, clamp: 0...200) == 200)
        #expect(Requantize.quantize(.nan, Quantization(scale: 1, zeroPoint: 3)) == 0)
        #expect(Requantize.quantize(.infinity, Quantization(scale: 1, zeroPoint: 3)) == 255)
    }
}
