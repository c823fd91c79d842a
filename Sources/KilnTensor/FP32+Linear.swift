import KilnGraph

extension FP32 {
    /// Matrix product a [..., M, K] · b [..., K, N] with NumPy broadcasting of the leading dimensions.
    /// `transposeA` / `transposeB`: that operand is stored with its last two dimensions swapped (a [..., K, M],
    /// b [..., N, K]) and is used transposed, without a transposed copy (the backward rule's products).
    public static func matMul(_ a: Tensor, _ b: Tensor, transposeA: Bool = false, transposeB: Bool = false) -> Tensor {
        _ = blasConfigured
        func swapLast(_ shape: [Int]) -> [Int] {
            shape.count < 2 ? shape : shape.dropLast(2) + [shape[shape.count - 1], shape[shape.count - 2]]
        }
        precondition(!(transposeA || transposeB) || (a.rank >= 2 && b.rank >= 2), "a transposed operand needs rank 2")
        let (aShape, bShape) = (transposeA ? swapLast(a.shape) : a.shape, transposeB ? swapLast(b.shape) : b.shape)
        let shape = try! Op.matMul.outputShape(inputShapes: [aShape, bShape])
        let (m, k, n) = (aShape[aShape.count - 2], aShape[aShape.count - 1], bShape[bShape.count - 1])
        // Row-major leading dimensions of the stored matrices; row r of op(a) starts at r · rowStep.
        let (lda, ldb) = (transposeA ? m : k, transposeB ? k : n)
        let rowStep = transposeA ? 1 : k
        let batchShape = Array(shape.dropLast(2))
        let batches = batchShape.elementCount
        // Offsets of each batch's matrix in a and b, by broadcasting matrix indices.
        let aBatch = Array(aShape.dropLast(2)), bBatch = Array(bShape.dropLast(2))
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
                            BLAS.sgemm(transA: transposeA, transB: transposeB, m: rows.count, n: n, k: k,
                                       a: aa.pointer + rows.lowerBound * rowStep, lda: lda, b: bb.pointer, ldb: ldb,
                                       c: oo.pointer + rows.lowerBound * n, ldc: n)
                        }
                        return
                    }
                    Parallel.forEachChunk(batches) { range in
                        for i in range {
                            BLAS.sgemm(transA: transposeA, transB: transposeB, m: m, n: n, k: k,
                                       a: aa.pointer + aIndex[i] * m * k, lda: lda, b: bb.pointer + bIndex[i] * k * n,
                                       ldb: ldb, c: oo.pointer + i * m * n, ldc: n)
                        }
                    }
                }
            }
        }
        return Tensor(shape: shape, scalars: out)
    }
}
