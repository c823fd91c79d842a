import KilnGraph

/// A seeded pseudo-random generator (xoshiro256**, seeded through SplitMix64): the same seed gives the same
/// stream on every machine, which keeps synthesis and initialisation reproducible.
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    private var state: (UInt64, UInt64, UInt64, UInt64)

    /// A generator whose whole stream is determined by `seed`.
    public init(seed: UInt64) {
        var s = seed
        func splitMix() -> UInt64 {
            s &+= 0x9E37_79B9_7F4A_7C15
            var z = s
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        state = (splitMix(), splitMix(), splitMix(), splitMix())
    }

    /// Generator number `stream` of the family `seed` names: streams are independent of each other, so work split by
    /// stream (a synthesis batch) draws the same values wherever and in whatever order it runs.
    public init(seed: UInt64, stream: UInt64) {
        func mix(_ value: UInt64) -> UInt64 {
            var z = value &+ 0x9E37_79B9_7F4A_7C15
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        self.init(seed: mix(seed) ^ mix(mix(stream ^ 0x5EED_57EA_3000_0000)))
    }

    public mutating func next() -> UInt64 {
        let result = rotate(state.1 &* 5, 7) &* 9
        let t = state.1 << 17
        state.2 ^= state.0
        state.3 ^= state.1
        state.1 ^= state.2
        state.0 ^= state.3
        state.2 ^= t
        state.3 = rotate(state.3, 45)
        return result
    }

    private func rotate(_ x: UInt64, _ k: UInt64) -> UInt64 { (x << k) | (x >> (64 - k)) }

    /// A uniform value in [0, 1) with 24 random bits.
    public mutating func nextUnit() -> Float { Float(next() >> 40) / Float(1 << 24) }

    /// A standard normal value (Box–Muller).
    public mutating func nextGaussian() -> Float {
        var u = nextUnit()
        while u <= 0 { u = nextUnit() }
        let v = nextUnit()
        return (-2 * logf(u)).squareRoot() * cosf(2 * Float.pi * v)
    }

    /// A tensor of independent N(mean, std²) values.
    public mutating func normal(_ shape: [Int], mean: Float = 0, std: Float = 1) -> Tensor {
        Tensor(shape: shape, scalars: (0..<shape.elementCount).map { _ in mean + std * nextGaussian() })
    }

    /// A tensor of independent uniform values in [low, high).
    public mutating func uniform(_ shape: [Int], _ low: Float, _ high: Float) -> Tensor {
        Tensor(shape: shape, scalars: (0..<shape.elementCount).map { _ in low + (high - low) * nextUnit() })
    }

    /// `count` independent draws that are true with probability `p` (e.g. QDrop's per-element choice).
    public mutating func bernoulli(count: Int, probability p: Float) -> [Bool] {
        let threshold = UInt64(max(0, min(1, Double(p))) * Double(1 << 24))
        var local = self
        let draws = [Bool](unsafeUninitializedCapacity: count) { buffer, initialized in
            for i in 0..<count { buffer[i] = (local.next() >> 40) < threshold }
            initialized = count
        }
        self = local
        return draws
    }

    /// A uniform integer in 0..<bound.
    public mutating func nextIndex(_ bound: Int) -> Int { Int(next() % UInt64(bound)) }
}

#if canImport(Glibc)
import Glibc
#endif
