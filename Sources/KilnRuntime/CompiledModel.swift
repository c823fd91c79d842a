import CKilnKernels

/// Which kernels a model runs with: chosen once at load from a CPU probe (or forced, e.g. by tests).
public struct KernelChoice: Hashable, Sendable, CustomStringConvertible {
    /// The instruction-set variant (a `kiln_isa` value).
    public let isa: Int32

    /// The best variant this CPU supports.
    public static var best: KernelChoice { KernelChoice(isa: kiln_cpu_isa()) }
    /// The portable reference kernels in Swift (no C kernels at all).
    public static let reference = KernelChoice(isa: -1)
    /// The portable C variant.
    public static let scalar = KernelChoice(isa: Int32(KILN_ISA_SCALAR.rawValue))
    /// AVX2 (16-bit multiplies).
    public static let avx2 = KernelChoice(isa: Int32(KILN_ISA_AVX2.rawValue))
    /// AVX-VNNI (256-bit vpdpbusd).
    public static let avxVNNI = KernelChoice(isa: Int32(KILN_ISA_AVXVNNI.rawValue))
    /// AVX-512 without VNNI (512-bit vpmaddwd, and vpmaddubsw for narrow products).
    public static let avx512BW = KernelChoice(isa: Int32(KILN_ISA_AVX512BW.rawValue))
    /// AVX-512 VNNI (512-bit vpdpbusd).
    public static let avx512VNNI = KernelChoice(isa: Int32(KILN_ISA_AVX512VNNI.rawValue))
    /// arm64 dot product.
    public static let neonDot = KernelChoice(isa: Int32(KILN_ISA_NEONDOT.rawValue))

    /// Every C variant (the ISA list of CKilnKernels).
    public static let all: [KernelChoice] = (0..<Int32(KILN_ISA_COUNT.rawValue)).map { KernelChoice(isa: $0) }

    /// The kernels of the one kernel list compiled for this architecture that need this ISA.
    public var kernels: [KernelInfo] { KernelInfo.all.filter { $0.isa == self } }

    /// Whether this CPU runs it.
    public var isSupported: Bool { isa < 0 || kiln_cpu_supports(isa) != 0 }

    public var description: String { isa < 0 ? "reference" : String(cString: kiln_isa_name(isa)) }

    init(isa: Int32) { self.isa = isa }

    /// The variant of that name ("reference", "scalar", "avx2", "avxvnni", "avx512bw", "avx512vnni", "neondot").
    public init?(name: String) {
        guard let choice = ([.reference] + KernelChoice.all).first(where: { $0.description == name.lowercased() }) else { return nil }
        self = choice
    }

    /// The kernels to run with when `forced` (the value of `KILN_ISA`, read by the CLI and the C API) names a
    /// variant, else the best this CPU runs. A name that is unknown, or a variant this CPU cannot run, is an error.
    public static func requested(_ forced: String?) throws -> KernelChoice {
        guard let forced, !forced.isEmpty else { return .best }
        guard let choice = KernelChoice(name: forced) else {
            throw KilnRuntimeError(message: "KILN_ISA=\(forced) names no kernel variant (one of: "
                                   + ([.reference] + KernelChoice.all).map(\.description).joined(separator: ", ") + ")")
        }
        guard choice.isSupported else {
            throw KilnRuntimeError(message: "KILN_ISA=\(forced): this CPU (\(KernelChoice.cpuModel)) cannot run the \(choice) kernels")
        }
        return choice
    }

    /// The CPU's model name, as benchmarks print it.
    public static var cpuModel: String { String(cString: kiln_cpu_model()) }
}

/// One entry of CKilnKernels' kernel list: family, name and the ISA it needs.
public struct KernelInfo: Hashable, Sendable, CustomStringConvertible {
    /// The family, e.g. "qu8s8_igemm".
    public let family: String
    /// The name, e.g. "kiln_qu8s8_igemm_8x32c4__avx512vnni".
    public let name: String
    /// The instruction set it needs.
    public let isa: KernelChoice
    /// Position in the list.
    public let index: Int

    /// Every kernel compiled for this architecture, in list order.
    public static let all: [KernelInfo] = (0..<Int(kiln_kernel_count())).map { index in
        let entry = kiln_kernel_at(Int32(index))!.pointee
        return KernelInfo(family: String(cString: entry.family), name: String(cString: entry.name),
                          isa: KernelChoice(isa: Int32(entry.isa)), index: index)
    }

    /// The portable kernel of the same family (the reference every other one is checked against).
    public var portable: KernelInfo { KernelInfo.all.first { $0.family == family && $0.isa == .scalar }! }

    /// The function pointer, to be cast to the family's C type.
    public var function: (@convention(c) () -> Void) { kiln_kernel_at(Int32(index))!.pointee.function! }

    public var description: String { name }
}

/// A conv or gemm layer prepared for the C kernels: packed weights, requantization arrays and an optional fused
/// residual add.
final class CompiledConv: @unchecked Sendable {
    enum Kind {
        /// A one-group convolution or a gemm, as an indirect GEMM: one input pointer per output pixel and kernel tap.
        case indirect
        /// A one-group convolution with few input channels (not a multiple of 4, under 16): receptive fields copied
        /// into contiguous rows, then a plain GEMM, so taps do not each pad their channels to a 4-byte group.
        case im2col
        /// 3×3 depthwise, stride 1 or 2.
        case depthwise3x3
        /// Depthwise of any other kernel size, stride, dilation and padding.
        case depthwise
        /// A grouped convolution (RegNet, ResNeXt): one indirect GEMM per group, each reading its group's channels.
        case grouped
    }

    let kind: Kind
    let layer: ConvLayer
    /// Input segments per GEMM row (kH·kW taps; 1 for im2col) and bytes of each (rounded up to 4).
    let taps: Int, kc: Int
    /// Bytes of one group's packed weights (grouped convolutions).
    let groupStride: Int
    /// Packed GEMM weights, or [9][C] depthwise weights.
    let weights: UnsafeMutablePointer<Int8>
    let bias: UnsafeMutablePointer<Int32>
    let multipliers: UnsafeMutablePointer<Float>
    /// A 1×1 convolution with stride 1 and no padding: output pixel r reads input pixel r.
    let isPointwise: Bool
    /// Pair sums of this layer's products that add up exactly in 16 bits (from its largest weight magnitude and its
    /// input's bit width); 0 where the layer runs on the plain GEMM (one may not fit, or the tier has no narrow GEMM).
    let narrowSteps: Int32
    /// The add layer folded into this one: its other input and output.
    var residual: (input: Int, output: Int, clamp: ClosedRange<Int32>)?
    /// The lookup layer folded into this one (applied to each tile right after the kernel writes it): its table and
    /// output, which the conv then writes in place of its own.
    private(set) var lookup: (table: UnsafeMutablePointer<UInt8>, output: Int)?

    /// Folds a lookup layer into this conv.
    func fuseLookup(_ table: [UInt8], output: Int) {
        let copy = UnsafeMutablePointer<UInt8>.allocate(capacity: 256)
        copy.initialize(from: table, count: 256)
        lookup = (copy, output)
    }

    /// The activation this conv's work ends in: the lookup's output, the fused add's, or its own.
    func finalOutput(_ layer: Layer) -> Int { lookup?.output ?? residual?.output ?? layer.output }

    /// Prepares `layer` for the GEMM kernels: `packing` is what the tier's plain GEMM reads; `narrow`, whether the
    /// tier has a narrow GEMM of its own (then layers whose products allow it take that, with C4 weights).
    init?(_ layer: ConvLayer, inputShape: [Int], inputBits: Int, isGemm: Bool, packing: kiln_packing, narrow: Bool) {
        let cin = inputShape[1]
        self.layer = layer
        let largestWeight = layer.weights.reduce(0) { max($0, abs(Int32($1))) }
        narrowSteps = narrow ? kiln_igemm_narrow_steps((1 << inputBits) - 1, largestWeight) : 0
        let packing = narrowSteps > 0 ? KILN_PACKING_C4 : packing
        let m = layer.outputChannels
        let kernelTaps = layer.kernel[0] * layer.kernel[1]
        isPointwise = layer.kernel == [1, 1] && layer.strides == [1, 1] && layer.pads.allSatisfy { $0 == 0 }
        if !isGemm && layer.group == 1 && kernelTaps > 1 && cin % 4 != 0 && cin < 16 {
            kind = .im2col
        } else if isGemm || layer.group == 1 {
            kind = .indirect
        } else if layer.group == cin && m == cin && layer.kernel == [3, 3] && layer.dilations == [1, 1]
                    && layer.strides[0] == layer.strides[1] && (1...2).contains(layer.strides[0]) {
            kind = .depthwise3x3
        } else if layer.group == cin && m == cin {
            kind = .depthwise
        } else {
            kind = .grouped
        }
        let (cg, mg) = (cin / layer.group, m / layer.group)
        switch kind {
        case .grouped: (taps, kc) = (kernelTaps, (cg + 3) / 4 * 4)
        case .indirect: (taps, kc) = (kernelTaps, (cin + 3) / 4 * 4)
        case .im2col: (taps, kc) = (1, (kernelTaps * cin + 3) / 4 * 4)
        case .depthwise3x3, .depthwise: (taps, kc) = (kernelTaps, cin)
        }
        groupStride = kind == .grouped ? kiln_qs8_packed_size(packing, Int32(mg), Int32(taps * kc)) : 0
        bias = .allocate(capacity: m)
        bias.initialize(from: layer.bias, count: m)
        multipliers = .allocate(capacity: m)
        multipliers.initialize(from: layer.multipliers, count: m)
        if kind == .depthwise3x3 || kind == .depthwise {
            // [C][tap] → [tap][C]
            weights = .allocate(capacity: kernelTaps * m)
            for c in 0..<m { for tap in 0..<kernelTaps { weights[tap * m + c] = layer.weights[c * kernelTaps + tap] } }
        } else if kind == .grouped {
            // Per group: [Mg][tap][Cg] → [Mg][tap][Cg rounded up to 4], zero-padded, packed; groups one after another.
            weights = .allocate(capacity: groupStride * layer.group)
            for g in 0..<layer.group {
                var padded = [Int8](repeating: 0, count: mg * taps * kc)
                for o in 0..<mg { for tap in 0..<taps { for c in 0..<cg {
                    padded[(o * taps + tap) * kc + c] = layer.weights[((g * mg + o) * taps + tap) * cg + c]
                } } }
                padded.withUnsafeBufferPointer { kiln_qs8_pack(packing, $0.baseAddress!, Int32(mg), Int32(taps * kc), weights + g * groupStride) }
            }
        } else if kind == .im2col {
            // [M][tap][C] is already [M][K] with K = taps · C; packing pads K to a multiple of 4.
            let k = kernelTaps * cin
            weights = .allocate(capacity: kiln_qs8_packed_size(packing, Int32(m), Int32(k)))
            layer.weights.withUnsafeBufferPointer { kiln_qs8_pack(packing, $0.baseAddress!, Int32(m), Int32(k), weights) }
        } else {
            // [M][tap][C] → [M][tap][C rounded up to 4], zero-padded, then packed for the kernel tile.
            var padded = [Int8](repeating: 0, count: m * taps * kc)
            for o in 0..<m { for tap in 0..<taps { for c in 0..<cin {
                padded[(o * taps + tap) * kc + c] = layer.weights[(o * taps + tap) * cin + c]
            } } }
            let size = kiln_qs8_packed_size(packing, Int32(m), Int32(taps * kc))
            weights = .allocate(capacity: size)
            padded.withUnsafeBufferPointer { kiln_qs8_pack(packing, $0.baseAddress!, Int32(m), Int32(taps * kc), weights) }
        }
    }

    deinit {
        lookup?.table.deallocate()
        weights.deallocate()
        bias.deallocate()
        multipliers.deallocate()
    }

}

/// An indirect GEMM call: m, n, kc, taps, row pointers, packed weights, output, its leading dimension, requantization.
typealias GemmCall = (Int32, Int32, Int32, Int32, UnsafePointer<UnsafePointer<UInt8>?>?, UnsafePointer<Int8>?,
                      UnsafeMutablePointer<UInt8>?, Int, UnsafePointer<kiln_requant>?) -> Void

/// Per-layer preparation of a student for the C kernels.
struct CompiledModel: @unchecked Sendable {
    let kernels: KernelChoice
    let gemm: kiln_qu8s8_igemm_fn?
    /// The narrow GEMM where this tier has one of its own (not a lower tier's), for layers whose products allow it.
    let narrowGemm: kiln_qu8s8_igemm_narrow_fn?
    let depthwise: kiln_qu8s8_dwconv3x3_fn?
    let generalDepthwise: kiln_qu8s8_dwconv_fn?
    let quantize: kiln_qu8_quantize_fn?
    let lookup: kiln_qu8_lookup_fn?
    /// Per layer: its compiled conv, or nil where the reference kernel runs.
    let convs: [CompiledConv?]
    /// Concatenations along channels (axis 1 of a 4-D or 2-D tensor, contiguous in NHWC): per input, the table from
    /// its levels to the output's, or nil where the quantizations are equal and bytes are copied as they are.
    let concatTables: [Int: [[UInt8]?]]
    /// Layout ops' index tables in the C kernels' integer types, made once at load (every kernel choice runs them in C):
    /// channel permutations, and a bilinear resize's column taps.
    let permutations: [Int: [Int32]]
    let resizeColumns: [Int: (first: [Int32], second: [Int32], fractions: [Float])]
    /// Layers whose work a previous layer's fused epilogue already did.
    let skipped: Set<Int>
    /// Global average pools followed by a flattening reshape ([N, C, 1, 1] → [N, C], the same bytes in NHWC): the
    /// pool writes the reshape's output (the head's fully-connected input) directly, and the reshape is skipped.
    let pooledHeads: [Int: Int]
    /// Most kernel taps of any layer (sizes the per-worker pointer tiles), widest padded input row, and the
    /// longest im2col row.
    let maxTaps: Int
    let maxRowBytes: Int
    let maxIm2colBytes: Int

    /// The GEMM that runs `conv`: the narrow one where its products allow it and this tier has one, else the plain one.
    func gemmFunction(for conv: CompiledConv) -> GemmCall {
        if conv.narrowSteps > 0, let narrow = narrowGemm {
            let steps = conv.narrowSteps
            return { narrow($0, $1, $2, $3, $4, $5, $6, $7, $8, steps) }
        }
        let plain = gemm!
        return { plain($0, $1, $2, $3, $4, $5, $6, $7, $8) }
    }

    /// Prepares the layers the C kernels run and empties their weight arrays in `student` (they live packed here).
    init(_ student: inout StudentModel, kernels: KernelChoice) {
        self.kernels = kernels
        var permutations: [Int: [Int32]] = [:]
        var resizeColumns: [Int: (first: [Int32], second: [Int32], fractions: [Float])] = [:]
        for (index, layer) in student.layers.enumerated() {
            switch layer.op {
            case .permuteChannels(let permutation): permutations[index] = permutation.map { Int32($0) }
            case .resizeLinear(let r):
                resizeColumns[index] = (r.columns.map { Int32($0.first) }, r.columns.map { Int32($0.second) }, r.columns.map(\.fraction))
            default: break
            }
        }
        (self.permutations, self.resizeColumns) = (permutations, resizeColumns)
        guard kernels.isa >= 0 else {
            (gemm, narrowGemm, depthwise, generalDepthwise, quantize, lookup) = (nil, nil, nil, nil, nil, nil)
            (convs, skipped, pooledHeads) = (student.layers.map { _ in nil }, [], [:])
            concatTables = [:]
            (maxTaps, maxRowBytes, maxIm2colBytes) = (0, 0, 0)
            return
        }
        gemm = kiln_qu8s8_igemm_for(kernels.isa)
        let gemmTier = kiln_chosen_kernel_isa("qu8s8_igemm", kernels.isa)
        narrowGemm = kernels != .scalar && kiln_chosen_kernel_isa("qu8s8_igemm_narrow", kernels.isa) == gemmTier
            ? kiln_qu8s8_igemm_narrow_for(kernels.isa) : nil
        depthwise = kiln_qu8s8_dwconv3x3_for(kernels.isa)
        generalDepthwise = kiln_qu8s8_dwconv_for(kernels.isa)
        quantize = kiln_qu8_quantize_nchw_for(kernels.isa)
        lookup = kiln_qu8_lookup_for(kernels.isa)
        let packing = kiln_qu8s8_igemm_packing(gemmTier)
        var convs: [CompiledConv?] = []
        for index in student.layers.indices {
            let layer = student.layers[index]
            let shape = student.activations[layer.inputs[0]].shape, bits = student.activations[layer.inputs[0]].bits
            switch layer.op {
            case .conv(var c):
                let compiled = CompiledConv(c, inputShape: shape, inputBits: bits, isGemm: false, packing: packing,
                                            narrow: narrowGemm != nil)
                if compiled != nil { c.weights = [] }
                student.layers[index].op = .conv(c)
                convs.append(compiled)
            case .gemm(var c):
                let compiled = CompiledConv(c, inputShape: shape, inputBits: bits, isGemm: true, packing: packing,
                                            narrow: narrowGemm != nil)
                if compiled != nil { c.weights = [] }
                student.layers[index].op = .gemm(c)
                convs.append(compiled)
            default:
                convs.append(nil)
            }
        }
        // Fold a residual add into the conv that produces the later of its two inputs.
        var producer: [Int: Int] = [:], readers: [Int: Int] = [:]
        for (index, layer) in student.layers.enumerated() {
            producer[layer.output] = index
            for input in layer.inputs { readers[input, default: 0] += 1 }
        }
        var skipped = Set<Int>()
        for (index, layer) in student.layers.enumerated() {
            guard case .add(let clamp) = layer.op else { continue }
            let candidates = layer.inputs.enumerated().compactMap { position, input -> (Int, Int, Int)? in
                guard let p = producer[input], let conv = convs[p], conv.residual == nil,
                      readers[input] == 1, !student.outputs.contains(input) else { return nil }
                let other = layer.inputs[1 - position]
                guard let otherProducer = producer[other] ?? (student.inputs.contains(other) ? -1 : nil), otherProducer < p else { return nil }
                return (p, other, position)
            }
            guard let (p, other, _) = candidates.max(by: { $0.0 < $1.0 }) else { continue }
            convs[p]!.residual = (other, layer.output, clamp)
            skipped.insert(index)
        }
        // Fold a lookup into the conv whose work (after any fused add) produces its input, when nothing else reads it.
        var finalWriter: [Int: Int] = [:]
        for (index, conv) in convs.enumerated() { if let conv { finalWriter[conv.finalOutput(student.layers[index])] = index } }
        for (index, layer) in student.layers.enumerated() {
            guard case .lookup(let l) = layer.op, let p = finalWriter[layer.inputs[0]], readers[layer.inputs[0]] == 1,
                  !student.outputs.contains(layer.inputs[0]) else { continue }
            convs[p]!.fuseLookup(l.table, output: layer.output)
            skipped.insert(index)
        }
        var concatTables: [Int: [[UInt8]?]] = [:]
        for (index, layer) in student.layers.enumerated() {
            guard case .concat(1) = layer.op else { continue }
            let out = student.activations[layer.output]
            guard out.shape.count == 4 || out.shape.count == 2 else { continue }
            concatTables[index] = layer.inputs.map { input in
                let info = student.activations[input]
                guard info.quantization != out.quantization else { return nil }  // as the reference kernel copies
                return (0..<256).map { level in
                    Requantize.quantize(Requantize.dequantize(UInt8(level), info.quantization), out.quantization, maxLevel: out.maxLevel)
                }
            }
        }
        self.concatTables = concatTables
        var pooledHeads: [Int: Int] = [:]
        for (index, layer) in student.layers.enumerated() {
            guard case .globalAveragePool = layer.op, readers[layer.output] == 1, !student.outputs.contains(layer.output),
                  let reshape = student.layers.indices.first(where: {
                      if case .reshape = student.layers[$0].op { return student.layers[$0].inputs == [layer.output] }
                      return false
                  }), student.activations[student.layers[reshape].output].shape.count == 2 else { continue }
            pooledHeads[index] = student.layers[reshape].output
            skipped.insert(reshape)
        }
        self.convs = convs
        self.skipped = skipped
        self.pooledHeads = pooledHeads
        maxTaps = convs.compactMap { $0?.taps }.max() ?? 0
        maxRowBytes = convs.compactMap { $0?.kind == .indirect || $0?.kind == .grouped ? $0?.kc : nil }.max() ?? 0
        maxIm2colBytes = convs.compactMap { $0?.kind == .im2col ? $0?.kc : nil }.max() ?? 0
    }
}

extension LayerOp {
    /// Whether this is a fully-connected layer.
    var isGemm: Bool {
        if case .gemm = self { return true }
        return false
    }
}
