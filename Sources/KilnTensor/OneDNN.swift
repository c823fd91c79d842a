import CKilnFP32
import Synchronization

/// fp32 convolutions on oneDNN (what PyTorch runs on CPUs): one set of primitives per convolution shape, made on
/// first use and kept for the process. A shape oneDNN cannot run returns nil and the caller takes the im2col path.
enum OneDNN {
    /// The primitives of one convolution shape.
    final class Convolution: @unchecked Sendable {
        let handle: OpaquePointer
        /// The thread count the primitives were made for and run with.
        let threads: Int32
        /// Per direction (forward, backward-data), constant weights seen, most recent last (`prepared`).
        private let seen = Mutex<[[PreparedWeights]]>([[], []])
        /// Weight arrays remembered per direction (ResNet-18 has four convolutions of one shape).
        static let preparedCapacity = 16

        init(_ handle: OpaquePointer, threads: Int32) { (self.handle, self.threads) = (handle, threads) }
        deinit { kiln_dnnl_conv_destroy(handle) }

        /// `weights` in direction `which`'s own layout, reordered on the second call with the same constant array
        /// (a frozen teacher's weights, used every synthesis step) and kept; nil: the call reorders them itself.
        func prepared(_ which: Int32, _ weights: [Float]) -> PreparedWeights? {
            let size = kiln_dnnl_conv_prepared_weights_size(handle, which)
            guard size > 0 else { return nil }
            let address = weights.withUnsafeBufferPointer { UnsafeRawPointer($0.baseAddress!) }
            return seen.withLock { lists -> PreparedWeights? in
                let direction = Int(which)
                guard let index = lists[direction].firstIndex(where: { $0.address == address }) else {
                    lists[direction].append(PreparedWeights(source: weights, address: address))
                    if lists[direction].count > Self.preparedCapacity { lists[direction].removeFirst() }
                    return nil
                }
                let entry = lists[direction].remove(at: index)
                lists[direction].append(entry)
                if entry.buffer == nil {
                    let buffer = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 64)
                    guard kiln_dnnl_conv_prepare_weights(handle, which, threads, weights, buffer) == 0 else {
                        buffer.deallocate()
                        return nil
                    }
                    entry.buffer = buffer
                }
                return entry
            }
        }

        /// oneDNN's name of the implementation it chose for the forward pass.
        var forwardImplementation: String { String(cString: kiln_dnnl_conv_implementation(handle, 0)) }
    }

    /// A shape and the thread count its primitives are made for (oneDNN sizes their work split and scratch memory
    /// by it, so they run with that count only).
    private struct Key: Hashable {
        let input: [Int], weight: [Int], strides: [Int], dilations: [Int], pads: [Int], group: Int, bias: Bool
        let threads: Int
    }

    /// Shapes seen so far (nil: oneDNN refused the shape). Bounded: cleared when it reaches `capacity` shapes.
    private static let cache = Mutex<[Key: Convolution?]>([:])
    private static let capacity = 512

    /// The primitives for `geometry` at the current thread count, or nil when oneDNN cannot run it.
    static func convolution(_ g: ConvGeometry, bias: Bool) -> Convolution? {
        let key = Key(input: [g.n, g.c, g.h, g.w], weight: [g.m, g.cg, g.kh, g.kw], strides: [g.sh, g.sw],
                      dilations: [g.dh, g.dw], pads: [g.pt, g.pl, g.pb, g.pr], group: g.group, bias: bias,
                      threads: Parallel.threadCount)
        if let known = cache.withLock({ $0[key] }) { return known }
        var shape = kiln_dnnl_conv_shape(
            n: Int64(g.n), c: Int64(g.c), h: Int64(g.h), w: Int64(g.w), m: Int64(g.m), kh: Int64(g.kh),
            kw: Int64(g.kw), group: Int64(g.group), oh: Int64(g.oh), ow: Int64(g.ow), stride_h: Int64(g.sh),
            stride_w: Int64(g.sw), dilation_h: Int64(g.dh), dilation_w: Int64(g.dw), pad_top: Int64(g.pt),
            pad_left: Int64(g.pl), pad_bottom: Int64(g.pb), pad_right: Int64(g.pr), has_bias: bias ? 1 : 0)
        var error = [CChar](repeating: 0, count: 256)
        let made = kiln_dnnl_conv_create(&shape, Int32(key.threads), &error, error.count).map {
            Convolution($0, threads: Int32(key.threads))
        }
        return cache.withLock { plans in
            if let existing = plans[key] { return existing }
            if plans.count >= capacity { plans.removeAll() }
            plans[key] = made
            return made
        }
    }

    /// Weights reordered into a direction's layout, kept with the array they came from: holding the array keeps
    /// its buffer alive and shared (so a write to it would copy first), hence the same base address means the same
    /// values.
    final class PreparedWeights: @unchecked Sendable {
        let source: [Float]
        let address: UnsafeRawPointer
        /// The reordered weights, made on the second sighting.
        var buffer: UnsafeMutableRawPointer?

        init(source: [Float], address: UnsafeRawPointer) { (self.source, self.address) = (source, address) }
        deinit { buffer?.deallocate() }
    }

    /// Runs `body` with the weights to pass and whether they are already in the direction's layout: the prepared
    /// copy of constant weights seen before, else the plain array.
    private static func withWeights(_ conv: Convolution, _ which: Int32, _ weights: [Float], constant: Bool,
                                    _ body: (UnsafeRawPointer, Int32) -> Bool) -> Bool {
        if constant, let prepared = conv.prepared(which, weights), let buffer = prepared.buffer {
            return withExtendedLifetime(prepared) { body(UnsafeRawPointer(buffer), 1) }
        }
        return weights.withUnsafeBufferPointer { body(UnsafeRawPointer($0.baseAddress!), 0) }
    }

    /// out = conv(x, w) + bias; false if oneDNN failed (out is then unspecified). `constant`: the weights are a
    /// frozen model's, used again unchanged, so their reordered copy is kept.
    static func forward(_ g: ConvGeometry, _ x: UnsafePointer<Float>, weights: [Float], constant: Bool,
                        bias: UnsafePointer<Float>?, _ out: UnsafeMutablePointer<Float>) -> Bool {
        guard let conv = convolution(g, bias: bias != nil) else { return false }
        return withWeights(conv, 0, weights, constant: constant) { w, prepared in
            kiln_dnnl_conv_forward(conv.handle, conv.threads, x, w.assumingMemoryBound(to: Float.self), bias, out,
                                   prepared) == 0
        }
    }

    /// dx = the input gradient (overwritten); false if oneDNN failed. `constant` as for `forward`.
    static func backwardData(_ g: ConvGeometry, weights: [Float], constant: Bool, _ dy: UnsafePointer<Float>,
                             _ dx: UnsafeMutablePointer<Float>) -> Bool {
        guard let conv = convolution(g, bias: false) else { return false }
        return withWeights(conv, 1, weights, constant: constant) { w, prepared in
            kiln_dnnl_conv_backward_data(conv.handle, conv.threads, w.assumingMemoryBound(to: Float.self), dy, dx,
                                         prepared) == 0
        }
    }

    /// dw = the weight gradient (overwritten); false if oneDNN failed.
    static func backwardWeights(_ g: ConvGeometry, _ x: UnsafePointer<Float>, _ dy: UnsafePointer<Float>,
                                _ dw: UnsafeMutablePointer<Float>) -> Bool {
        guard let conv = convolution(g, bias: false) else { return false }
        return kiln_dnnl_conv_backward_weights(conv.handle, conv.threads, x, dy, dw) == 0
    }
}
