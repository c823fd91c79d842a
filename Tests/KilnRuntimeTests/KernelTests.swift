import Foundation
@testable import KilnRuntime
import KilnTestSupport
import Testing

/// One-conv (plus optional residual add) students with random parameters, to compare kernel variants.
enum KernelCase {
    struct Generator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return state >> 33
        }
        mutating func int(_ range: ClosedRange<Int>) -> Int { range.lowerBound + Int(next() % UInt64(range.count)) }
        mutating func float(_ low: Float, _ high: Float) -> Float { low + (high - low) * Float(next() % 10_000) / 10_000 }
    }

    /// A conv layer with random int8 weights, biases, multipliers and a random clamp.
    static func conv(_ g: inout Generator, cin: Int, cout: Int, kernel: Int, stride: Int, pad: Int, dilation: Int,
                     group: Int) -> ConvLayer {
        let k = kernel * kernel * cin / group
        let low = Int32(g.int(0...40)), high = Int32(g.int(180...255))
        return ConvLayer(outputChannels: cout, kernel: [kernel, kernel], strides: [stride, stride], pads: [pad, pad, pad, pad],
                         dilations: [dilation, dilation], group: group, clamp: low...high,
                         weights: (0..<(cout * k)).map { _ in Int8(g.int(-127...127)) },
                         bias: (0..<cout).map { _ in Int32(g.int(-20_000...20_000)) },
                         multipliers: (0..<cout).map { _ in g.float(0.0002, 0.004) },
                         weightScales: [Float](repeating: 0.01, count: cout))
    }

    /// input → quantize → conv A; with `residual`, also conv B on the same input and A + B (B fused with the add).
    static func student(seed: UInt64, batchShape: [Int], cout: Int, kernel: Int, stride: Int, pad: Int, dilation: Int = 1,
                        group: Int = 1, gemm: Bool = false, residual: Bool = false) -> StudentModel {
        var g = Generator(state: seed)
        let cin = batchShape[1]
        let layerA = conv(&g, cin: cin, cout: cout, kernel: kernel, stride: stride, pad: pad, dilation: dilation, group: group)
        let inShape = [-1] + batchShape.dropFirst()
        let outShape: [Int]
        if gemm {
            outShape = [-1, cout]
        } else {
            let h = (batchShape[2] + 2 * pad - dilation * (kernel - 1) - 1) / stride + 1
            let w = (batchShape[3] + 2 * pad - dilation * (kernel - 1) - 1) / stride + 1
            outShape = [-1, cout, h, w]
        }
        func q() -> Quantization { Quantization(scale: g.float(0.01, 0.05), zeroPoint: Int32(g.int(0...200))) }
        var activations = [
            ActivationInfo(name: "input", shape: inShape, type: .float32),
            ActivationInfo(name: "x", shape: inShape, type: .uint8, quantization: q()),
            ActivationInfo(name: "a", shape: outShape, type: .uint8, quantization: q()),
        ]
        var layers = [Layer(name: "quantize", op: .quantize, inputs: [0], output: 1),
                      Layer(name: "a", op: gemm ? .gemm(layerA) : .conv(layerA), inputs: [1], output: 2)]
        var result = 2
        if residual {
            let layerB = conv(&g, cin: cin, cout: cout, kernel: kernel, stride: stride, pad: pad, dilation: dilation, group: group)
            activations.append(ActivationInfo(name: "b", shape: outShape, type: .uint8, quantization: q()))
            activations.append(ActivationInfo(name: "sum", shape: outShape, type: .uint8, quantization: q()))
            layers.append(Layer(name: "b", op: gemm ? .gemm(layerB) : .conv(layerB), inputs: [1], output: 3))
            layers.append(Layer(name: "add", op: .add(clamp: Int32(g.int(0...30))...Int32(g.int(200...255))), inputs: [2, 3], output: 4))
            result = 4
        }
        activations.append(ActivationInfo(name: "y", shape: outShape, type: .float32))
        layers.append(Layer(name: "dequantize", op: .dequantize, inputs: [result], output: activations.count - 1))
        return StudentModel(activations: activations, layers: layers, inputs: [0], outputs: [activations.count - 1])
    }

    static func input(count: Int, seed: UInt64) -> [Float] {
        var g = Generator(state: seed)
        return (0..<count).map { _ in g.float(-3, 4) }
    }
}

/// (input shape with batch, output channels, kernel, stride, pad, dilation, group, gemm, residual)
typealias KernelShape = (shape: [Int], cout: Int, kernel: Int, stride: Int, pad: Int, dilation: Int, group: Int, gemm: Bool, residual: Bool)

let kernelShapes: [KernelShape] = [
    ([3, 3, 5, 3], 7, 1, 1, 0, 1, 1, false, false),     // pointwise, odd K (3) and M (7)
    ([2, 33, 4, 4], 40, 1, 1, 0, 1, 1, false, true),    // pointwise with a fused residual add, tails everywhere
    ([1, 16, 6, 6], 16, 1, 1, 0, 1, 1, false, false),   // exact tiles
    ([2, 3, 9, 7], 19, 3, 1, 1, 1, 1, false, false),    // im2col, K = 27
    ([3, 6, 11, 10], 5, 3, 2, 1, 1, 1, false, true),    // strided im2col with residual
    ([1, 5, 12, 12], 33, 5, 1, 2, 2, 1, false, false),  // 5×5 dilated
    ([1, 64, 7, 7], 48, 1, 2, 0, 1, 1, false, false),   // strided 1×1 (im2col)
    ([2, 7, 9, 8], 7, 3, 1, 1, 1, 7, false, false),     // depthwise, 7 channels
    ([2, 33, 10, 9], 33, 3, 2, 1, 1, 33, false, true),  // strided depthwise with residual
    ([1, 16, 5, 5], 16, 3, 1, 1, 1, 16, false, false),  // depthwise, exact vector width
    ([5, 70, 1, 1], 10, 1, 1, 0, 1, 1, true, false),    // gemm, K = 70
    ([3, 9, 1, 1], 33, 1, 1, 0, 1, 1, true, true),      // gemm with residual
    ([4, 20, 1, 1], 17, 1, 1, 0, 1, 1, true, false),    // gemm, a 4-row tile
    ([2, 12, 2, 1], 5, 1, 1, 0, 1, 1, false, false),    // 1×1 conv on two-pixel images: 2-row tiles
    ([2, 6, 8, 8], 12, 3, 1, 1, 1, 3, false, false),    // grouped (reference fallback on every variant)
    ([1, 40, 6, 19], 40, 3, 1, 1, 1, 40, false, true),  // depthwise, wide rows: blocks of 4 interior pixels and tails
    ([1, 24, 4, 13], 24, 3, 1, 0, 1, 24, false, false), // depthwise without padding
    ([2, 20, 9, 17], 20, 3, 2, 1, 1, 20, false, false), // strided depthwise, wide rows
    ([1, 72, 5, 6], 72, 3, 1, 1, 1, 72, false, true),   // depthwise over a full 64-channel block and a tail
    ([1, 64, 6, 5], 64, 3, 2, 1, 1, 64, false, false),  // strided depthwise, exactly one 64-channel block
    ([1, 3, 17, 15], 16, 7, 2, 3, 1, 1, false, false),  // 7×7 stride-2 stem on 3 channels (im2col)
    ([2, 1, 9, 9], 16, 3, 1, 1, 1, 1, false, true),     // 3×3 stem on one channel (im2col) with residual
    ([1, 2, 9, 9], 8, 3, 1, 2, 2, 1, false, false),     // dilated im2col with wide padding
    ([1, 75, 9, 8], 75, 7, 1, 3, 1, 75, false, true),   // 7×7 depthwise: two 32-channel steps, an 8-channel one, a tail
    ([2, 40, 9, 9], 40, 5, 2, 2, 1, 40, false, false),  // strided 5×5 depthwise
    ([1, 36, 7, 7], 36, 3, 1, 2, 2, 36, false, false),  // dilated 3×3 depthwise (the any-size kernel)
]

@Suite("int8 kernel variants against the reference kernels")
struct KernelTests {
    @Test("every variant is bit-exact with the reference (variants the CPU lacks are skipped)",
          arguments: KernelChoice.all, kernelShapes.indices)
    func bitExact(_ kernels: KernelChoice, _ index: Int) throws {
        guard kernels.isSupported else {
            print("skipped: this CPU lacks \(kernels)")
            return
        }
        let t = kernelShapes[index]
        let shape = t.gemm ? [t.shape[0], t.shape[1]] : t.shape
        let student = KernelCase.student(seed: UInt64(index + 11), batchShape: shape, cout: t.cout, kernel: t.kernel,
                                         stride: t.stride, pad: t.pad, dilation: t.dilation, group: t.group, gemm: t.gemm,
                                         residual: t.residual)
        let input = KernelCase.input(count: shape.reduce(1, *), seed: UInt64(index))
        let reference = try KilnModel(student, options: .init(threads: 1, kernels: .reference)).predict(input)
        for threads in [1, 3] {
            let model = try KilnModel(student, options: .init(threads: threads, kernels: kernels))
            if t.residual { #expect(!model.compiled.skipped.isEmpty || t.group > 1 && t.group != t.shape[1], "the add should be fused") }
            let output = try model.predict(input)
            let differences = zip(reference, output).filter { $0 != $1 }.count
            #expect(differences == 0, "\(kernels), case \(index), \(threads) threads: \(differences) of \(output.count) outputs differ")
        }
    }

    @Test("a whole student (quantize, convs, add, max and average pooling, concat, gemm) matches the reference",
          arguments: KernelChoice.all)
    func wholeStudent(_ kernels: KernelChoice) throws {
        guard kernels.isSupported else { return }
        let student = TinyStudent.make()
        let input = TinyStudent.input(batch: 5).map { $0 * 3 }
        let reference = try KilnModel(student, options: .init(threads: 1, kernels: .reference)).predict(input)
        let output = try KilnModel(student, options: .init(threads: 2, kernels: kernels)).predict(input)
        #expect(output == reference)
    }

    @Test("the narrow GEMM runs a layer exactly where its weights and input bits allow, on tiers that have one of their own",
          arguments: KernelChoice.all)
    func narrowGemmChoice(_ kernels: KernelChoice) throws {
        guard kernels.isSupported else { return }
        // The conv and the classifier with weights within ±64 (8-bit inputs: one pair sum per widening); the
        // classifier's input at 4 bits (levels ≤ 15: many).
        var student = TinyStudent.make()
        for index in student.layers.indices {
            switch student.layers[index].op {
            case .conv(var c) where c.group == 1:
                c.weights = c.weights.map { max(min($0, 64), -64) }
                student.layers[index].op = .conv(c)
            case .gemm(var c):
                c.weights = c.weights.map { $0 / 9 }
                student.layers[index].op = .gemm(c)
            default: break
            }
        }
        var largest: Int32 = 0
        for layer in student.layers { if case .gemm(let c) = layer.op { largest = c.weights.map { abs(Int32($0)) }.max()! } }
        student.activations[9].bits = 4
        student.activations[8].bits = 4
        let input = TinyStudent.input(batch: 5).map { $0 * 3 }
        let reference = try KilnModel(student, options: .init(threads: 1, kernels: .reference)).predict(input)
        let model = try KilnModel(student, options: .init(threads: 2, kernels: kernels))
        #expect(try model.predict(input) == reference)
        let steps = model.compiled.convs.compactMap { $0 }.filter { $0.kind == .indirect || $0.kind == .im2col }.map(\.narrowSteps)
        // Tiers with a narrow GEMM of their own: AVX2 and AVX-512 without VNNI (VNNI's vpdpbusd is exact and faster).
        if kernels == .avx2 || kernels == .avx512BW {
            #expect(steps == [1, 32767 / (2 * 15 * largest)], "\(kernels): \(steps)")
        } else {
            #expect(steps.allSatisfy { $0 == 0 }, "\(kernels): \(steps)")
        }
        // Full-range weights keep the exact 8-bit GEMM.
        let plain = try KilnModel(TinyStudent.make(), options: .init(threads: 1, kernels: kernels))
        #expect(plain.compiled.convs.compactMap { $0 }.allSatisfy { $0.narrowSteps == 0 })
    }

    @Test("input quantization matches the reference on every variant, including NaN, infinities and huge values",
          arguments: KernelChoice.all)
    func quantizeSpecialValues(_ kernels: KernelChoice) throws {
        guard kernels.isSupported else { return }
        let specials: [Float] = [.nan, .infinity, -.infinity, 1e30, -1e30, 0.5, -0.5, 1.5, 2.5, 0, -0]
        for channels in [1, 3, 17] {
            let batchShape = [2, channels, 5, 7]
            let student = KernelCase.student(seed: UInt64(channels), batchShape: batchShape, cout: 5, kernel: 1, stride: 1, pad: 0)
            var input = KernelCase.input(count: batchShape.reduce(1, *), seed: 3)
            for (i, value) in specials.enumerated() { input[i * 13 % input.count] = value }
            let reference = try KilnModel(student, options: .init(threads: 1, kernels: .reference)).predict(input)
            let output = try KilnModel(student, options: .init(threads: 1, kernels: kernels)).predict(input)
            #expect(output == reference, "\(kernels), \(channels) channels")
        }
    }

    @Test("one context reused across inputs and batch sizes matches the reference every time (cached input pointers)",
          arguments: KernelChoice.all)
    func reusedContext(_ kernels: KernelChoice) throws {
        guard kernels.isSupported else { return }
        let student = KernelCase.student(seed: 5, batchShape: [1, 16, 9, 11], cout: 24, kernel: 3, stride: 1, pad: 1,
                                         residual: true)
        let reference = try KilnModel(student, options: .init(threads: 1, kernels: .reference))
        let context = try KilnModel(student, options: .init(threads: 2, kernels: kernels)).makeContext()
        for (run, batch) in [1, 1, 3, 1, 3].enumerated() {
            let input = KernelCase.input(count: batch * 16 * 9 * 11, seed: UInt64(run))
            #expect(try context.predict(input) == reference.predict(input), "\(kernels), run \(run), batch \(batch)")
        }
    }

    @Test("a pooled head (1×1 conv to 300 channels, global average pool, flatten, gemm) matches the reference",
          arguments: KernelChoice.all)
    func pooledHead(_ kernels: KernelChoice) throws {
        guard kernels.isSupported else { return }
        var g = KernelCase.Generator(state: 9)
        var conv = KernelCase.conv(&g, cin: 5, cout: 300, kernel: 1, stride: 1, pad: 0, dilation: 1, group: 1)
        conv.clamp = 0...255
        let fc = KernelCase.conv(&g, cin: 300, cout: 7, kernel: 1, stride: 1, pad: 0, dilation: 1, group: 1)
        let q = { (s: Float, z: Int32) in Quantization(scale: s, zeroPoint: z) }
        let activations = [
            ActivationInfo(name: "input", shape: [-1, 5, 6, 7], type: .float32),
            ActivationInfo(name: "x", shape: [-1, 5, 6, 7], type: .uint8, quantization: q(0.03, 90)),
            ActivationInfo(name: "features", shape: [-1, 300, 6, 7], type: .uint8, quantization: q(0.05, 3)),
            ActivationInfo(name: "pooled", shape: [-1, 300, 1, 1], type: .uint8, quantization: q(0.011, 7)),
            ActivationInfo(name: "flat", shape: [-1, 300], type: .uint8, quantization: q(0.011, 7)),
            ActivationInfo(name: "fc", shape: [-1, 7], type: .uint8, quantization: q(0.2, 128)),
            ActivationInfo(name: "logits", shape: [-1, 7], type: .float32),
        ]
        let layers = [
            Layer(name: "quantize", op: .quantize, inputs: [0], output: 1),
            Layer(name: "conv", op: .conv(conv), inputs: [1], output: 2),
            Layer(name: "gap", op: .globalAveragePool, inputs: [2], output: 3),
            Layer(name: "flatten", op: .reshape(shape: [-1, 300]), inputs: [3], output: 4),
            Layer(name: "fc", op: .gemm(fc), inputs: [4], output: 5),
            Layer(name: "dequantize", op: .dequantize, inputs: [5], output: 6),
        ]
        let student = StudentModel(activations: activations, layers: layers, inputs: [0], outputs: [6])
        let input = KernelCase.input(count: 3 * 5 * 6 * 7, seed: 4)
        let reference = try KilnModel(student, options: .init(threads: 1, kernels: .reference)).predict(input)
        let model = try KilnModel(student, options: .init(threads: 2, kernels: kernels))
        #expect(!model.compiled.pooledHeads.isEmpty, "the flatten should be folded into the pool")
        #expect(try model.predict(input) == reference, "\(kernels)")
    }

    @Test("the CPU probe names a supported variant")
    func probe() {
        let best = KernelChoice.best
        #expect(best.isSupported)
        print("best kernels on this CPU: \(best)")
    }
}
