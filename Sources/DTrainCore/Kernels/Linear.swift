import CBLAS

/// A dense layer y = x·Wᵀ + b with Hugging Face's (out, in) weight layout.
public enum Linear {
    /// out (N, OC) = inp (N, IC) · weight (OC, IC)ᵀ [+ bias (OC)]; with `accumulate`, adds to out.
    public static func forward(_ out: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>,
                               _ weight: UnsafePointer<Float>, _ bias: UnsafePointer<Float>?,
                               _ N: Int, _ IC: Int, _ OC: Int, accumulate: Bool = false) {
        // (N, IC) x (IC, OC) -> (N, OC): A = inp no-trans, B = weight transposed.
        Parallel.sgemm(false, true, N, OC, IC, 1, inp, IC, weight, IC, accumulate ? 1 : 0, out, OC)
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
        if let dinp { backwardInput(dinp, dout, weight, N, IC, OC, accumulate: accumulateInput) }
        if let dweight { backwardWeights(dweight, dbias, dout, inp, N, IC, OC) }
        else if let dbias { backwardBias(dbias, dout, N, OC) }
    }

    /// dinp (N, IC) (+)= dout (N, OC) · W (OC, IC): the half of `backward` that needs no input.
    public static func backwardInput(_ dinp: UnsafeMutablePointer<Float>, _ dout: UnsafePointer<Float>,
                                     _ weight: UnsafePointer<Float>, _ N: Int, _ IC: Int, _ OC: Int, accumulate: Bool) {
        Parallel.sgemm(false, false, N, IC, OC, 1, dout, OC, weight, IC, accumulate ? 1 : 0, dinp, IC)
    }

    /// dweight (OC, IC) += doutᵀ·inp and, when given, dbias (OC) += Σ_n dout.
    public static func backwardWeights(_ dweight: UnsafeMutablePointer<Float>, _ dbias: UnsafeMutablePointer<Float>?,
                                       _ dout: UnsafePointer<Float>, _ inp: UnsafePointer<Float>,
                                       _ N: Int, _ IC: Int, _ OC: Int) {
        // (OC, N) x (N, IC) -> (OC, IC): A = dout transposed.
        Parallel.sgemm(true, false, OC, IC, N, 1, dout, OC, inp, IC, 1, dweight, IC)
        if let dbias { backwardBias(dbias, dout, N, OC) }
    }

    private static func backwardBias(_ dbias: UnsafeMutablePointer<Float>, _ dout: UnsafePointer<Float>, _ N: Int, _ OC: Int) {
        for n in 0..<N {
            let dy = dout + n * OC
            for o in 0..<OC { dbias[o] += dy[o] }
        }
    }
}
