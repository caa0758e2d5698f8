/// Root-mean-square layer norm: y = x / sqrt(mean(x²) + eps) * w.
public enum RMSNorm {
    /// out (N, C), rstd (N) = 1/sqrt(mean(x²)+eps) per row; inp (N, C); weight (C).
    public static func forward(_ out: UnsafeMutablePointer<Float>, _ rstd: UnsafeMutablePointer<Float>,
                               _ inp: UnsafePointer<Float>, _ weight: UnsafePointer<Float>,
                               _ N: Int, _ C: Int, _ eps: Float) {
        Parallel.forChunks(N, minPerThread: max(1, 32768 / C)) { rows in
            for n in rows {
                let x = inp + n * C, y = out + n * C
                var ss: Float = 0
                for c in 0..<C { ss += x[c] * x[c] }
                let r = 1 / (ss / Float(C) + eps).squareRoot()
                rstd[n] = r
                for c in 0..<C { y[c] = x[c] * r * weight[c] }
            }
        }
    }

    /// Recomputes out (N, C) from the stored rstd (N), for backward passes that did not keep it.
    public static func recompute(_ out: UnsafeMutablePointer<Float>, _ rstd: UnsafePointer<Float>,
                                 _ inp: UnsafePointer<Float>, _ weight: UnsafePointer<Float>, _ N: Int, _ C: Int) {
        Parallel.forChunks(N, minPerThread: max(1, 32768 / C)) { rows in
            for n in rows {
                let x = inp + n * C, y = out + n * C, r = rstd[n]
                for c in 0..<C { y[c] = x[c] * r * weight[c] }
            }
        }
    }

    /// dinp (N, C) += ∂L/∂x; dweight (C) += ∂L/∂w when non-nil (nil for a frozen norm).
    /// dout (N, C), inp (N, C), weight (C), rstd (N).
    public static func backward(_ dinp: UnsafeMutablePointer<Float>, _ dweight: UnsafeMutablePointer<Float>?,
                                _ dout: UnsafePointer<Float>, _ inp: UnsafePointer<Float>,
                                _ weight: UnsafePointer<Float>, _ rstd: UnsafePointer<Float>,
                                _ N: Int, _ C: Int) {
        // dx = r·(dy·w) - r³/C · x · Σ(dy·w·x); dw = Σ_n dy·x·r.
        Parallel.forChunks(N, minPerThread: max(1, 32768 / C)) { rows in
            for n in rows {
                let x = inp + n * C, dy = dout + n * C, dx = dinp + n * C, r = rstd[n]
                var dot: Float = 0
                for c in 0..<C { dot += dy[c] * weight[c] * x[c] }
                let k = dot * r * r * r / Float(C)
                for c in 0..<C { dx[c] += r * dy[c] * weight[c] - k * x[c] }
            }
        }
        guard let dweight else { return }
        for n in 0..<N {
            let x = inp + n * C, dy = dout + n * C, r = rstd[n]
            for c in 0..<C { dweight[c] += dy[c] * x[c] * r }
        }
    }
}
