/// Root-mean-square layer norm: y = x / sqrt(mean(x²) + eps) * w.
///
/// Rows are split across the threads (except for the weight gradient's sum over rows); within a
/// row the sums run in eight float32 lanes (a scalar running sum is one dependent add after
/// another, which left the kernel latency-bound).
public enum RMSNorm {
    /// out (N, C), rstd (N) = 1/sqrt(mean(x²)+eps) per row; inp (N, C); weight (C).
    public static func forward(_ out: UnsafeMutablePointer<Float>, _ rstd: UnsafeMutablePointer<Float>,
                               _ inp: UnsafePointer<Float>, _ weight: UnsafePointer<Float>,
                               _ N: Int, _ C: Int, _ eps: Float) {
        Parallel.forChunks(N, minPerThread: max(1, 32768 / C)) { rows in
            for n in rows {
                let x = inp + n * C
                let r = 1 / (FastMath.dot(x, x, C) / Float(C) + eps).squareRoot()
                rstd[n] = r
                scaleRow(out + n * C, x, r, weight, C)
            }
        }
    }

    /// Recomputes out (N, C) from the stored rstd (N), for backward passes that did not keep it.
    public static func recompute(_ out: UnsafeMutablePointer<Float>, _ rstd: UnsafePointer<Float>,
                                 _ inp: UnsafePointer<Float>, _ weight: UnsafePointer<Float>, _ N: Int, _ C: Int) {
        Parallel.forChunks(N, minPerThread: max(1, 32768 / C)) { rows in
            for n in rows { scaleRow(out + n * C, inp + n * C, rstd[n], weight, C) }
        }
    }

    /// y[c] = x[c]·r·w[c] for c < C.
    @inline(__always)
    static func scaleRow(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, _ r: Float,
                         _ w: UnsafePointer<Float>, _ C: Int) {
        let vr = SIMD8<Float>(repeating: r)
        var c = 0
        while c + 8 <= C {
            FastMath.store(FastMath.load(x, c) * vr * FastMath.load(w, c), y, c)
            c += 8
        }
        while c < C { y[c] = x[c] * r * w[c]; c += 1 }
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
                let k = FastMath.dot(dy, weight, x, C) * r * r * r / Float(C)
                let vr = SIMD8<Float>(repeating: r), vk = SIMD8<Float>(repeating: k)
                var c = 0
                while c + 8 <= C {
                    let g = FastMath.load(dx, c) + (vr * FastMath.load(dy, c) * FastMath.load(weight, c) - vk * FastMath.load(x, c))
                    FastMath.store(g, dx, c)
                    c += 8
                }
                while c < C { dx[c] += r * dy[c] * weight[c] - k * x[c]; c += 1 }
            }
        }
        guard let dweight else { return }
        for n in 0..<N {
            let x = inp + n * C, dy = dout + n * C, vr = SIMD8<Float>(repeating: rstd[n])
            var c = 0
            while c + 8 <= C {
                FastMath.store(FastMath.load(dweight, c) + FastMath.load(dy, c) * FastMath.load(x, c) * vr, dweight, c)
                c += 8
            }
            while c < C { dweight[c] += dy[c] * x[c] * rstd[n]; c += 1 }
        }
    }
}
