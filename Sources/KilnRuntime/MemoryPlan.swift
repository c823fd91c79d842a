import CKilnKernels
import FoundationEssentials
import KilnStudent
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Where each uint8 activation lives in one arena for a given batch size: tensors whose lifetimes do not
/// overlap share bytes (greedy by size, first fit).
struct MemoryPlan {
    /// Output pixels per indirect-GEMM tile.
    static let tileRows = 32
    let batch: Int
    var offsets: [Int]
    var scratchOffset = 0
    /// Per-worker tiles of input pointers (tileRows × most taps each), from `tileOffset`.
    var tileOffset = 0
    /// A row of the input zero point, for padding cells.
    var zeroOffset = 0
    /// Per-worker im2col rows (tileRows × the longest im2col row each), from `im2colOffset`.
    var im2colOffset = 0
    /// Per conv layer with cached input pointers: where its batch × pixels × taps pointers start.
    var indirectionOffsets: [Int: Int] = [:]
    /// Most bytes of cached input pointers per context.
    static let indirectionBudget = 1 << 20
    var size = 0

    init(_ student: StudentModel, batch: Int, compiled: CompiledModel, threads: Int) {
        self.batch = batch
        let count = student.activations.count
        offsets = [Int](repeating: 0, count: count)
        var first = [Int](repeating: Int.max, count: count), last = [Int](repeating: -1, count: count)
        for (index, layer) in student.layers.enumerated() {
            first[layer.output] = min(first[layer.output], index)
            last[layer.output] = max(last[layer.output], index)
            for input in layer.inputs { last[input] = max(last[input], index) }
        }
        // A residual add folded into a conv writes its output when the conv runs; so does a pooling layer whose
        // flattening reshape is folded in.
        for (index, conv) in compiled.convs.enumerated() {
            if let fused = conv?.residual {
                first[fused.output] = min(first[fused.output], index)
                last[fused.input] = max(last[fused.input], index)
            }
            if let lookup = conv?.lookup { first[lookup.output] = min(first[lookup.output], index) }
        }
        for (index, output) in compiled.pooledHeads { first[output] = min(first[output], index) }
        func align(_ x: Int) -> Int { (x + 63) / 64 * 64 }
        // uint8 activations, and the float32 ones inside fp32 islands (model inputs and outputs live in the caller's buffers).
        let external = Set(student.inputs + student.outputs)
        let sizes = student.activations.indices.map { index -> Int in
            let info = student.activations[index], elements = batch * info.shape.dropFirst().reduce(1, *)
            if info.type == .uint8 { return align(elements) }
            return external.contains(index) ? 0 : align(elements * MemoryLayout<Float>.size)
        }
        var placed: [(offset: Int, size: Int, first: Int, last: Int)] = []
        for index in (0..<count).sorted(by: { sizes[$0] > sizes[$1] }) where sizes[index] > 0 {
            var offset = 0
            let overlapping = placed.filter { $0.first <= last[index] && first[index] <= $0.last }
                .sorted { $0.offset < $1.offset }
            for other in overlapping where offset + sizes[index] > other.offset && offset < other.offset + other.size {
                offset = other.offset + other.size
            }
            // A later block may now overlap; rescan until the slot is free.
            var moved = true
            while moved {
                moved = false
                for other in overlapping where offset + sizes[index] > other.offset && offset < other.offset + other.size {
                    offset = other.offset + other.size
                    moved = true
                }
            }
            offsets[index] = offset
            placed.append((offset, sizes[index], first[index], last[index]))
            size = max(size, offset + sizes[index])
        }
        scratchOffset = align(size)
        let scratch = student.layers.map { layer -> Int in
            switch layer.op {
            case .conv(let c), .gemm(let c):
                return c.kernel[0] * c.kernel[1] * student.activations[layer.inputs[0]].shape[1] / c.group
            default: return 0
            }
        }.max() ?? 0
        tileOffset = scratchOffset + align(max(scratch, 1))
        zeroOffset = tileOffset + align(Self.tileRows * max(compiled.maxTaps, 1) * MemoryLayout<UnsafeRawPointer>.size * threads)
        im2colOffset = zeroOffset + align(max(compiled.maxRowBytes, 1))
        size = im2colOffset + align(Self.tileRows * compiled.maxIm2colBytes * threads)
        // Input pointers of convolutions with several taps, kept across runs, narrowest inputs first (where building
        // them costs most relative to the arithmetic), within a budget.
        var budget = Self.indirectionBudget
        let candidates = compiled.convs.indices.filter { index in
            guard let conv = compiled.convs[index], conv.kind == .indirect, conv.taps > 1 else { return false }
            return !student.layers[index].op.isGemm
        }.sorted { compiled.convs[$0]!.kc < compiled.convs[$1]!.kc }
        for index in candidates {
            let pixels = student.activations[student.layers[index].output].shape.dropFirst(2).reduce(1, *)
            let bytes = batch * pixels * compiled.convs[index]!.taps * MemoryLayout<UnsafeRawPointer>.size
            guard bytes <= budget else { continue }
            budget -= bytes
            indirectionOffsets[index] = size
            size += align(bytes)
        }
        // 64 spare bytes: kernels read whole 4-byte groups, up to 3 bytes past a tensor's last row.
        size += 64
    }
}
