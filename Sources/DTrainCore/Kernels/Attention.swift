import CBLAS
import Foundation

/// Causal grouped-query self-attention over rotated queries and keys.
///
/// q (B, T, NH, HD), k and v (B, T, KVH, HD), out (B, T, NH, HD); query head h reads key/value
/// head h / (NH/KVH). Query t attends keys segStart[t]...t, so packed sequences never see each
/// other (segStart is the row-local index where t's example begins; 0 without packing).
///
/// Queries are processed in blocks of `queryBlock` rows, each against only the keys it can see
/// (0..<end of block), which skips most of the masked upper triangle (62% of the full T² work at
/// T = 256). Probabilities are not stored: forward keeps the log-sum-exp of each score row and
/// backward recomputes them, saving B·NH·T² floats per layer.
public enum Attention {
    /// Query rows per block.
    public static let queryBlock = 64

    /// Floats of scratch `forward` needs: one block of scores, (queryBlock, T), plus (queryBlock).
    public static func forwardScratchCount(T: Int) -> Int { queryBlock * T + queryBlock }
    /// Floats of scratch `backward` needs: scores and their gradient for one block.
    public static func backwardScratchCount(T: Int) -> Int { 2 * queryBlock * T }

    /// out (B, T, NH·HD), lse (B, NH, T); inputs q, k, v; segStart (B·T) or nil for plain causal.
    public static func forward(_ out: UnsafeMutablePointer<Float>, _ lse: UnsafeMutablePointer<Float>,
                               _ q: UnsafePointer<Float>, _ k: UnsafePointer<Float>, _ v: UnsafePointer<Float>,
                               _ segStart: UnsafePointer<Int32>?, _ scratch: UnsafeMutablePointer<Float>,
                               _ B: Int, _ T: Int, _ NH: Int, _ KVH: Int, _ HD: Int) {
        let qDim = NH * HD, kvDim = KVH * HD, group = NH / KVH
        let scale = 1 / Float(HD).squareRoot()
        // Exponentials for one block, (rows, keys) with row stride T, then (rows) reciprocal sums.
        let p = scratch, rowScale = scratch + queryBlock * T
        for b in 0..<B {
            for h in 0..<NH {
                let kb = k + b * T * kvDim + (h / group) * HD
                let vb = v + b * T * kvDim + (h / group) * HD
                let lseRow = lse + (b * NH + h) * T
                for q0 in stride(from: 0, to: T, by: queryBlock) {
                    let q1 = min(T, q0 + queryBlock), rows = q1 - q0, keys = q1
                    let qOff = (b * T + q0) * qDim + h * HD
                    // S (rows, keys) = scale · Q[q0..<q1] (rows, HD) · K[0..<keys] (keys, HD)ᵀ
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(rows), Int32(keys), Int32(HD),
                                scale, q + qOff, Int32(qDim), kb, Int32(kvDim), 0, p, Int32(T))
                    // E = exp(S - rowmax), masked; each row's 1/Σ is applied to its (HD) output
                    // row rather than its (keys) probabilities, which saves a pass over E.
                    for i in 0..<rows {
                        let t = q0 + i, row = p + i * T
                        let lo = segStart.map { Int($0[b * T + t]) } ?? 0
                        let width = t - lo + 1
                        let mx = FastMath.max(row + lo, width)
                        let sum = FastMath.expShifted(row + lo, row + lo, width, shift: mx)
                        if lo > 0 { row.update(repeating: 0, count: lo) }
                        if keys > t + 1 { (row + t + 1).update(repeating: 0, count: keys - t - 1) }
                        lseRow[t] = mx + logf(sum)
                        rowScale[i] = 1 / sum
                    }
                    // O[q0..<q1] (rows, HD) = E (rows, keys) · V[0..<keys] (keys, HD), rows scaled by 1/Σ
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(rows), Int32(HD), Int32(keys),
                                1, p, Int32(T), vb, Int32(kvDim), 0, out + qOff, Int32(qDim))
                    for i in 0..<rows { FastMath.scale(out + qOff + i * qDim, HD, by: rowScale[i]) }
                }
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
        // P and dP (then dS) for one block, (rows, keys) each with row stride T.
        let p = scratch, dp = scratch + queryBlock * T
        for b in 0..<B {
            for h in 0..<NH {
                let kvOff = b * T * kvDim + (h / group) * HD
                let kb = k + kvOff, vb = v + kvOff
                let lseRow = lse + (b * NH + h) * T
                for q0 in stride(from: 0, to: T, by: queryBlock) {
                    let q1 = min(T, q0 + queryBlock), rows = q1 - q0, keys = q1
                    let qOff = (b * T + q0) * qDim + h * HD
                    let qbh = q + qOff, dobh = dout + qOff, obh = out + qOff
                    // S = scale·Q Kᵀ (rows, keys), and dP (rows, keys) = dO[q0..<q1] (rows, HD) · V[0..<keys] (keys, HD)ᵀ
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(rows), Int32(keys), Int32(HD),
                                scale, qbh, Int32(qDim), kb, Int32(kvDim), 0, p, Int32(T))
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(rows), Int32(keys), Int32(HD),
                                1, dobh, Int32(qDim), vb, Int32(kvDim), 0, dp, Int32(T))
                    // In one pass per row: P = exp(S - lse) and dS = P ∘ (dP - D), with
                    // D_t = Σ_d dO[t,d]·O[t,d] = Σ_j P[t,j]·dP[t,j]; both zero where masked.
                    for i in 0..<rows {
                        let t = q0 + i, row = p + i * T, drow = dp + i * T
                        let lo = segStart.map { Int($0[b * T + t]) } ?? 0
                        let d = FastMath.dot(dobh + i * qDim, obh + i * qDim, HD)
                        softmaxGradientRow(row + lo, drow + lo, t - lo + 1, lse: lseRow[t], rowDot: d)
                        if lo > 0 { row.update(repeating: 0, count: lo); drow.update(repeating: 0, count: lo) }
                        if keys > t + 1 {
                            (row + t + 1).update(repeating: 0, count: keys - t - 1)
                            (drow + t + 1).update(repeating: 0, count: keys - t - 1)
                        }
                    }
                    // dV[0..<keys] (keys, HD) += Pᵀ (keys, rows) · dO[q0..<q1] (rows, HD)
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(keys), Int32(HD), Int32(rows),
                                1, p, Int32(T), dobh, Int32(qDim), 1, dv + kvOff, Int32(kvDim))
                    // dQ[q0..<q1] (rows, HD) += scale · dS (rows, keys) · K[0..<keys] (keys, HD)
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(rows), Int32(HD), Int32(keys),
                                scale, dp, Int32(T), kb, Int32(kvDim), 1, dq + qOff, Int32(qDim))
                    // dK[0..<keys] (keys, HD) += scale · dSᵀ (keys, rows) · Q[q0..<q1] (rows, HD)
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(keys), Int32(HD), Int32(rows),
                                scale, dp, Int32(T), qbh, Int32(qDim), 1, dk + kvOff, Int32(kvDim))
                }
            }
        }
    }

    /// p[j] = e^(s[j] - lse) over the scores s in `p`, and dp[j] = p[j]·(dp[j] - rowDot), for j < count.
    @inline(__always)
    static func softmaxGradientRow(_ p: UnsafeMutablePointer<Float>, _ dp: UnsafeMutablePointer<Float>, _ count: Int,
                                   lse: Float, rowDot: Float) {
        let l = SIMD8<Float>(repeating: lse), d = SIMD8<Float>(repeating: rowDot)
        var j = 0
        while j + 8 <= count {
            let e = FastMath.exp(FastMath.load(p, j) - l)
            FastMath.store(e, p, j)
            FastMath.store(e * (FastMath.load(dp, j) - d), dp, j)
            j += 8
        }
        while j < count {
            var lane = SIMD8<Float>(repeating: -.infinity)
            lane[0] = p[j] - lse
            let e = FastMath.exp(lane)[0]
            p[j] = e
            dp[j] = e * (dp[j] - rowDot)
            j += 1
        }
    }
}
