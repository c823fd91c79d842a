import KilnGraph

/// The quantizer's differentiable ops (fake quantization, LSQ with QDrop, AdaRound) and their SIMD kernels.
extension Tape {
    /// Fake quantization with the straight-through estimator: y = s · (clamp(round(x/s) + z, lo, hi) − z); the
    /// gradient passes where x is inside the representable range and is zero outside.
    public func fakeQuantize(_ x: Variable, scale s: Float, zeroPoint z: Float, levels: ClosedRange<Float>) -> Variable {
        let xv = x.value
        let y = Tensor(shape: xv.shape, scalars: xv.scalars.map { v in
            s * (min(max((v / s).rounded(.toNearestOrEven) + z, levels.lowerBound), levels.upperBound) - z)
        })
        return record(y, inputs: [x]) { dy, _ in
            [Tensor(shape: xv.shape, scalars: zip(dy.scalars, xv.scalars).map { d, v in
                let q = (v / s).rounded(.toNearestOrEven) + z
                return q >= levels.lowerBound && q <= levels.upperBound ? d : 0
            })]
        }
    }

    /// Learned-step-size quantization (LSQ): y = s · (clamp(round(x/s) + z, lo, hi) − z) with step `step` ([1] for
    /// per-tensor, or [C] per channel along `axis`) learned. Gradients: straight-through to x inside the range;
    /// to s, (round(x/s) − x/s) inside and the clamp bound (minus z) outside, times `gradientScale`.
    /// `quantized` (QDrop) keeps the quantized value only where it is true and passes x through elsewhere.
    public func lsqQuantize(_ x: Variable, step: Variable, zeroPoint z: Float, levels: ClosedRange<Float>,
                            axis: Int = 0, gradientScale: Float = 1, quantized mask: [Bool]? = nil) -> Variable {
        let xv = x.value
        precondition(mask == nil || mask!.count == xv.count, "one QDrop choice per element")
        let perChannel = step.value.count > 1
        let (_, channels, inner) = perChannel ? FP32.split(xv.shape, at: axis) : (1, 1, xv.count)
        let steps = step.value.scalars
        let grid = LSQGrid(zeroPoint: z, levels: levels)
        let count = xv.count
        let keep = mask.map { $0.map { Float($0 ? 1 : 0) } } ?? [Float](repeating: 1, count: count)
        // Runs of elements sharing one step: the whole tensor, or each channel plane; split into blocks of eight
        // (the kernels' lanes) spread over the threads.
        let runLength = perChannel ? inner : count
        let blocks = LSQBlocks(count: count, runLength: runLength)
        func runStep(_ run: Int) -> Float { steps[perChannel ? run % channels : 0] }
        let y = [Float](unsafeUninitializedCapacity: count) { out, initialized in
            xv.scalars.withUnsafeBufferPointer { source in
                keep.withUnsafeBufferPointer { keep in
                    guard count > 0 else { return }
                    let (x, k, o) = (UnsafeSendablePointer(source.baseAddress!), UnsafeSendablePointer(keep.baseAddress!),
                                     UnsafeMutableSendablePointer(out.baseAddress!))
                    blocks.forEachPiece { run, start, length, _ in
                        grid.forward(x.pointer + start, k.pointer + start, o.pointer + start, count: length,
                                     step: runStep(run))
                    }
                }
            }
            initialized = count
        }
        let stepShape = step.shape
        return record(Tensor(shape: xv.shape, scalars: y), inputs: [x, step]) { dy, needs in
            var ds = [Float](repeating: 0, count: steps.count)
            // Each block's step-gradient lanes are kept and summed afterwards in order, run by run: the same sums as
            // one pass over each run, whatever the thread count.
            let contributions = UnsafeMutablePointer<LSQGrid.Lanes>.allocate(capacity: max(blocks.total, 1))
            defer { contributions.deallocate() }
            let dx = [Float](unsafeUninitializedCapacity: count) { dxBuffer, initialized in
                dy.scalars.withUnsafeBufferPointer { g in
                    xv.scalars.withUnsafeBufferPointer { source in
                        keep.withUnsafeBufferPointer { keep in
                            guard count > 0 else { return }
                            let (x, k, d) = (UnsafeSendablePointer(source.baseAddress!), UnsafeSendablePointer(keep.baseAddress!),
                                             UnsafeSendablePointer(g.baseAddress!))
                            let (out, lanes) = (UnsafeMutableSendablePointer(dxBuffer.baseAddress!),
                                                UnsafeMutableSendablePointer(contributions))
                            blocks.forEachPiece { run, start, length, block in
                                grid.backward(x.pointer + start, k.pointer + start, d.pointer + start, out.pointer + start,
                                              count: length, step: runStep(run), lanes: lanes.pointer + block)
                            }
                        }
                    }
                }
                initialized = count
            }
            for run in 0..<blocks.runs {
                var sum = LSQGrid.Lanes()
                for block in (run * blocks.perRun)..<((run + 1) * blocks.perRun) { sum += contributions[block] }
                ds[perChannel ? run % channels : 0] += sum.sum()
            }
            return [needs[0] ? Tensor(shape: xv.shape, scalars: dx) : nil,
                    needs[1] ? Tensor(shape: stepShape, scalars: ds.map { $0 * gradientScale }) : nil]
        }
    }

    /// AdaRound's rectified sigmoid h(V) = clamp(σ(V)·(ζ − γ) + γ, 0, 1) with ζ = 1.1, γ = −0.1: soft rounding bits.
    public func rectifiedSigmoid(_ v: Variable) -> Variable {
        let (zeta, gamma): (Float, Float) = (1.1, -0.1)
        let sigma = v.value.scalars.map { 1 / (1 + exponential(-$0)) }
        let y = Tensor(shape: v.shape, scalars: sigma.map { min(max($0 * (zeta - gamma) + gamma, 0), 1) })
        return record(y, inputs: [v]) { dy, _ in
            [Tensor(shape: dy.shape, scalars: (0..<dy.count).map { i in
                let h = sigma[i] * (zeta - gamma) + gamma
                return h > 0 && h < 1 ? dy.scalars[i] * sigma[i] * (1 - sigma[i]) * (zeta - gamma) : 0
            })]
        }
    }

    /// Weights rebuilt from frozen integer floors and soft bits with a learned per-channel step (Genie-M):
    /// w = step[c] · clamp(floor + bits, lowest[c], highest[c]). Gradients to the bits (inside the range) and to
    /// the step.
    public func softQuantizedWeights(floor: Tensor, bits: Variable, step: Variable, lowest: [Float], highest: [Float]) -> Variable {
        let channels = step.value.count
        precondition(lowest.count == channels && highest.count == channels, "one level range per channel")
        let inner = floor.count / channels
        let steps = step.value.scalars, bitValues = bits.value.scalars
        let levelsValue = (0..<floor.count).map { i in
            min(max(floor.scalars[i] + bitValues[i], lowest[i / inner]), highest[i / inner])
        }
        let y = Tensor(shape: floor.shape, scalars: levelsValue.enumerated().map { $1 * steps[$0 / inner] })
        let stepShape = step.shape
        return record(y, inputs: [bits, step]) { dy, needs in
            var dBits = [Float](repeating: 0, count: floor.count), dStep = [Float](repeating: 0, count: channels)
            for i in 0..<floor.count {
                let c = i / inner
                dStep[c] += dy.scalars[i] * levelsValue[i]
                let raw = floor.scalars[i] + bitValues[i]
                if raw >= lowest[c] && raw <= highest[c] { dBits[i] = dy.scalars[i] * steps[c] }
            }
            return [needs[0] ? Tensor(shape: floor.shape, scalars: dBits) : nil,
                    needs[1] ? Tensor(shape: stepShape, scalars: dStep) : nil]
        }
    }

    /// AdaRound's rounding regulariser Σ 1 − |2h − 1|^β, pushing soft bits h to 0 or 1.
    public func roundingRegularizer(_ h: Variable, beta: Float) -> Variable {
        let hv = h.value.scalars
        let total = hv.reduce(0.0) { $0 + Double(1 - pow(abs(2 * $1 - 1), beta)) }
        return record(Tensor(scalar: Float(total)), inputs: [h]) { dy, _ in
            [Tensor(shape: h.shape, scalars: hv.map { x in
                let u = 2 * x - 1
                guard u != 0 else { return 0 }
                return -dy.scalars[0] * beta * pow(abs(u), beta - 1) * (u > 0 ? 2 : -2)
            })]
        }
    }
}

/// The LSQ forward and backward over a run of elements sharing one step, eight lanes at a time. x/s is clamped
/// just outside the levels before rounding (same result), so rounding half to even by adding and subtracting
/// 1.5·2^23 is exact.
struct LSQGrid {
    let zeroPoint: Float
    let low: Float, high: Float
    let below: Float, above: Float

    init(zeroPoint z: Float, levels: ClosedRange<Float>) {
        zeroPoint = z
        (low, high) = (levels.lowerBound, levels.upperBound)
        (below, above) = (low - z - 1, high - z + 1)
    }

    typealias Lanes = SIMD8<Float>
    static let magic = Lanes(repeating: 12_582_912)

    /// Clamped x/s and its rounding.
    @inline(__always)
    func scaled(_ x: Lanes, _ step: Float) -> (scaled: Lanes, rounded: Lanes) {
        let t = clamp(x / step, below, above)
        return (t, (t + LSQGrid.magic) - LSQGrid.magic)
    }

    /// Lane-wise clamp (the standard library's pointwise min/max are not inlined).
    @inline(__always)
    func clamp(_ x: Lanes, _ lower: Float, _ upper: Float) -> Lanes {
        var y = x
        y.replace(with: lower, where: y .< lower)
        y.replace(with: upper, where: y .> upper)
        return y
    }

    /// out = keep ? s·(clamp(round(x/s) + z) − z) : x.
    func forward(_ x: UnsafePointer<Float>, _ keep: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, count: Int, step: Float) {
        var i = 0
        while i < count {
            let n = min(8, count - i)
            let v = load(x + i, n), k = load(keep + i, n)
            let q = clamp(scaled(v, step).rounded + zeroPoint, low, high)
            var result = (q - zeroPoint) * step
            result.replace(with: v, where: k .== 0)
            store(result, out + i, n)
            i += n
        }
    }

    /// Writes dL/dx, and each block of eight's dL/ds lanes (before any gradient scale) to lanes[0], lanes[1], ….
    func backward(_ x: UnsafePointer<Float>, _ keep: UnsafePointer<Float>, _ dy: UnsafePointer<Float>, _ dx: UnsafeMutablePointer<Float>,
                  count: Int, step: Float, lanes: UnsafeMutablePointer<Lanes>) {
        let lowLanes = Lanes(repeating: low), highLanes = Lanes(repeating: high)
        var i = 0
        while i < count {
            let n = min(8, count - i)
            let v = load(x + i, n), k = load(keep + i, n), g = load(dy + i, n)
            let (t, r) = scaled(v, step)
            let q = r + zeroPoint
            let under = q .< lowLanes, over = q .> highLanes
            let inside = .!(under .| over)
            // Inside: dx = g, ds = g·(round − scaled); outside: dx = 0, ds = g·(bound − z). Dropped: dx = g, ds = 0.
            var local = r - t
            local.replace(with: low - zeroPoint, where: under)
            local.replace(with: high - zeroPoint, where: over)
            lanes[i / 8] = k * g * local
            var pass = Lanes(repeating: 0)
            pass.replace(with: 1, where: inside)
            store(g * (k * pass + (1 - k)), dx + i, n)
            i += n
        }
    }

    @inline(__always)
    func load(_ p: UnsafePointer<Float>, _ n: Int) -> Lanes {
        if n == 8 { return UnsafeRawPointer(p).loadUnaligned(as: Lanes.self) }
        var lanes = Lanes()
        for j in 0..<n { lanes[j] = p[j] }
        return lanes
    }

    @inline(__always)
    func store(_ lanes: Lanes, _ p: UnsafeMutablePointer<Float>, _ n: Int) {
        if n == 8 {
            UnsafeMutableRawPointer(p).storeBytes(of: lanes, as: Lanes.self)
            return
        }
        for j in 0..<n { p[j] = lanes[j] }
    }
}

/// A tensor as runs of `runLength` elements sharing one LSQ step, each run cut into blocks of eight (its last one
/// possibly shorter), the blocks numbered run by run.
struct LSQBlocks {
    let count: Int, runLength: Int
    /// Runs, and blocks per run.
    let runs: Int, perRun: Int
    var total: Int { runs * perRun }

    init(count: Int, runLength: Int) {
        (self.count, self.runLength) = (count, runLength)
        runs = runLength > 0 ? count / runLength : 0
        perRun = (runLength + 7) / 8
    }

    /// Calls `body(run, start, length, firstBlock)` for pieces of consecutive whole blocks within one run, covering
    /// every element once; pieces run in parallel.
    @inline(__always)
    func forEachPiece(_ body: (_ run: Int, _ start: Int, _ length: Int, _ firstBlock: Int) -> Void) {
        let (perRun, runLength) = (self.perRun, self.runLength)
        Parallel.forEachChunk(total, grain: 2048) { range in
            var block = range.lowerBound
            while block < range.upperBound {
                let run = block / perRun
                let last = min(range.upperBound, (run + 1) * perRun)
                let from = (block - run * perRun) * 8, to = min((last - run * perRun) * 8, runLength)
                body(run, run * runLength + from, to - from, block)
                block = last
            }
        }
    }
}

#if canImport(Glibc)
import Glibc
#endif
