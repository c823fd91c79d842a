import CKilnFP32

/// Data-parallel loops over a fixed number of worker threads: the OpenMP team oneDNN's convolutions run on too.
public enum Parallel {
    /// Number of threads the fp32 ops use; defaults to the number of active processors.
    nonisolated(unsafe) public static var threadCount: Int = max(1, ProcessInfoLite.activeProcessorCount)

    /// Calls `body(range)` on disjoint chunks covering `0..<count`, at most `threadCount` at a time; returns when all
    /// are done. Chunks are contiguous and at least `grain` long.
    public static func forEachChunk(_ count: Int, grain: Int = 1, _ body: (Range<Int>) -> Void) {
        let chunks = min(threadCount, max(1, count / max(grain, 1)))
        if chunks <= 1 {
            if count > 0 { body(0..<count) }
            return
        }
        withoutActuallyEscaping(body) { body in
            // Each chunk touches disjoint data; callers guarantee that sharing `body` is safe.
            var loop = ChunkedLoop(count: count, chunks: chunks, body: body)
            withUnsafeMutablePointer(to: &loop) { pointer in
                kiln_parallel_for(Int64(chunks), pointer) { context, chunk in
                    let loop = context!.assumingMemoryBound(to: ChunkedLoop.self).pointee
                    let start = loop.count * Int(chunk) / loop.chunks
                    let end = loop.count * (Int(chunk) + 1) / loop.chunks
                    if start < end { loop.body(start..<end) }
                }
            }
        }
    }
}

/// One `forEachChunk` call as the C loop sees it: chunk c covers count·c/chunks ..< count·(c+1)/chunks.
private struct ChunkedLoop {
    let count: Int
    let chunks: Int
    let body: (Range<Int>) -> Void
}

extension Parallel {
    /// Applies `body` to disjoint index ranges of a buffer of `count` elements, in parallel when it is large.
    public static func forEachSlice(_ count: Int, _ body: (Range<Int>) -> Void) {
        forEachChunk(count, grain: 1 << 16, body)
    }
}

/// A value handed to `Parallel` workers without a compiler check; the caller keeps the accesses disjoint.
struct UncheckedSendable<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}

/// Processor count without Foundation.
enum ProcessInfoLite {
    static var activeProcessorCount: Int {
        #if canImport(Glibc)
        return Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))
        #else
        return 1
        #endif
    }
}

#if canImport(Glibc)
import Glibc
#endif
