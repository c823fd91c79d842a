import Foundation
import KilnGraph
import KilnStudent
import KilnTensor
import Testing

@Suite("data files")
struct DataFileTests {
    let tensor = Tensor(shape: [2, 1, 3], scalars: [1, -2, 3.5, 0, 1e-7, -1e9])

    @Test("a float32 .npy round-trips bit for bit")
    func roundTrip() throws {
        let data = NPY.encode(tensor)
        let array = try NPY.parse(data, file: "x.npy")
        #expect(array.shape == [2, 1, 3] && array.dtype == .float32)
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("kiln-roundtrip-\(getpid()).npy").path
        try NPY.write(tensor, to: path)
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect(try NPY.readTensor(path) == tensor)
    }

    /// The error message for bytes that are not a valid .npy file.
    func failure(_ bytes: Data) -> String? {
        do {
            _ = try NPY.parse(bytes, file: "bad.npy")
            return nil
        } catch {
            return "\(error)"
        }
    }

    @Test("bad .npy files give errors naming the file and the problem")
    func badFiles() {
        var data = NPY.encode(tensor)
        #expect(failure(Data())?.contains("bad.npy: file is empty") == true)
        #expect(failure(Data("hello world".utf8))?.contains("bad magic") == true)
        #expect(failure(data.prefix(40))?.contains("runs past the end") == true)
        #expect(failure(data.dropLast(4))?.contains("needs 24 data bytes") == true)
        var wrongVersion = data
        wrongVersion[6] = 9
        #expect(failure(wrongVersion)?.contains("version 9") == true)
        data.replaceSubrange(data.firstRange(of: Data("<f4".utf8))!, with: Data("<c8".utf8))
        #expect(failure(data)?.contains("unsupported dtype '<c8'") == true)
    }

    @Test("labels read from int64, int32 and uint8 arrays; float labels are refused")
    func labels() throws {
        func npy(_ descr: String, _ payload: [UInt8], count: Int) -> Data {
            var header = "{'descr': '\(descr)', 'fortran_order': False, 'shape': (\(count),), }"
            header += String(repeating: " ", count: (64 - (10 + header.utf8.count + 1) % 64) % 64) + "\n"
            return Data([0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, 1, 0, UInt8(header.utf8.count), 0]) + Data(header.utf8) + Data(payload)
        }
        let dir = FileManager.default.temporaryDirectory
        for (descr, payload) in [("<i8", [UInt8]([3, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0])),
                                 ("<i4", [3, 0, 0, 0, 9, 0, 0, 0]), ("|u1", [3, 9])] {
            let path = dir.appendingPathComponent("kiln-labels-\(getpid()).npy").path
            try npy(descr, payload, count: 2).write(to: URL(fileURLWithPath: path))
            defer { try? FileManager.default.removeItem(atPath: path) }
            #expect(try NPY.readLabels(path) == [3, 9])
        }
        let path = dir.appendingPathComponent("kiln-float-labels-\(getpid()).npy").path
        try NPY.encode(Tensor(shape: [2], scalars: [1, 2])).write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect(throws: DataFileError.self) { try NPY.readLabels(path) }
    }

    @Test("Fashion-MNIST loads from Debian's gzip IDX files")
    func fashionMNIST() throws {
        let test = try FashionMNIST(split: .test)
        #expect(test.count == 10_000 && test.images.count == 10_000 * 784)
        #expect(Array(test.labels.prefix(5)) == [9, 2, 1, 1, 6])
        let batch = test.tensor(0..<2, mean: 0.5, std: 0.5)
        #expect(batch.shape == [2, 1, 28, 28] && batch.scalars.allSatisfy { $0 >= -1 && $0 <= 1 })
    }

    @Test("a corrupt IDX file is an error, not a crash")
    func badIDX() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("kiln-bad-\(getpid()).idx").path
        try Data([0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 28, 0, 0, 0, 28, 1, 2, 3]).write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect(throws: DataFileError.self) { try IDX.read(path) }
    }
}
