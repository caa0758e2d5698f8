import CBLAS

/// A low-rank adapter beside a frozen linear layer, in PEFT's convention:
/// y += scale · B (A x), with A (r, IC) and B (OC, r).
public enum LoRA {
    /// out (N, OC) += scale · xa · Bᵀ, where xa (N, r) = inp (N, IC) · Aᵀ is kept for backward.
    public static func forward(_ out: UnsafeMutablePointer<Float>, _ xa: UnsafeMutablePointer<Float>,
                               _ inp: UnsafePointer<Float>, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>,
                               _ N: Int, _ IC: Int, _ OC: Int, _ r: Int, scale: Float) {
        // xa (N, r) = inp (N, IC) · A (r, IC)ᵀ
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(N), Int32(r), Int32(IC),
                    1, inp, Int32(IC), a, Int32(IC), 0, xa, Int32(r))
        // out (N, OC) += scale · xa (N, r) · B (OC, r)ᵀ
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(N), Int32(OC), Int32(r),
                    scale, xa, Int32(r), b, Int32(r), 1, out, Int32(OC))
    }

    /// dinp (N, IC) += ∂/∂inp (when non-nil), da (r, IC) += ∂/∂A, db (OC, r) += ∂/∂B.
    /// dxa (N, r) is scratch; dout (N, OC); inp, xa, a, b as in forward.
    public static func backward(_ dinp: UnsafeMutablePointer<Float>?, _ da: UnsafeMutablePointer<Float>,
                                _ db: UnsafeMutablePointer<Float>, _ dxa: UnsafeMutablePointer<Float>,
                                _ dout: UnsafePointer<Float>, _ inp: UnsafePointer<Float>, _ xa: UnsafePointer<Float>,
                                _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>,
                                _ N: Int, _ IC: Int, _ OC: Int, _ r: Int, scale: Float) {
        // dB (OC, r) += scale · dout (N, OC)ᵀ · xa (N, r)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(OC), Int32(r), Int32(N),
                    scale, dout, Int32(OC), xa, Int32(r), 1, db, Int32(r))
        // dxa (N, r) = scale · dout (N, OC) · B (OC, r)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(N), Int32(r), Int32(OC),
                    scale, dout, Int32(OC), b, Int32(r), 0, dxa, Int32(r))
        // dA (r, IC) += dxa (N, r)ᵀ · inp (N, IC)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(r), Int32(IC), Int32(N),
                    1, dxa, Int32(r), inp, Int32(IC), 1, da, Int32(IC))
        if let dinp {
            // dinp (N, IC) += dxa (N, r) · A (r, IC)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(N), Int32(IC), Int32(r),
                        1, dxa, Int32(r), a, Int32(IC), 1, dinp, Int32(IC))
        }
    }
}
