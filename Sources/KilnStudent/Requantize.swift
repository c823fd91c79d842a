/// Kiln's one requantization scheme, shared by the reference kernels, the SIMD kernels and the QDQ export.
///
/// An int32 accumulator `acc` (in units of input scale × weight scale) becomes the uint8 level
///
///     q = clamp(roundHalfToEven(Float(acc) · multiplier) + zeroPoint, low, high)
///
/// with `multiplier = inputScale · weightScale[channel] / outputScale` computed once in Float32, the product taken
/// in Float32 and rounded half to even (the default rounding of `cvtps2dq`). Quantizing a float input is
/// `q = clamp(roundHalfToEven(x / scale) + zeroPoint, 0, 255)` (ONNX QuantizeLinear).
public enum Requantize {
    /// The uint8 level for an int32 accumulator.
    @inlinable @inline(__always)
    public static func level(_ acc: Int32, multiplier: Float, zeroPoint: Int32, clamp: ClosedRange<Int32>) -> UInt8 {
        let scaled = (Float(acc) * multiplier).rounded(.toNearestOrEven)
        let shifted = Int32(max(min(scaled, 1e6), -1e6)) + zeroPoint
        return UInt8(truncatingIfNeeded: min(max(shifted, clamp.lowerBound), clamp.upperBound))
    }

    /// The level of a real value (ONNX QuantizeLinear with uint8 output), at most `maxLevel` (255 at 8 bits).
    @inlinable @inline(__always)
    public static func quantize(_ x: Float, _ q: Quantization, maxLevel: Int32 = 255) -> UInt8 {
        let scaled = (x / q.scale).rounded(.toNearestOrEven)
        guard scaled.isFinite else { return scaled > 0 ? UInt8(maxLevel) : 0 }
        let shifted = Int32(max(min(scaled, 1e6), -1e6)) + q.zeroPoint
        return UInt8(truncatingIfNeeded: min(max(shifted, 0), maxLevel))
    }

    /// The real value of a uint8 level (ONNX DequantizeLinear).
    @inlinable @inline(__always)
    public static func dequantize(_ level: UInt8, _ q: Quantization) -> Float {
        Float(Int32(level) - q.zeroPoint) * q.scale
    }

    /// The level nearest to a real value, for clamp bounds (e.g. ReLU6's 6.0), within 0...255.
    public static func bound(_ x: Float, _ q: Quantization) -> Int32 {
        Int32(quantize(x, q))
    }
}
