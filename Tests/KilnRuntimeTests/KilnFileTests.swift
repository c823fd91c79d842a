import Foundation
@testable import KilnRuntime
@testable import KilnStudent
import KilnTestSupport
import Testing

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
