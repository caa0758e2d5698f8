import CBLAS

/// A dense layer y = x·Wᵀ + b with Hugging Face's (out, in) weight layout.
public enum Linear {
    /// out (N, OC) = inp (N, IC) · weight (OC, IC)ᵀ [+ bias (OC)]; with `accumulate`, adds to out.
    public static func forward(_ out: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>,
                               _ weight: UnsafePointer<Float>, _ bias: UnsafePointer<Float>?,
                               _ N: Int, _ IC: Int, _ OC: Int, accumulate: Bool = false) {
        // (N, IC) x (IC, OC) -> (N, OC): A = inp no-trans, B = weight transposed.
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(N), Int32(OC), Int32(IC),
                    1, inp, Int32(IC), weight, Int32(IC), accumulate ? 1 : 0, out, Int32(OC))
        if let bias {
            for n in 0..<N {
                let y = out + n * OC
                for o in 0..<OC { y[o] += bias[o] }
            }
        }
    }

    /// dinp (N, IC) += dout·W; dweight (OC, IC) += doutᵀ·inp; dbias (OC) += Σ_n dout.
    /// Each gradient is skipped when nil (frozen weights, or no input gradient wanted). With
    /// `accumulateInput` false, dinp is written instead of added to: the first of several
    /// products into one activation gradient then needs no zeroed buffer.
    public static func backward(_ dinp: UnsafeMutablePointer<Float>?, _ dweight: UnsafeMutablePointer<Float>?,
                                _ dbias: UnsafeMutablePointer<Float>?,
                                _ dout: UnsafePointer<Float>, _ inp: UnsafePointer<Float>,
                                _ weight: UnsafePointer<Float>, _ N: Int, _ IC: Int, _ OC: Int, accumulateInput: Bool = true) {
        if let dinp {
            // (N, OC) x (OC, IC) -> (N, IC)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(N), Int32(IC), Int32(OC),
                        1, dout, Int32(OC), weight, Int32(IC), accumulateInput ? 1 : 0, dinp, Int32(IC))
        }
        if let dweight {
            // (OC, N) x (N, IC) -> (OC, IC): A = dout transposed.
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(OC), Int32(IC), Int32(N),
                        1, dout, Int32(OC), inp, Int32(IC), 1, dweight, Int32(IC))
        }
        if let dbias {
            for n in 0..<N {
                let dy = dout + n * OC
                for o in 0..<OC { dbias[o] += dy[o] }
            }
        }
    }
}
