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
            Parallel.sgemm(false, true, r, V, C, 1, xg, C, weight, C, 0, logits, V)
            let wantGrad = dx != nil || dweight != nil
            // Softmax and loss per row, in parallel over rows; losses land in the row's own slot.
            let vec = Vectors.kernels
            Parallel.forChunks(r, minPerThread: 1) { range in
                for i in range {
                    let row = logits + i * V
                    let t = Int(targets[start + i])
                    let target = row[t]
                    let mx = vec.max(row, V)
                    // row <- exp(logit - max) in one vectorised pass; the sum gives the log-sum-exp.
                    let sum = vec.expShifted(row, row, V, shift: mx)
                    let loss = mx + logf(sum) - target
                    // Parked in the row's dxg slot until read below (dxg rows are rewritten later):
                    // the loss, and the factor that turns exp(logit - max) into lossScale · softmax.
                    dxg[i * C] = loss
                    dxg[i * C + 1] = lossScale / sum
                }
            }
            // The gradient of the logits is lossScale · (softmax - onehot(target)) = s_i · e_i -
            // lossScale · onehot, with e the exponentials left in `logits` and s_i per row. The
            // row factors are applied to the (r, C) products rather than the (r, V) logits, which
            // saves a pass over the chunk's logits; the one-hot terms are single rows of weight / xg.
            withUnsafeTemporaryAllocation(of: Float.self, capacity: r) { rowScale in
                for i in 0..<r {
                    let loss = dxg[i * C]
                    rowLoss?[start + i] = loss
                    total += Double(loss)
                    rowScale[i] = dxg[i * C + 1]
                }
                guard wantGrad else { return }
                if let dx {
                    // dxg (r, C) = e (r, V) · weight (V, C); dx row += s_i · dxg_i - lossScale · weight[t_i]
                    Parallel.sgemm(false, false, r, C, V, 1, logits, V, weight, C, 0, dxg, C)
                    for i in 0..<r {
                        vec.addDifference(dx + Int(rows[start + i]) * C, rowScale[i], dxg + i * C,
                                          lossScale, weight + Int(targets[start + i]) * C, C)
                    }
                }
                if let dweight {
                    // dweight (V, C) += eᵀ (V, r) · (s_i · xg_i) (r, C), and weight[t_i] -= lossScale · xg_i.
                    for i in 0..<r {
                        let xi = xg + i * C, dw = dweight + Int(targets[start + i]) * C, si = rowScale[i]
                        for c in 0..<C { dw[c] -= lossScale * xi[c]; xi[c] *= si }
                    }
                    Parallel.sgemm(true, false, V, C, r, 1, logits, V, xg, C, 1, dweight, C)
                }
            }
            start += r
        }
        return total
    }
}
