import ArgumentParser
import Foundation
import KilnGraph
import KilnONNX
import KilnQuant
import KilnStudent
import KilnTensor

/// `kiln synthesize TEACHER.onnx -o calib.npy [--shard I/N]`, `kiln synthesize --merge part0.npy … -o calib.npy`.
struct SynthesizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "synthesize",
        abstract: "Make calibration images without real data, from the teacher's BatchNorm statistics.",
        discussion: """
            genie (default): for each batch a fresh generator and learnable latents are optimised with Adam so that \
            the batch's per-channel mean and std at every BatchNorm input match the running statistics (plus each \
            image's channels toward mean 0, std 1), with swing convolution (reflect-pad, random crop) before strided \
            convolutions. zeroq optimises the pixels directly; gaussian draws N(0, 1) noise. The same seed gives the \
            same images on the same machine. The output is written atomically.

            Scale-out: batches are independent and each draws from its own seeded stream, so --shard I/N makes \
            shard I (from 0) of N of the run — a contiguous share of its batches, the same images bit for bit — on \
            any machine, and --merge joins the N shard files (in any order) into exactly the set one run with the \
            same flags (and --threads) makes. A shard file records which run it belongs to in its .npy header; \
            --merge refuses shards of different runs, repeated or missing shards.
            """)

    @Argument(help: "The fp32 teacher (.onnx) with BatchNormalization nodes (not with --merge).")
    var teacher: String?

    @Option(help: ArgumentHelp("Make only shard I of N (I from 0) of the run.", valueName: "I/N"))
    var shard: String?

    @Option(parsing: .upToNextOption, help: ArgumentHelp("Join these shard files into the whole run's images.", valueName: "shard.npy"))
    var merge: [String] = []

    @Option(name: .shortAndLong, help: "Where to write the images (float32 .npy).")
    var output: String

    @Option(help: "Number of images (default: from --budget).")
    var count: Int?

    @Option(help: "genie, zeroq or gaussian.")
    var method: String = "genie"

    @Option(help: "Optimisation steps per batch at most; a batch stops earlier once its loss stops falling (default: from --budget).")
    var iterations: Int?

    @OptionGroup(title: "Budget (how much work synthesis takes)") var budget: BudgetOptions

    @Option(help: "Images per batch.")
    var batch: Int = SynthesisOptions().batch

    @Option(help: "Random seed.")
    var seed: UInt64 = 0

    @Flag(help: "Print one JSON object instead of text.")
    var json = false

    @OptionGroup(title: "Input domain (what real inputs look like)") var domain: InputDomainOptions

    @OptionGroup var compute: ComputeOptions

    func validate() throws {
        if !merge.isEmpty {
            guard teacher == nil, shard == nil else { throw ValidationError("--merge takes shard files only: no teacher, no --shard") }
            return
        }
        guard teacher != nil else { throw ValidationError("give the teacher (.onnx), or --merge with shard files") }
        _ = try parsedShard()
        _ = try domain.stated()
        guard SynthesisMethod(rawValue: method) != nil else { throw ValidationError("--method must be genie, zeroq or gaussian") }
        guard (count ?? 1) >= 1, (iterations ?? 1) >= 1, batch >= 2 else { throw ValidationError("--count and --iterations must be ≥ 1, --batch ≥ 2") }
        guard shard == nil || budget.timeLimit == nil else {
            throw ValidationError("--time-limit makes the images depend on the machine's speed, so shards of such a run cannot join into one run's images: give --shard without it")
        }
    }

    /// `--shard I/N` as a shard (nil without the flag).
    func parsedShard() throws -> SynthesisShard? {
        guard let shard else { return nil }
        let parts = shard.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, let index = Int(parts[0]), let count = Int(parts[1]), count >= 1, (0..<count).contains(index) else {
            throw ValidationError("--shard must be I/N with 0 ≤ I < N, e.g. 0/4; got '\(shard)'")
        }
        return SynthesisShard(index: index, count: count)
    }

    func run() throws {
        try reportingErrors {
            if !merge.isEmpty {
                let merged = try ShardFiles.merge(merge)
                try NPY.write(merged.images, to: output)
                if json {
                    try printJSON(merged.summary(output: output))
                } else {
                    print("merged \(merge.count) shards → \(output): \(merged.images.shape[0]) images (\(merged.run))")
                }
                return
            }
            guard let teacher else { throw ValidationError("give the teacher (.onnx)") }
            try compute.apply()
            let graph = try importTeacher(try ONNXModel(contentsOf: teacher))
            let plan = budget.plan(for: graph)
            if count == nil || iterations == nil { budget.report(for: graph) }
            let count = self.count ?? plan.images, iterations = self.iterations ?? plan.iterations
            var options = SynthesisOptions(method: SynthesisMethod(rawValue: method)!, count: count, iterations: iterations,
                                           batch: batch, seed: seed)
            options.deadline = budget.timeLimit.map { Deadline(secondsFromNow: $0) }
            options.plateau = budget.plateau
            options.inputDomain = try domain.resolve(metadata: graph.metadata, channels: graph.inputChannels, file: teacher)?.domain
            options.shard = try parsedShard()
            let result = try Synthesis.run(graph, options: options, teacher: teacher)
            // A shard records which shard of which run it is, for --merge.
            let note = try options.shard.map { shard in
                try ShardNote(shard: shard.index, of: shard.count,
                              run: ShardFiles.runIdentity(teacher: teacher, options: options, threads: compute.threads)).encoded()
            }
            try NPY.write(result.images, to: output, note: note)
            let summary = SynthesisSummary(teacher: teacher, output: output, method: method, count: count,
                                           shard: options.shard.map { "\($0.index)/\($0.count)" }, images: result.images.shape[0],
                                           iterations: options.method == .gaussian ? 0 : iterations, iterationsRun: result.iterationsRun,
                                           batch: min(batch, count), seed: seed,
                                           initialLoss: result.initialLosses, finalLoss: result.finalLosses,
                                           secondsPer100Iterations: result.secondsPer100Iterations)
            if json {
                try printJSON(summary)
            } else {
                print(summary.text)
            }
        }
    }
}

/// Synthesis with a progress bar on stderr, shared by `synthesize` and `quantize`.
enum Synthesis {
    static func run(_ graph: Graph, options: SynthesisOptions, teacher: String) throws -> SynthesisResult {
        let batches = (options.count + options.batch - 1) / options.batch
        let bar = Progress(label: "synthesize", total: batches * options.iterations)
        defer { bar.finish() }
        do {
            return try Synthesizer.synthesize(graph, options: options) { p in
                bar.update(p.batch * p.iterations + p.iteration + 1,
                           detail: String(format: "batch %d/%d iteration %d loss %.4g", p.batch + 1, p.batches, p.iteration + 1, p.loss))
            }
        } catch let error as QuantizeError {
            throw DataFileError(file: teacher, error.message)
        }
    }
}

/// What `kiln synthesize` reports.
struct SynthesisSummary: Encodable {
    var teacher: String
    var output: String
    var method: String
    var count: Int
    /// "I/N" for a shard of the run, which holds `images` of its `count`.
    var shard: String?
    var images: Int
    /// Iterations per batch at most, and how many each batch ran (it stops on a plateau or the time limit).
    var iterations: Int
    var iterationsRun: [Int]
    var batch: Int
    var seed: UInt64
    var initialLoss: [Float]
    var finalLoss: [Float]
    var secondsPer100Iterations: Double?

    var text: String {
        var lines = [shard.map { "\(method): shard \($0) of the run, \(images) of its \(count) images from \(teacher) → \(output) (seed \(seed))" }
                     ?? "\(method): \(count) images from \(teacher) → \(output) (seed \(seed))"]
        if !finalLoss.isEmpty {
            let first = initialLoss.reduce(0, +) / Float(initialLoss.count), last = finalLoss.reduce(0, +) / Float(finalLoss.count)
            lines.append(String(format: "BatchNorm-statistics loss: %.4g → %.4g (%.0f× lower), mean over %d batches", first, last,
                                first / max(last, 1e-12), finalLoss.count))
            let run = iterationsRun.reduce(0, +)
            if run < iterations * iterationsRun.count {
                lines.append("iterations run per batch: \(iterationsRun.map(String.init).joined(separator: ", ")) of at most \(iterations) (plateau or time limit)")
            }
        }
        if let secondsPer100Iterations {
            lines.append(String(format: "%.1f s per 100 iterations at batch %d", secondsPer100Iterations, batch))
        }
        return lines.joined(separator: "\n")
    }
}

/// What a shard file of `kiln synthesize --shard` records in its .npy header: which shard it is and of which run.
struct ShardNote: Codable, Equatable {
    var shard: Int
    var of: Int
    /// Everything that decides the run's images: the teacher's size and CRC-32, method, counts, seed, domain, threads.
    var run: String

    static let prefix = "kiln-shard "

    func encoded() throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return Self.prefix + String(decoding: try encoder.encode(self), as: UTF8.self)
    }

    /// The note of a shard file, or nil when the header's note is not one.
    static func decode(_ note: String?) -> ShardNote? {
        guard let note, note.hasPrefix(prefix) else { return nil }
        return try? JSONDecoder().decode(ShardNote.self, from: Data(note.dropFirst(prefix.count).utf8))
    }
}

/// Joining shard files into the run they came from.
enum ShardFiles {
    /// The run a shard belongs to, as text: two shards of one run agree on it, shards of different runs do not.
    static func runIdentity(teacher: String, options: SynthesisOptions, threads: Int?) throws -> String {
        let bytes: Data
        do {
            bytes = try Data(contentsOf: URL(fileURLWithPath: teacher))
        } catch {
            throw DataFileError(file: teacher, "cannot read: \(error.localizedDescription)")
        }
        let teacherDigest = String(format: "%08x", crc32(bytes))
        return "teacher \(bytes.count) bytes crc32 \(teacherDigest), \(options.method.rawValue), \(options.count) images, "
            + "batch \(options.batch), \(options.iterations) iterations\(options.plateau == nil ? "" : " or a plateau"), seed \(options.seed), "
            + "domain \(options.inputDomain?.description ?? "unstated"), threads \(threads.map(String.init) ?? "all")"
    }

    /// The merged images and the run they make.
    struct Merged {
        var images: Tensor
        var run: String

        func summary(output: String) -> MergeSummary {
            MergeSummary(output: output, images: images.shape[0], run: run)
        }
    }

    /// The shards' images in shard order, after checking that they are all the shards of one run, each once.
    static func merge(_ files: [String]) throws -> Merged {
        var shards: [(note: ShardNote, file: String, images: Tensor)] = []
        for file in files {
            let array = try NPY.read(file)
            guard let note = ShardNote.decode(array.note) else {
                throw DataFileError(file: file, "not a shard of `kiln synthesize --shard I/N`: its .npy header has no kiln shard note")
            }
            guard note.of >= 1, (0..<note.of).contains(note.shard) else {
                throw DataFileError(file: file, "its note names shard \(note.shard) of \(note.of), which does not exist")
            }
            if let first = shards.first {
                guard note.run == first.note.run, note.of == first.note.of else {
                    throw DataFileError(file: file, "shard \(note.shard)/\(note.of) of another run than \(first.file) "
                                        + "(\(note.run); \(first.file): \(first.note.run), \(first.note.of) shards)")
                }
                if let twin = shards.first(where: { $0.note.shard == note.shard }) {
                    throw DataFileError(file: file, "shard \(note.shard)/\(note.of) given twice (also \(twin.file))")
                }
            }
            let images = try array.float32Tensor(file: file)
            if let first = shards.first, Array(images.shape.dropFirst()) != Array(first.images.shape.dropFirst()) {
                throw DataFileError(file: file, "images of shape \(images.shape.shapeDescription), \(first.file) has \(first.images.shape.shapeDescription)")
            }
            shards.append((note, file, images))
        }
        let of = shards[0].note.of
        let missing = Set(0..<of).subtracting(shards.map(\.note.shard)).sorted()
        guard missing.isEmpty else {
            throw DataFileError(file: files[0], "shards \(missing.map { "\($0)/\(of)" }.joined(separator: ", ")) of its run are missing")
        }
        shards.sort { $0.note.shard < $1.note.shard }
        let sample = Array(shards[0].images.shape.dropFirst())
        let count = shards.reduce(0) { $0 + $1.images.shape[0] }
        return Merged(images: Tensor(shape: [count] + sample, scalars: shards.flatMap(\.images.scalars)), run: shards[0].note.run)
    }
}

/// What `kiln synthesize --merge` reports.
struct MergeSummary: Encodable {
    var output: String
    var images: Int
    var run: String
}
