import CBLAS
import Foundation

/// The LM head fused with next-token cross-entropy, over only the rows that carry a label.
///
/// Rows whose label is ignored never reach the (V)-wide logits, and the logits of the others are
/// built R rows at a time into a (R, V) scratch, so the full (N, V) logits never exist. When
/// gradients are wanted they are produced in the same pass, while the chunk's logits are live.
public enum CrossEntropyHead {
    /// Floats of scratch for chunks of R rows: logits (R, V), gathered inputs (R, C), their gradient (R, C).
    public static func scratchCount(rowsPerChunk R: Int, C: Int, V: Int) -> Int { R * V + 2 * R * C }

    /// Returns Σ loss over the A active rows (natural log).
    ///
    /// - dx (N, C) += lossScale · ∂loss/∂x, when non-nil; dweight (V, C) likewise (nil = frozen head).
    /// - rowLoss (A) receives each active row's loss, when non-nil.
    /// - x (N, C) the final-normed hidden states; weight (V, C); rows (A) the indices into x of the
    ///   active rows; targets (A) their target ids.
    public static func forward(_ dx: UnsafeMutablePointer<Float>?, _ dweight: UnsafeMutablePointer<Float>?,
                               _ rowLoss: UnsafeMutablePointer<Float>?,
                               _ x: UnsafePointer<Float>, _ weight: UnsafePointer<Float>,
                               _ rows: UnsafePointer<Int32>, _ targets: UnsafePointer<Int32>,
                               _ A: Int, _ C: Int, _ V: Int, lossScale: Float,
                               scratch: UnsafeMutablePointer<Float>, rowsPerChunk R: Int) -> Double {
        let logits = scratch, xg = scratch + R * V, dxg = scratch + R * V + R * C
        var total = 0.0
        var start = 0
        while start < A {
            let r = min(R, A - start)
            for i in 0..<r {
                (xg + i * C).update(from: x + Int(rows[start + i]) * C, count: C)
            }
            // logits (r, V) = xg (r, C) · weight (V, C)ᵀ
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(r), Int32(V), Int32(C),
                        1, xg, Int32(C), weight, Int32(C), 0, logits, Int32(V))
            let wantGrad = dx != nil || dweight != nil
            // Softmax and loss per row, in parallel over rows; losses land in the row's own slot.
            Parallel.forChunks(r, minPerThread: 1) { range in
                for i in range {
                    let row = logits + i * V
                    let t = Int(targets[start + i])
                    let target = row[t]
                    let mx = FastMath.max(row, V)
                    // row <- exp(logit - max) in one vectorised pass; the sum gives the log-sum-exp.
                    let sum = FastMath.expShifted(row, row, V, shift: mx)
                    let loss = mx + logf(sum) - target
                    dxg[i * C] = loss // parked here until the sum below; dxg rows are rewritten later
                    if wantGrad {
                        FastMath.scale(row, V, by: lossScale / sum)
                        row[t] -= lossScale
                    }
                }
            }
            for i in 0..<r {
                let loss = dxg[i * C]
                rowLoss?[start + i] = loss
                total += Double(loss)
            }
            if wantGrad {
                if let dx {
                    // dxg (r, C) = dlogits (r, V) · weight (V, C)
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(r), Int32(C), Int32(V),
                                1, logits, Int32(V), weight, Int32(C), 0, dxg, Int32(C))
                    for i in 0..<r {
                        let dst = dx + Int(rows[start + i]) * C, src = dxg + i * C
                        for c in 0..<C { dst[c] += src[c] }
                    }
                }
                if let dweight {
                    // dweight (V, C) += dlogitsᵀ (V, r) · xg (r, C)
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(V), Int32(C), Int32(r),
                                1, logits, Int32(V), xg, Int32(C), 1, dweight, Int32(C))
                }
            }
            start += r
        }
        return total
    }
}
