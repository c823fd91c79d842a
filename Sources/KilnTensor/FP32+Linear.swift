import KilnGraph

extension FP32 {
    /// Matrix product a [..., M, K] · b [..., K, N] with NumPy broadcasting of the leading dimensions.
    public static func matMul(_ a: Tensor, _ b: Tensor) -> Tensor {
        _ = blasConfigured
        let shape = try! Op.matMul.outputShape(inputShapes: [a.shape, b.shape])
        let (m, k, n) = (a.shape[a.rank - 2], a.shape[a.rank - 1], b.shape[b.rank - 1])
        let batchShape = Array(shape.dropLast(2))
        let batches = batchShape.elementCount
        // Offsets of each batch's matrix in a and b, by broadcasting matrix indices.
        let aBatch = Array(a.shape.dropLast(2)), bBatch = Array(b.shape.dropLast(2))
        let aIndex = TensorLayout.expand(Array(0..<aBatch.elementCount), from: aBatch, to: batchShape)
        let bIndex = TensorLayout.expand(Array(0..<bBatch.elementCount), from: bBatch, to: batchShape)
        var out = [Float](repeating: 0, count: shape.elementCount)
        a.scalars.withUnsafeBufferPointer { ap in
            b.scalars.withUnsafeBufferPointer { bp in
                out.withUnsafeMutableBufferPointer { op in
                    let (aa, bb, oo) = (UnsafeSendablePointer(ap.baseAddress!), UnsafeSendablePointer(bp.baseAddress!),
                                        UnsafeMutableSendablePointer(op.baseAddress!))
                    if batches == 1 && m >= 2 * Parallel.threadCount {
                        Parallel.forEachChunk(m) { rows in
                            BLAS.sgemm(m: rows.count, n: n, k: k, a: aa.pointer + rows.lowerBound * k, lda: k,
                                       b: bb.pointer, ldb: n, c: oo.pointer + rows.lowerBound * n, ldc: n)
                        }
                        return
                    }
                    Parallel.forEachChunk(batches) { range in
                        for i in range {
                            BLAS.sgemm(m: m, n: n, k: k, a: aa.pointer + aIndex[i] * m * k, lda: k,
                                       b: bb.pointer + bIndex[i] * k * n, ldb: n, c: oo.pointer + i * m * n, ldc: n)
                        }
                    }
                }
            }
        }
        return Tensor(shape: shape, scalars: out)
    }
}
