/// Root-mean-square layer norm: y = x / sqrt(mean(x²) + eps) * w.
///
/// Rows are split across the threads (except for the weight gradient's sum over rows); within a
/// row the sums run in float32 vector lanes (`Vectors`; a scalar running sum is one dependent
/// add after another, which left the kernel latency-bound).
public enum RMSNorm {
    /// out (N, C), rstd (N) = 1/sqrt(mean(x²)+eps) per row; inp (N, C); weight (C).
    public static func forward(_ out: UnsafeMutablePointer<Float>, _ rstd: UnsafeMutablePointer<Float>,
                               _ inp: UnsafePointer<Float>, _ weight: UnsafePointer<Float>,
                               _ N: Int, _ C: Int, _ eps: Float) {
        let vec = Vectors.kernels
        Parallel.forChunks(N, minPerThread: max(1, 32768 / C)) { rows in
            for n in rows {
                let x = inp + n * C
                let r = 1 / (vec.dot(x, x, C) / Float(C) + eps).squareRoot()
                rstd[n] = r
                vec.scaleRow(out + n * C, x, r, weight, C)
            }
        }
    }

    /// Recomputes out (N, C) from the stored rstd (N), for backward passes that did not keep it.
    public static func recompute(_ out: UnsafeMutablePointer<Float>, _ rstd: UnsafePointer<Float>,
                                 _ inp: UnsafePointer<Float>, _ weight: UnsafePointer<Float>, _ N: Int, _ C: Int) {
        let vec = Vectors.kernels
        Parallel.forChunks(N, minPerThread: max(1, 32768 / C)) { rows in
            for n in rows { vec.scaleRow(out + n * C, inp + n * C, rstd[n], weight, C) }
        }
    }

    /// dinp (N, C) += ∂L/∂x; dweight (C) += ∂L/∂w when non-nil (nil for a frozen norm).
    /// dout (N, C), inp (N, C), weight (C), rstd (N).
    public static func backward(_ dinp: UnsafeMutablePointer<Float>, _ dweight: UnsafeMutablePointer<Float>?,
                                _ dout: UnsafePointer<Float>, _ inp: UnsafePointer<Float>,
                                _ weight: UnsafePointer<Float>, _ rstd: UnsafePointer<Float>,
                                _ N: Int, _ C: Int) {
        // dx = r·(dy·w) - r³/C · x · Σ(dy·w·x); dw = Σ_n dy·x·r.
        let vec = Vectors.kernels
        Parallel.forChunks(N, minPerThread: max(1, 32768 / C)) { rows in
            for n in rows {
                let x = inp + n * C, dy = dout + n * C, r = rstd[n]
                let k = vec.dot3(dy, weight, x, C) * r * r * r / Float(C)
                vec.normGradientRow(dinp + n * C, dy, x, weight, r: r, k: k, C)
            }
        }
        guard let dweight else { return }
        for n in 0..<N { vec.addScaledProduct(dweight, dout + n * C, inp + n * C, rstd[n], C) }
    }
}
