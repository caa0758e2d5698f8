import CBLAS
import Foundation

/// Causal grouped-query self-attention over rotated queries and keys.
///
/// q (B, T, NH, HD), k and v (B, T, KVH, HD), out (B, T, NH, HD); query head h reads key/value
/// head h / (NH/KVH). Query t attends keys segStart[t]...t, so packed sequences never see each
/// other (segStart is the row-local index where t's example begins; 0 without packing).
/// Probabilities are not stored: forward keeps the log-sum-exp of each score row and backward
/// recomputes them with one extra (T, T) product per head, saving B·NH·T² floats per layer.
public enum Attention {
    /// Floats of scratch `forward` needs: one (T, T) score matrix.
    public static func forwardScratchCount(T: Int) -> Int { T * T }
    /// Floats of scratch `backward` needs: scores and their gradient, (T, T) each, plus (T).
    public static func backwardScratchCount(T: Int) -> Int { 2 * T * T + T }

    /// out (B, T, NH·HD), lse (B, NH, T); inputs q, k, v; segStart (B·T) or nil for plain causal.
    public static func forward(_ out: UnsafeMutablePointer<Float>, _ lse: UnsafeMutablePointer<Float>,
                               _ q: UnsafePointer<Float>, _ k: UnsafePointer<Float>, _ v: UnsafePointer<Float>,
                               _ segStart: UnsafePointer<Int32>?, _ scratch: UnsafeMutablePointer<Float>,
                               _ B: Int, _ T: Int, _ NH: Int, _ KVH: Int, _ HD: Int) {
        let qDim = NH * HD, kvDim = KVH * HD, group = NH / KVH
        let scale = 1 / Float(HD).squareRoot()
        let p = scratch // (T, T)
        for b in 0..<B {
            for h in 0..<NH {
                let qbh = q + b * T * qDim + h * HD
                let kb = k + b * T * kvDim + (h / group) * HD
                let vb = v + b * T * kvDim + (h / group) * HD
                // S (T, T) = scale · Q_bh (T, HD) · K_b (T, HD)ᵀ
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(T), Int32(T), Int32(HD),
                            scale, qbh, Int32(qDim), kb, Int32(kvDim), 0, p, Int32(T))
                let lseRow = lse + (b * NH + h) * T
                for t in 0..<T {
                    let row = p + t * T
                    let lo = segStart.map { Int($0[b * T + t]) } ?? 0
                    let width = t - lo + 1
                    let mx = FastMath.max(row + lo, width)
                    let sum = FastMath.expShifted(row + lo, row + lo, width, shift: mx)
                    for j in 0..<lo { row[j] = 0 }
                    FastMath.scale(row + lo, width, by: 1 / sum)
                    for j in (t + 1)..<max(T, t + 1) { row[j] = 0 }
                    lseRow[t] = mx + logf(sum)
                }
                // O_bh (T, HD) = P (T, T) · V_b (T, HD)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(T), Int32(HD), Int32(T),
                            1, p, Int32(T), vb, Int32(kvDim), 0, out + b * T * qDim + h * HD, Int32(qDim))
            }
        }
    }

    /// dq (B, T, NH·HD), dk and dv (B, T, KVH·HD) += gradients, from dout (B, T, NH·HD) and the
    /// forward's out and lse.
    public static func backward(_ dq: UnsafeMutablePointer<Float>, _ dk: UnsafeMutablePointer<Float>,
                                _ dv: UnsafeMutablePointer<Float>,
                                _ dout: UnsafePointer<Float>, _ out: UnsafePointer<Float>, _ lse: UnsafePointer<Float>,
                                _ q: UnsafePointer<Float>, _ k: UnsafePointer<Float>, _ v: UnsafePointer<Float>,
                                _ segStart: UnsafePointer<Int32>?, _ scratch: UnsafeMutablePointer<Float>,
                                _ B: Int, _ T: Int, _ NH: Int, _ KVH: Int, _ HD: Int) {
        let qDim = NH * HD, kvDim = KVH * HD, group = NH / KVH
        let scale = 1 / Float(HD).squareRoot()
        let p = scratch, dp = scratch + T * T, rowDot = scratch + 2 * T * T // (T,T), (T,T), (T)
        for b in 0..<B {
            for h in 0..<NH {
                let off = b * T * qDim + h * HD
                let kvOff = b * T * kvDim + (h / group) * HD
                let qbh = q + off, kb = k + kvOff, vb = v + kvOff
                let dobh = dout + off, obh = out + off
                // Recompute P = exp(scale·Q Kᵀ - lse), masked.
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(T), Int32(T), Int32(HD),
                            scale, qbh, Int32(qDim), kb, Int32(kvDim), 0, p, Int32(T))
                let lseRow = lse + (b * NH + h) * T
                for t in 0..<T {
                    let row = p + t * T
                    let lo = segStart.map { Int($0[b * T + t]) } ?? 0
                    let m = lseRow[t]
                    for j in 0..<lo { row[j] = 0 }
                    _ = FastMath.expShifted(row + lo, row + lo, t - lo + 1, shift: m)
                    for j in (t + 1)..<max(T, t + 1) { row[j] = 0 }
                    // D_t = Σ_d dO[t,d]·O[t,d] = Σ_j P[t,j]·dP[t,j]
                    var d: Float = 0
                    for c in 0..<HD { d += dobh[t * qDim + c] * obh[t * qDim + c] }
                    rowDot[t] = d
                }
                // dP (T, T) = dO_bh (T, HD) · V_b (T, HD)ᵀ
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(T), Int32(T), Int32(HD),
                            1, dobh, Int32(qDim), vb, Int32(kvDim), 0, dp, Int32(T))
                // dV_b (T, HD) += Pᵀ (T, T) · dO_bh (T, HD)
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(T), Int32(HD), Int32(T),
                            1, p, Int32(T), dobh, Int32(qDim), 1, dv + kvOff, Int32(kvDim))
                // dS = P ∘ (dP - D), zero outside the causal window since P is.
                for t in 0..<T {
                    let pr = p + t * T, dr = dp + t * T, d = rowDot[t]
                    for j in 0...t { dr[j] = pr[j] * (dr[j] - d) }
                    for j in (t + 1)..<max(T, t + 1) { dr[j] = 0 }
                }
                // dQ_bh (T, HD) += scale · dS (T, T) · K_b (T, HD)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(T), Int32(HD), Int32(T),
                            scale, dp, Int32(T), kb, Int32(kvDim), 1, dq + off, Int32(qDim))
                // dK_b (T, HD) += scale · dSᵀ (T, T) · Q_bh (T, HD)
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(T), Int32(HD), Int32(T),
                            scale, dp, Int32(T), qbh, Int32(qDim), 1, dk + kvOff, Int32(kvDim))
            }
        }
    }
}
