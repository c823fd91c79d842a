import KilnStudent

/// A small student exercising every layer kind: quantize → conv (ReLU) and depthwise conv → add → max pool →
/// average pool → concat → global average pool → reshape → gemm → dequantize.
public enum TinyStudent {
    /// A conv layer with deterministic weights, biases and multipliers.
    public static func conv(_ m: Int, _ cin: Int, group: Int = 1, kernel: Int = 3, seed: Int, clamp: ClosedRange<Int32> = 0...255) -> ConvLayer {
        let k = kernel * kernel * cin / group
        let weights = (0..<(m * k)).map { Int8(truncatingIfNeeded: ($0 * 37 + seed * 11) % 255 - 127) }
        return ConvLayer(outputChannels: m, kernel: [kernel, kernel], strides: [1, 1], pads: [kernel / 2, kernel / 2, kernel / 2, kernel / 2],
                         dilations: [1, 1], group: group, clamp: clamp, weights: weights,
                         bias: (0..<m).map { Int32($0 * 100 - 150) }, multipliers: (0..<m).map { 0.0004 + Float($0) * 0.0001 },
                         weightScales: (0..<m).map { 0.01 + Float($0) * 0.001 })
    }

    /// The student.
    public static func make() -> StudentModel {
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
    public static func input(batch: Int) -> [Float] {
        (0..<(batch * 144)).map { Float(($0 * 7919) % 200) / 100 - 1 }
    }
}
