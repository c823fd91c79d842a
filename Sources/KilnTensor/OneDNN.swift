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
        init(_ handle: OpaquePointer, threads: Int32) { (self.handle, self.threads) = (handle, threads) }
        deinit { kiln_dnnl_conv_destroy(handle) }

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

    /// out = conv(x, w) + bias; false if oneDNN failed (out is then unspecified).
    static func forward(_ g: ConvGeometry, _ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>,
                        bias: UnsafePointer<Float>?, _ out: UnsafeMutablePointer<Float>) -> Bool {
        guard let conv = convolution(g, bias: bias != nil) else { return false }
        return kiln_dnnl_conv_forward(conv.handle, conv.threads, x, w, bias, out) == 0
    }

    /// dx = the input gradient (overwritten); false if oneDNN failed.
    static func backwardData(_ g: ConvGeometry, _ w: UnsafePointer<Float>, _ dy: UnsafePointer<Float>,
                             _ dx: UnsafeMutablePointer<Float>) -> Bool {
        guard let conv = convolution(g, bias: false) else { return false }
        return kiln_dnnl_conv_backward_data(conv.handle, conv.threads, w, dy, dx) == 0
    }

    /// dw = the weight gradient (overwritten); false if oneDNN failed.
    static func backwardWeights(_ g: ConvGeometry, _ x: UnsafePointer<Float>, _ dy: UnsafePointer<Float>,
                                _ dw: UnsafeMutablePointer<Float>) -> Bool {
        guard let conv = convolution(g, bias: false) else { return false }
        return kiln_dnnl_conv_backward_weights(conv.handle, conv.threads, x, dy, dw) == 0
    }
}
