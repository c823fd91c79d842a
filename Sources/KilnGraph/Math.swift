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

/// erf(x) in single precision (libm's erff).
@inlinable
public func errorFunction(_ x: Float) -> Float { erff(x) }

/// log(1 + e^x) in single precision, without overflow for large x.
@inlinable
public func softplus(_ x: Float) -> Float { x > 20 ? x : log1pf(expf(x)) }
