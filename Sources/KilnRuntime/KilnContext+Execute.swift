import CKilnKernels
import FoundationEssentials
import KilnStudent
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

extension KilnContext {
    /// Runs every layer for `batch` samples: the compiled C kernels where the model has them, the reference kernels
    /// elsewhere (and for every layer when `observe` needs each one's own output).
    /// With `pixels`, the model's one input comes as cropped 8-bit pixels for its input quantizer (`PixelInput`)
    /// and `inputs` is empty.
    func execute(inputs: [UnsafeBufferPointer<Float>], outputs: [UnsafeMutableBufferPointer<Float>], batch: Int,
                 observe: ((Int, [Float]) -> Void)?, profile: UnsafeMutableBufferPointer<UInt64>?,
                 pixels: (bytes: UnsafePointer<UInt8>, input: PixelInput)? = nil) throws {
        let student = model.student
        guard inputs.count == (pixels == nil ? model.inputs.count : 0), outputs.count == model.outputs.count else {
            throw KilnRuntimeError(message: "the model takes \(model.inputs.count) input(s) and \(model.outputs.count) output(s)")
        }
        guard batch >= 1 else { throw KilnRuntimeError(message: "batch size must be at least 1") }
        guard observe == nil || model.compiled.kernels == .reference else {
            throw KilnRuntimeError(message: "observing every layer needs the reference kernels: load the model with kernels: .reference")
        }
        for (buffer, spec) in zip(inputs, model.inputs) where buffer.count != batch * spec.sampleCount {
            throw KilnRuntimeError(message: "input '\(spec.name)' needs \(batch) × \(spec.sampleCount) values, got \(buffer.count)")
        }
        for (buffer, spec) in zip(outputs, model.outputs) where buffer.count != batch * spec.sampleCount {
            throw KilnRuntimeError(message: "output '\(spec.name)' needs room for \(batch) × \(spec.sampleCount) values, got \(buffer.count)")
        }
        let plan = prepare(batch: batch)
        var floatInputs: [Int: UnsafePointer<Float>] = [:]
        for (index, buffer) in zip(student.inputs, inputs) { floatInputs[index] = buffer.baseAddress! }
        var floatOutputs: [Int: UnsafeMutablePointer<Float>] = [:]
        for (index, buffer) in zip(student.outputs, outputs) { floatOutputs[index] = buffer.baseAddress! }
        let base = arena
        func bytes(_ activation: Int) -> UnsafeMutablePointer<UInt8> {
            (base + plan.offsets[activation]).assumingMemoryBound(to: UInt8.self)
        }
        /// A float32 activation: the caller's input or output buffer, or an fp32 island's tensor in the arena.
        func floats(_ activation: Int) -> UnsafeMutablePointer<Float> {
            if let output = floatOutputs[activation] { return output }
            if let input = floatInputs[activation] { return UnsafeMutablePointer(mutating: input) }
            return (base + plan.offsets[activation]).assumingMemoryBound(to: Float.self)
        }
        let scratch = (base + plan.scratchOffset).assumingMemoryBound(to: UInt8.self)
        let pointers = (base + plan.tileOffset).assumingMemoryBound(to: UnsafePointer<UInt8>?.self)
        let zeros = (base + plan.zeroOffset).assumingMemoryBound(to: UInt8.self)
        // Diagnostics read every layer's own output, so they run the reference kernels (bit-identical results).
        let compiled = observe == nil ? model.compiled : nil
        var started = profile == nil ? 0 : monotonicNanoseconds()
        for (index, layer) in student.layers.enumerated() {
            defer {
                if let profile {
                    let now = monotonicNanoseconds()
                    profile[index] &+= now &- started
                    started = now
                }
            }
            if let compiled, compiled.skipped.contains(index) { continue }
            if let pixels, index == pixels.input.layer {
                pixels.input.quantize(pixels.bytes, count: batch * model.inputs[0].sampleCount, into: bytes(layer.output))
                continue
            }
            if let compiled, let conv = compiled.convs[index] {
                let residual = conv.residual.map { bytes($0.input) }
                let output = bytes(conv.finalOutput(layer))
                var cached: Indirection?
                if let offset = plan.indirectionOffsets[index] {
                    cached = Indirection(rows: (base + offset).assumingMemoryBound(to: UnsafePointer<UInt8>?.self),
                                         filled: indirectionFilled[index])
                    indirectionFilled[index] = true
                }
                runCompiled(conv, compiled, layer, batch: batch, input: bytes(layer.inputs[0]), output: output,
                            residual: residual, pointers: pointers, maxTaps: compiled.maxTaps, zeros: zeros,
                            im2col: (base + plan.im2colOffset).assumingMemoryBound(to: UInt8.self), cached: cached)
                continue
            }
            let outInfo = student.activations[layer.output]
            let inInfo = layer.inputs.map { student.activations[$0] }
            let outImage = ReferenceKernels.Image(outInfo.shape, batch: batch)
            switch layer.op {
            case .quantize where compiled?.quantize != nil && outInfo.bits == 8:
                let source = floats(layer.inputs[0]), destination = bytes(layer.output)
                let sample = outInfo.shape.dropFirst().reduce(1, *)
                let channels = outInfo.shape.count == 4 ? outInfo.shape[1] : 1, plane = sample / channels
                let q = outInfo.quantization
                let quantize = compiled!.quantize!
                for b in 0..<batch {
                    quantize(source + b * sample, Int32(channels), Int32(plane), q.scale, q.zeroPoint,
                                           destination + b * sample)
                }
            case .maxPool(let p) where compiled != nil:
                let image = ReferenceKernels.Image(inInfo[0].shape, batch: batch)
                let (source, destination) = (bytes(layer.inputs[0]), bytes(layer.output))
                parallelFor(batch * outImage.h) { begin, end, _ in
                    for task in begin..<end {
                        let b = task / outImage.h, oy = task % outImage.h
                        kiln_qu8_maxpool(source + b * image.h * image.w * image.c, Int32(image.h), Int32(image.w),
                                         Int32(image.c), Int32(p.kernel[0]), Int32(p.kernel[1]), Int32(p.strides[0]),
                                         Int32(p.strides[1]), Int32(p.pads[0]), Int32(p.pads[1]), Int32(oy),
                                         Int32(outImage.w), destination + (b * outImage.h + oy) * outImage.w * outImage.c)
                    }
                }
            case .quantize:
                let source = floats(layer.inputs[0]), destination = bytes(layer.output)
                let sample = outInfo.shape.dropFirst().reduce(1, *)
                for b in 0..<batch {
                    for i in 0..<sample {
                        destination[b * sample + ReferenceKernels.memoryOffset(i, outInfo.shape)] =
                            Requantize.quantize(source[b * sample + i], outInfo.quantization, maxLevel: outInfo.maxLevel)
                    }
                }
            case .dequantize:
                let source = bytes(layer.inputs[0]), destination = floats(layer.output)
                let sample = outInfo.shape.dropFirst().reduce(1, *)
                for b in 0..<batch {
                    for i in 0..<sample {
                        destination[b * sample + i] = Requantize.dequantize(
                            source[b * sample + ReferenceKernels.memoryOffset(i, inInfo[0].shape)], inInfo[0].quantization)
                    }
                }
            case .conv(let c), .gemm(let c):
                ReferenceKernels.conv(c, bytes(layer.inputs[0]), ReferenceKernels.Image(inInfo[0].shape, batch: batch),
                                      inInfo[0].quantization, bytes(layer.output), outImage, outInfo.quantization,
                                      scratch: scratch)
            case .add(let clamp):
                ReferenceKernels.add(bytes(layer.inputs[0]), inInfo[0].quantization, bytes(layer.inputs[1]),
                                     inInfo[1].quantization, bytes(layer.output), outInfo.quantization,
                                     count: batch * outInfo.shape.dropFirst().reduce(1, *), clamp: clamp)
            case .maxPool(let p):
                ReferenceKernels.maxPool(p, bytes(layer.inputs[0]), ReferenceKernels.Image(inInfo[0].shape, batch: batch),
                                         bytes(layer.output), outImage)
            case .averagePool(let p):
                ReferenceKernels.averagePool(p, bytes(layer.inputs[0]), ReferenceKernels.Image(inInfo[0].shape, batch: batch),
                                             inInfo[0].quantization, bytes(layer.output), outImage, outInfo.quantization,
                                             maxLevel: outInfo.maxLevel)
            case .globalAveragePool where compiled?.gemm != nil:
                // With a following flattening reshape folded in, the pooled values go straight to the reshape's output.
                let target = compiled!.pooledHeads[index] ?? layer.output
                let image = ReferenceKernels.Image(inInfo[0].shape, batch: batch)
                let (source, destination) = (bytes(layer.inputs[0]), bytes(target))
                let (inQ, outQ) = (inInfo[0].quantization, outInfo.quantization)
                for b in 0..<batch {
                    kiln_qu8_global_average_pool(source + b * image.h * image.w * image.c, Int32(image.h * image.w),
                                                 Int32(image.c), inQ.scale, inQ.zeroPoint, outQ.scale, outQ.zeroPoint,
                                                 outInfo.maxLevel, destination + b * image.c)
                }
            case .globalAveragePool:
                ReferenceKernels.globalAveragePool(bytes(layer.inputs[0]), ReferenceKernels.Image(inInfo[0].shape, batch: batch),
                                                   inInfo[0].quantization, bytes(layer.output), outInfo.quantization,
                                                   maxLevel: outInfo.maxLevel)
            case .concat where compiled?.concatTables[index] != nil:
                let tables = compiled!.concatTables[index]!
                let pixels = batch * (outInfo.shape.count == 4 ? outInfo.shape[2] * outInfo.shape[3] : 1)
                let cy = outInfo.shape[1], destination = bytes(layer.output), chunk = 256
                var start = 0
                for (input, table) in zip(layer.inputs, tables) {
                    let cx = student.activations[input].shape[1], source = bytes(input), offset = start
                    (table ?? []).withUnsafeBufferPointer { mapping in
                        let map = table == nil ? nil : mapping.baseAddress
                        parallelFor((pixels + chunk - 1) / chunk) { begin, end, _ in
                            let first = begin * chunk, count = min(end * chunk, pixels) - first
                            kiln_qu8_copy_channels(source + first * cx, Int32(cx), Int32(count), Int32(cx), map,
                                                   destination + first * cy + offset, Int32(cy))
                        }
                    }
                    start += cx
                }
            case .concat(let axis):
                concat(layer, axis: axis, batch: batch, bytes)
            case .lookup(let l) where compiled?.lookup != nil:
                let (source, destination) = (bytes(layer.inputs[0]), bytes(layer.output))
                let count = batch * outInfo.shape.dropFirst().reduce(1, *), chunk = 1 << 14
                let lookup = compiled!.lookup!
                l.table.withUnsafeBufferPointer { table in
                    parallelFor((count + chunk - 1) / chunk) { begin, end, _ in
                        let first = begin * chunk, last = min(end * chunk, count)
                        lookup(last - first, source + first, table.baseAddress!, destination + first)
                    }
                }
            case .sliceChannels(let start, let count):
                // Rows of C input bytes per pixel (NHWC; a 2-D tensor is one pixel per sample).
                let pixels = batch * (outInfo.shape.count == 4 ? outInfo.shape[2] * outInfo.shape[3] : 1)
                let (source, destination, cx) = (bytes(layer.inputs[0]) + start, bytes(layer.output), inInfo[0].shape[1])
                kiln_qu8_copy_channels(source, Int32(cx), Int32(pixels), Int32(count), nil, destination, Int32(count))
            case .upsampleNearest(let sh, let sw):
                let image = ReferenceKernels.Image(inInfo[0].shape, batch: batch)
                let (source, destination) = (bytes(layer.inputs[0]), bytes(layer.output))
                let (outH, rowBytes) = (image.h * sh, image.w * sw * image.c)
                parallelFor(batch * outH) { begin, end, _ in
                    for task in begin..<end {
                        let b = task / outH, oy = task % outH
                        kiln_qu8_upsample_nearest(source + b * image.h * image.w * image.c, Int32(image.h), Int32(image.w),
                                                  Int32(image.c), Int32(sh), Int32(sw), Int32(oy), destination + task * rowBytes)
                    }
                }
            case .resizeLinear(let r):
                let image = ReferenceKernels.Image(inInfo[0].shape, batch: batch), out = outImage
                let (source, destination) = (bytes(layer.inputs[0]), bytes(layer.output))
                let (first, second, fractions) = model.compiled.resizeColumns[index]!
                first.withUnsafeBufferPointer { x0 in
                    second.withUnsafeBufferPointer { x1 in
                        fractions.withUnsafeBufferPointer { fx in
                            parallelFor(batch * out.h) { begin, end, _ in
                                for task in begin..<end {
                                    let b = task / out.h, tap = r.rows[task % out.h]
                                    kiln_qu8_resize_linear_row(source + b * image.h * image.w * image.c, Int32(image.w), Int32(image.c),
                                                               Int32(tap.first), Int32(tap.second), tap.fraction, x0.baseAddress!,
                                                               x1.baseAddress!, fx.baseAddress!, Int32(out.w), outInfo.maxLevel,
                                                               destination + task * out.w * out.c)
                                }
                            }
                        }
                    }
                }
            case .insertZeros(let sh, let sw):
                let image = ReferenceKernels.Image(inInfo[0].shape, batch: batch), out = outImage
                let (source, destination) = (bytes(layer.inputs[0]), bytes(layer.output))
                let zero = UInt8(truncatingIfNeeded: inInfo[0].quantization.zeroPoint)
                parallelFor(batch * out.h) { begin, end, _ in
                    for task in begin..<end {
                        let b = task / out.h, oy = task % out.h
                        kiln_qu8_insert_zeros(source + b * image.h * image.w * image.c, Int32(image.w), Int32(image.c), Int32(sh),
                                              Int32(sw), zero, Int32(oy), Int32(out.w), destination + task * out.w * out.c)
                    }
                }
            case .permuteChannels:
                let pixels = batch * (outInfo.shape.count == 4 ? outInfo.shape[2] * outInfo.shape[3] : 1)
                model.compiled.permutations[index]!.withUnsafeBufferPointer { indices in
                    kiln_qu8_permute_channels(bytes(layer.inputs[0]), Int32(pixels), Int32(indices.count), indices.baseAddress!,
                                              bytes(layer.output))
                }
            case .mul where compiled != nil:
                let image = ReferenceKernels.Image(inInfo[0].shape, batch: batch)
                let broadcast = inInfo[1].shape != inInfo[0].shape
                let (a, b, y) = (bytes(layer.inputs[0]), bytes(layer.inputs[1]), bytes(layer.output))
                let (qa, qb, qy) = (inInfo[0].quantization, inInfo[1].quantization, outInfo.quantization)
                let multiplier = qa.scale * qb.scale / qy.scale
                // Rows of pixels, in parallel.
                let rows = batch * image.h
                parallelFor(rows) { begin, end, _ in
                    for row in begin..<end {
                        let n = row / image.h, offset = row * image.w * image.c
                        kiln_qu8_mul(a + offset, b + (broadcast ? n * image.c : offset), Int32(image.w), Int32(image.c),
                                     broadcast ? 1 : 0, multiplier, qa.zeroPoint, qb.zeroPoint, qy.zeroPoint, outInfo.maxLevel,
                                     y + offset)
                    }
                }
            case .mul:
                ReferenceKernels.mul(bytes(layer.inputs[0]), inInfo[0].quantization, bytes(layer.inputs[1]), inInfo[1].quantization,
                                     bytes(layer.output), outInfo.quantization, ReferenceKernels.Image(inInfo[0].shape, batch: batch),
                                     broadcast: inInfo[1].shape != inInfo[0].shape, maxLevel: outInfo.maxLevel)
            case .lookup(let l):
                let (source, destination) = (bytes(layer.inputs[0]), bytes(layer.output))
                for i in 0..<(batch * outInfo.shape.dropFirst().reduce(1, *)) { destination[i] = l.table[Int(source[i])] }
            case .channelNorm(let n):
                let pixels = batch * (outInfo.shape.count == 4 ? outInfo.shape[2] * outInfo.shape[3] : 1), c = outInfo.shape[1]
                let (source, destination) = (bytes(layer.inputs[0]), bytes(layer.output))
                let (inQ, outQ) = (inInfo[0].quantization, outInfo.quantization)
                n.scale.withUnsafeBufferPointer { scale in
                    n.shift.withUnsafeBufferPointer { shift in
                        let chunk = 64
                        parallelFor((pixels + chunk - 1) / chunk) { begin, end, _ in
                            let first = begin * chunk, count = min(end * chunk, pixels) - first
                            kiln_qu8_channel_norm(source + first * c, Int32(count), Int32(c), inQ.scale, inQ.zeroPoint, n.epsilon,
                                                  scale.baseAddress!, shift.baseAddress!, outQ.scale, outQ.zeroPoint, outInfo.maxLevel,
                                                  destination + first * c)
                        }
                    }
                }
            case .float(let f):
                func concrete(_ shape: [Int]) -> [Int] { [batch] + shape.dropFirst() }
                let operands = layer.inputs.map { FloatIslandKernels.Operand(data: UnsafePointer(floats($0)),
                                                                            shape: concrete(student.activations[$0].shape)) }
                FloatIslandKernels.run(f, operands, floats(layer.output), concrete(outInfo.shape))
            case .reshape:
                let source = bytes(layer.inputs[0]), destination = bytes(layer.output)
                let sample = outInfo.shape.dropFirst().reduce(1, *)
                for b in 0..<batch {
                    for i in 0..<sample {
                        destination[b * sample + ReferenceKernels.memoryOffset(i, outInfo.shape)] =
                            source[b * sample + ReferenceKernels.memoryOffset(i, inInfo[0].shape)]
                    }
                }
            }
            if let observe, outInfo.type == .uint8 {
                let sample = outInfo.shape.dropFirst().reduce(1, *)
                let source = bytes(layer.output)
                var values = [Float](repeating: 0, count: batch * sample)
                for b in 0..<batch {
                    for i in 0..<sample {
                        values[b * sample + i] = Requantize.dequantize(
                            source[b * sample + ReferenceKernels.memoryOffset(i, outInfo.shape)], outInfo.quantization)
                    }
                }
                observe(index, values)
            } else if let observe, case .float = layer.op {
                observe(index, Array(UnsafeBufferPointer(start: floats(layer.output), count: batch * outInfo.shape.dropFirst().reduce(1, *))))
            }
        }
    }

    /// One conv or gemm layer on the C kernels, parallel over output pixels.
    func runCompiled(_ conv: CompiledConv, _ compiled: CompiledModel, _ layer: Layer, batch: Int,
                             input: UnsafeMutablePointer<UInt8>, output: UnsafeMutablePointer<UInt8>,
                             residual: UnsafeMutablePointer<UInt8>?, pointers: UnsafeMutablePointer<UnsafePointer<UInt8>?>,
                             maxTaps: Int, zeros: UnsafeMutablePointer<UInt8>, im2col: UnsafeMutablePointer<UInt8>,
                             cached: Indirection?) {
        let student = model.student
        let inInfo = student.activations[layer.inputs[0]], outInfo = student.activations[layer.output]
        let m = conv.layer.outputChannels
        var rq = kiln_requant()
        rq.bias = UnsafePointer(conv.bias)
        rq.multiplier = UnsafePointer(conv.multipliers)
        rq.zero_point = outInfo.quantization.zeroPoint
        rq.low = conv.layer.clamp.lowerBound
        rq.high = conv.layer.clamp.upperBound
        rq.ldr = m
        if let fused = conv.residual {
            let other = student.activations[fused.input].quantization, sum = student.activations[fused.output].quantization
            (rq.scale, rq.residual_scale, rq.output_scale) = (outInfo.quantization.scale, other.scale, sum.scale)
            (rq.residual_zero_point, rq.output_zero_point) = (other.zeroPoint, sum.zeroPoint)
            (rq.add_low, rq.add_high) = (fused.clamp.lowerBound, fused.clamp.upperBound)
        }
        let image = ReferenceKernels.Image(inInfo.shape, batch: batch), out = ReferenceKernels.Image(outInfo.shape, batch: batch)
        let weights = UnsafePointer(conv.weights)
        // A fused lookup maps each tile in place right after the kernel writes it.
        let table = conv.lookup.map { UnsafePointer($0.table) }
        switch conv.kind {
        case .indirect, .im2col:
            let l = conv.layer, taps = conv.taps, tile = MemoryPlan.tileRows
            let pixels = out.h * out.w
            // A gemm's batch rows all belong to one "image" of N pixels.
            let images = layer.op.isGemm ? 1 : batch
            let perImage = layer.op.isGemm ? batch : pixels
            let tilesPerImage = (perImage + tile - 1) / tile
            let zeroRow = UnsafePointer(zeros)
            if conv.kind == .indirect {
                zeros.update(repeating: UInt8(truncatingIfNeeded: inInfo.quantization.zeroPoint), count: conv.kc)
            }
            let gemm = compiled.gemmFunction(for: conv)
            let (sh, sw, pt, pl, dh, dw) = (l.strides[0], l.strides[1], l.pads[0], l.pads[1], l.dilations[0], l.dilations[1])
            let (kh, kw) = (l.kernel[0], l.kernel[1])
            let zeroPoint = UInt8(truncatingIfNeeded: inInfo.quantization.zeroPoint)
            if let cached, !cached.filled {
                // Input pointers depend only on the arena and the geometry: fill them once for this plan.
                for b in 0..<images {
                    kiln_qu8_conv_indirection(UnsafePointer(input + b * image.h * image.w * image.c), Int32(image.h),
                                              Int32(image.w), Int32(image.c), Int32(kh), Int32(kw), Int32(sh), Int32(sw),
                                              Int32(pt), Int32(pl), Int32(dh), Int32(dw), Int32(out.w), 0, Int32(perImage),
                                              zeroRow, cached.rows + b * perImage * taps)
                }
            }
            parallelFor(images * tilesPerImage) { begin, end, worker in
                let rows = pointers + worker * tile * maxTaps
                let fields = im2col + worker * tile * compiled.maxIm2colBytes
                var local = rq
                for task in begin..<end {
                    let b = task / tilesPerImage, first = (task % tilesPerImage) * tile
                    let count = min(tile, perImage - first)
                    let base = UnsafePointer(input + b * image.h * image.w * image.c)
                    if cached != nil {
                        // Filled above.
                    } else if layer.op.isGemm || conv.isPointwise {
                        for r in 0..<count { rows[r] = base + (first + r) * image.c }
                    } else if conv.kind == .im2col {
                        kiln_qu8_conv_im2col(base, Int32(image.h), Int32(image.w), Int32(image.c), Int32(kh), Int32(kw),
                                             Int32(sh), Int32(sw), Int32(pt), Int32(pl), Int32(dh), Int32(dw),
                                             Int32(out.w), Int32(first), Int32(count), zeroPoint, Int32(conv.kc), fields)
                        for r in 0..<count { rows[r] = UnsafePointer(fields + r * conv.kc) }
                    } else {
                        kiln_qu8_conv_indirection(base, Int32(image.h), Int32(image.w), Int32(image.c), Int32(kh), Int32(kw),
                                                  Int32(sh), Int32(sw), Int32(pt), Int32(pl), Int32(dh), Int32(dw),
                                                  Int32(out.w), Int32(first), Int32(count), zeroRow, rows)
                    }
                    let row0 = b * perImage + first
                    local.residual = residual.map { UnsafePointer($0 + row0 * m) }
                    gemm(Int32(count), Int32(m), Int32(conv.kc), Int32(taps), cached.map { $0.rows + row0 * taps } ?? rows,
                         weights, output + row0 * m, m, &local)
                    if let table {
                        compiled.lookup!(count * m, output + row0 * m, table, output + row0 * m)
                    }
                }
            }
        case .grouped:
            // Per tile of output pixels, one GEMM per group: its input pointers start at the group's first channel
            // (padding taps read the zero row), its outputs, bias and multipliers at the group's first column.
            let l = conv.layer, taps = conv.taps, tile = MemoryPlan.tileRows
            let (cg, mg) = (image.c / l.group, m / l.group)
            let pixels = out.h * out.w, tilesPerImage = (pixels + tile - 1) / tile
            zeros.update(repeating: UInt8(truncatingIfNeeded: inInfo.quantization.zeroPoint), count: conv.kc)
            let (gemm, zeroRow) = (compiled.gemmFunction(for: conv), UnsafePointer(zeros))
            parallelFor(batch * tilesPerImage) { begin, end, worker in
                let rows = pointers + worker * tile * maxTaps
                var local = rq
                for task in begin..<end {
                    let b = task / tilesPerImage, first = (task % tilesPerImage) * tile
                    let count = min(tile, pixels - first), row0 = b * pixels + first
                    let base = UnsafePointer(input + b * image.h * image.w * image.c)
                    for g in 0..<l.group {
                        kiln_qu8_conv_indirection(base + g * cg, Int32(image.h), Int32(image.w), Int32(image.c), Int32(l.kernel[0]),
                                                  Int32(l.kernel[1]), Int32(l.strides[0]), Int32(l.strides[1]), Int32(l.pads[0]),
                                                  Int32(l.pads[1]), Int32(l.dilations[0]), Int32(l.dilations[1]), Int32(out.w),
                                                  Int32(first), Int32(count), zeroRow, rows)
                        local.bias = UnsafePointer(conv.bias + g * mg)
                        local.multiplier = UnsafePointer(conv.multipliers + g * mg)
                        local.residual = residual.map { UnsafePointer($0 + row0 * m + g * mg) }
                        gemm(Int32(count), Int32(mg), Int32(conv.kc), Int32(taps), rows, weights + g * conv.groupStride,
                             output + row0 * m + g * mg, m, &local)
                    }
                    if let table { compiled.lookup!(count * m, output + row0 * m, table, output + row0 * m) }
                }
            }
        case .depthwise3x3, .depthwise:
            // One output row per task: the 3×3 kernel or the one for any kernel size, then any fused lookup.
            let l = conv.layer
            let zero = UInt8(truncatingIfNeeded: inInfo.quantization.zeroPoint)
            var geometry = kiln_dwconv_geometry(h: Int32(image.h), w: Int32(image.w), c: Int32(m), kh: Int32(l.kernel[0]),
                                                kw: Int32(l.kernel[1]), stride_h: Int32(l.strides[0]), stride_w: Int32(l.strides[1]),
                                                pad_top: Int32(l.pads[0]), pad_left: Int32(l.pads[1]),
                                                dilation_h: Int32(l.dilations[0]), dilation_w: Int32(l.dilations[1]), ow: Int32(out.w))
            let threeByThree = conv.kind == .depthwise3x3 ? compiled.depthwise : nil
            let anySize = compiled.generalDepthwise!
            withUnsafePointer(to: &geometry) { geometry in
                parallelFor(batch * out.h) { begin, end, _ in
                    var local = rq
                    for task in begin..<end {
                        let b = task / out.h, oy = task % out.h
                        let row = (b * out.h + oy) * out.w * m, image0 = input + b * image.h * image.w * image.c
                        local.residual = residual.map { UnsafePointer($0 + row) }
                        if let threeByThree {
                            threeByThree(image0, Int32(image.h), Int32(image.w), Int32(m), Int32(oy), Int32(out.w),
                                         Int32(l.strides[0]), Int32(l.pads[0]), Int32(l.pads[1]), zero, weights, output + row, &local)
                        } else {
                            anySize(image0, geometry, Int32(oy), zero, weights, output + row, &local)
                        }
                        if let table { compiled.lookup!(out.w * m, output + row, table, output + row) }
                    }
                }
            }
        }
    }

    /// Requantized concatenation along a logical axis, done in logical order.
    func concat(_ layer: Layer, axis: Int, batch: Int, _ bytes: (Int) -> UnsafeMutablePointer<UInt8>) {
        let student = model.student
        let out = student.activations[layer.output]
        let destination = bytes(layer.output)
        let outSample = out.shape.dropFirst().reduce(1, *)
        let inner = out.shape[(axis + 1)...].reduce(1, *)
        let outer = out.shape[1..<axis].reduce(1, *)
        var start = 0
        for input in layer.inputs {
            let info = student.activations[input]
            let source = bytes(input)
            let size = info.shape[axis]
            let sample = info.shape.dropFirst().reduce(1, *)
            let same = info.quantization == out.quantization
            for b in 0..<batch {
                for o in 0..<outer {
                    for a in 0..<size {
                        for i in 0..<inner {
                            let logicalIn = (o * size + a) * inner + i
                            let logicalOut = (o * out.shape[axis] + start + a) * inner + i
                            let q = source[b * sample + ReferenceKernels.memoryOffset(logicalIn, info.shape)]
                            destination[b * outSample + ReferenceKernels.memoryOffset(logicalOut, out.shape)] =
                                same ? q : Requantize.quantize(Requantize.dequantize(q, info.quantization), out.quantization, maxLevel: out.maxLevel)
                        }
                    }
                }
            }
            start += size
        }
    }
}
