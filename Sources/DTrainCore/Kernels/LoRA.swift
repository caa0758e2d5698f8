import CBLAS

/// A low-rank adapter beside a frozen linear layer, in PEFT's convention:
/// y += scale · B (A x), with A (r, IC) and B (OC, r).
///
/// The pieces are separate so that adapters reading the same input (q/k/v, gate/up) can share
/// one A product: their A matrices stacked are one (R = k·r, IC) matrix, and their products
/// lie side by side in one (N, R) block, each adapter's B reading its r columns (leading
/// dimension R).
public enum LoRA {
    /// out (N, OC) += scale · xa · Bᵀ, where xa (N, r) = inp (N, IC) · Aᵀ is kept for backward.
    public static func forward(_ out: UnsafeMutablePointer<Float>, _ xa: UnsafeMutablePointer<Float>,
                               _ inp: UnsafePointer<Float>, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>,
                               _ N: Int, _ IC: Int, _ OC: Int, _ r: Int, scale: Float) {
        forwardA(xa, inp, a, N, IC, r)
        forwardB(out, xa, r, b, N, OC, r, scale: scale)
    }

    /// xa (N, R) = inp (N, IC) · A (R, IC)ᵀ.
    public static func forwardA(_ xa: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>, _ a: UnsafePointer<Float>,
                                _ N: Int, _ IC: Int, _ R: Int) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(N), Int32(R), Int32(IC),
                    1, inp, Int32(IC), a, Int32(IC), 0, xa, Int32(R))
    }

    /// out (N, OC) += scale · xa (N, r; leading dimension ldxa) · B (OC, r)ᵀ.
    public static func forwardB(_ out: UnsafeMutablePointer<Float>, _ xa: UnsafePointer<Float>, _ ldxa: Int,
                                _ b: UnsafePointer<Float>, _ N: Int, _ OC: Int, _ r: Int, scale: Float) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(N), Int32(OC), Int32(r),
                    scale, xa, Int32(ldxa), b, Int32(r), 1, out, Int32(OC))
    }

    /// dinp (N, IC) += ∂/∂inp (when non-nil), da (r, IC) += ∂/∂A, db (OC, r) += ∂/∂B.
    /// dxa (N, r) is scratch; dout (N, OC); inp, xa, a, b as in forward.
    public static func backward(_ dinp: UnsafeMutablePointer<Float>?, _ da: UnsafeMutablePointer<Float>,
                                _ db: UnsafeMutablePointer<Float>, _ dxa: UnsafeMutablePointer<Float>,
                                _ dout: UnsafePointer<Float>, _ inp: UnsafePointer<Float>, _ xa: UnsafePointer<Float>,
                                _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>,
                                _ N: Int, _ IC: Int, _ OC: Int, _ r: Int, scale: Float) {
        backwardB(db, dxa, r, dout, xa, r, b, N, OC, r, scale: scale)
        backwardA(dinp, da, dxa, inp, a, N, IC, r)
    }

    /// db (OC, r) += scale · dout (N, OC)ᵀ · xa (N, r; ld ldxa); dxa (N, r; ld lddxa) = scale · dout · B.
    public static func backwardB(_ db: UnsafeMutablePointer<Float>, _ dxa: UnsafeMutablePointer<Float>, _ lddxa: Int,
                                 _ dout: UnsafePointer<Float>, _ xa: UnsafePointer<Float>, _ ldxa: Int,
                                 _ b: UnsafePointer<Float>, _ N: Int, _ OC: Int, _ r: Int, scale: Float) {
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(OC), Int32(r), Int32(N),
                    scale, dout, Int32(OC), xa, Int32(ldxa), 1, db, Int32(r))
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(N), Int32(r), Int32(OC),
                    scale, dout, Int32(OC), b, Int32(r), 0, dxa, Int32(lddxa))
    }

    /// da (R, IC) += dxa (N, R)ᵀ · inp (N, IC); dinp (N, IC) += dxa · A (R, IC) when non-nil.
    public static func backwardA(_ dinp: UnsafeMutablePointer<Float>?, _ da: UnsafeMutablePointer<Float>,
                                 _ dxa: UnsafePointer<Float>, _ inp: UnsafePointer<Float>, _ a: UnsafePointer<Float>,
                                 _ N: Int, _ IC: Int, _ R: Int) {
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(R), Int32(IC), Int32(N),
                    1, dxa, Int32(R), inp, Int32(IC), 1, da, Int32(IC))
        if let dinp {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(N), Int32(IC), Int32(R),
                        1, dxa, Int32(R), a, Int32(IC), 1, dinp, Int32(IC))
        }
    }
}
