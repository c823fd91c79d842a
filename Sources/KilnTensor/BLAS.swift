import COpenBLAS

/// Row-major single-precision matrix products on OpenBLAS.
public enum BLAS {
    /// Makes OpenBLAS single-threaded: Kiln parallelises around its calls with `Parallel` instead, which keeps
    /// small per-image products from oversubscribing the cores.
    public static func useSingleThread() {
        openblas_set_num_threads(1)
    }

    /// C[m×n] = alpha · op(A)[m×k] · op(B)[k×n] + beta · C, row-major with leading dimensions lda, ldb, ldc.
    @inline(__always)
    public static func sgemm(transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int,
                             alpha: Float = 1, a: UnsafePointer<Float>, lda: Int,
                             b: UnsafePointer<Float>, ldb: Int,
                             beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int) {
        if m == 0 || n == 0 { return }
        if k == 0 {
            for i in 0..<m { for j in 0..<n { c[i * ldc + j] *= beta } }
            return
        }
        cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                    blasint(m), blasint(n), blasint(k), alpha, a, blasint(lda), b, blasint(ldb), beta, c,
                    blasint(ldc))
    }
}

/// Sets OpenBLAS to one thread once per process, before the first product.
let blasConfigured: Void = BLAS.useSingleThread()
