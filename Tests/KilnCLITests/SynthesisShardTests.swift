import Dispatch
import Foundation
import KilnTensor
import KilnTestSupport
import Synchronization
import Testing

@Suite("kiln synthesize --shard and --merge")
struct SynthesisShardTests {
    /// A small genie run of the committed ResNet-20 teacher: 10 images in batches of 4 (4 + 4 + 2), one thread.
    static let flags = ["--count", "10", "--batch", "4", "--iterations", "3", "--seed", "7", "--threads", "1"]

    @Test("three shard processes run side by side and merge, in any order, into exactly the images of one process")
    func shardsMergeIntoOneRun() throws {
        let whole = CLI.temporary("synthesis-whole.npy")
        let parts = (0..<3).map { CLI.temporary("synthesis-part\($0).npy") }
        let merged = CLI.temporary("synthesis-merged.npy")
        defer { for file in [whole, merged] + parts { try? FileManager.default.removeItem(atPath: file) } }

        let single = try CLI.run(["synthesize", CLI.teacher, "-o", whole] + Self.flags)
        #expect(single.status == 0, "\(single.stderr)")
        let results = Mutex([Processes.Result?](repeating: nil, count: 3))
        DispatchQueue.concurrentPerform(iterations: 3) { index in
            let result = try? CLI.run(["synthesize", CLI.teacher, "-o", parts[index], "--shard", "\(index)/3"] + Self.flags)
            results.withLock { $0[index] = result }
        }
        for (index, result) in results.withLock({ $0 }).enumerated() {
            #expect(result?.status == 0, "shard \(index): \(result?.stderr ?? "did not run")")
        }
        // Shards hold their batches' images: 3 batches over 3 shards, one batch each.
        #expect(try NPY.readTensor(parts[0]).shape == [4, 1, 28, 28])
        #expect(try NPY.readTensor(parts[2]).shape == [2, 1, 28, 28])

        let merge = try CLI.run(["synthesize", "--merge", parts[2], parts[0], parts[1], "-o", merged])
        #expect(merge.status == 0, "\(merge.stderr)")
        #expect(merge.stdout.contains("10 images"), "\(merge.stdout)")
        let one = try Data(contentsOf: URL(fileURLWithPath: whole)), joined = try Data(contentsOf: URL(fileURLWithPath: merged))
        #expect(try NPY.readTensor(whole).shape == [10, 1, 28, 28])
        #expect(joined == one, "the merged shards differ from one run")
    }

    @Test("merging refuses plain files, shards of another run, repeated and missing shards; bad --shard is a clear error")
    func badMerges() throws {
        let parts = (0..<2).map { CLI.temporary("synthesis-bad-part\($0).npy") }
        let other = CLI.temporary("synthesis-bad-other.npy"), plain = CLI.temporary("synthesis-bad-plain.npy")
        let output = CLI.temporary("synthesis-bad-merged.npy")
        defer { for file in parts + [other, plain, output] { try? FileManager.default.removeItem(atPath: file) } }
        let gaussian = ["--method", "gaussian", "--count", "8", "--batch", "4", "--threads", "1"]
        for (index, part) in parts.enumerated() {
            #expect(try CLI.run(["synthesize", CLI.teacher, "-o", part, "--shard", "\(index)/2"] + gaussian).status == 0)
        }
        #expect(try CLI.run(["synthesize", CLI.teacher, "-o", other, "--shard", "1/2", "--seed", "5"] + gaussian).status == 0)
        #expect(try CLI.run(["synthesize", CLI.teacher, "-o", plain] + gaussian).status == 0)

        try CLI.expectFailure(["synthesize", "--merge", parts[0], plain, "-o", output], [plain, "no kiln shard note"])
        try CLI.expectFailure(["synthesize", "--merge", parts[0], other, "-o", output], [other, "another run", "seed 5"])
        try CLI.expectFailure(["synthesize", "--merge", parts[0], parts[0], parts[1], "-o", output], ["shard 0/2 given twice"])
        try CLI.expectFailure(["synthesize", "--merge", parts[1], "-o", output], [parts[1], "shards 0/2 of its run are missing"])
        #expect(!FileManager.default.fileExists(atPath: output), "a refused merge must not write its output")

        try CLI.expectFailure(["synthesize", CLI.teacher, "-o", output, "--shard", "0/3"] + gaussian,
                              ["shard 0/3 does not exist", "2 batches"])
        // Flag errors (argument parsing): non-zero exit and the reason.
        for (arguments, fragment) in [(["synthesize", CLI.teacher, "-o", output, "--shard", "2/2"] + gaussian, "--shard must be I/N"),
                                      (["synthesize", CLI.teacher, "-o", output, "--shard", "1"] + gaussian, "--shard must be I/N"),
                                      (["synthesize", "--merge", parts[0], "--shard", "0/2", "-o", output], "--merge takes shard files only"),
                                      (["synthesize", "-o", output], "give the teacher")] {
            let result = try CLI.run(arguments)
            #expect(result.status != 0 && result.stderr.contains(fragment), "\(arguments): \(result.stderr)")
        }
        #expect(!FileManager.default.fileExists(atPath: output))
    }
}
