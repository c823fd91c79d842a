#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// e^x in single precision (libm's expf).
@inlinable
public func exponential(_ x: Float) -> Float { expf(x) }

/// tanh(x) in single precision (libm's tanhf).
@inlinable
public func hyperbolicTangent(_ x: Float) -> Float { tanhf(x) }
