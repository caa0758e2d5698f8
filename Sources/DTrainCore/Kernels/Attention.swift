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
/// T = 256). Forward keeps the log-sum-exp of each score row, and backward recomputes the
/// probabilities from it, unless the caller gives forward room to keep them (`keptCount`):
/// then backward skips one of its five products per block and every exponential.
public enum Attention {
    /// Query rows per block.
    public static let queryBlock = 64

    /// Floats of scratch `forward` and `backward` need with `threads` workers, for `group` =
    /// NH/KVH query heads per key/value head. Each worker's share holds a block's stacked
    /// queries, output gradients and query gradients, (group·queryBlock, HD) each, and its
    /// scores and their gradient, (group·queryBlock, T) each (forward uses less of it).
    public static func scratchCount(T: Int, HD: Int, group: Int, threads: Int = 1) -> Int {
        max(1, threads) * workerScratch(T: T, HD: HD, group: group)
    }

    static func workerScratch(T: Int, HD: Int, group: Int) -> Int { group * queryBlock * (2 * T + 3 * HD) }

    /// Floats `forward` may keep for `backward`: every query block's exponentials E (G·rows, keys)
    /// for each (batch row, key/value head), then each score row's 1/Σ, (B, NH, T). For the
    /// causal blocks this is 62% of B·NH·T² at T = 256 (5.9 MB per layer for SmolLM2 at 4 × 256).
    public static func keptCount(B: Int, T: Int, NH: Int, KVH: Int) -> Int {
        B * KVH * keptBlockOffset(T, T: T, group: NH / KVH) + B * NH * T
    }

    /// Offset, within one (batch row, key/value head), of the kept exponentials of the query block
    /// starting at q0: the blocks before it, each (G·rows, keys) with keys = the block's end.
    static func keptBlockOffset(_ q0: Int, T: Int, group G: Int) -> Int {
        var offset = 0
        for start in stride(from: 0, to: q0, by: queryBlock) {
            let end = min(T, start + queryBlock)
            offset += G * (end - start) * end
        }
        return offset
    }

    /// Copies the HD-wide rows of query heads g·G..<(g+1)·G at tokens q0..<q0+rows of `src`
    /// (B·T, NH·HD) into `dst` stacked head by head: (G·rows, HD), row j·rows + i = head g·G+j, token q0+i.
    @inline(__always)
    static func gather(_ dst: UnsafeMutablePointer<Float>, _ src: UnsafePointer<Float>, b: Int, g: Int, q0: Int, rows: Int,
                       _ T: Int, _ G: Int, _ qDim: Int, _ HD: Int) {
        for j in 0..<G {
            for i in 0..<rows {
                (dst + (j * rows + i) * HD).update(from: src + (b * T + q0 + i) * qDim + (g * G + j) * HD, count: HD)
            }
        }
    }

    /// out (B, T, NH·HD), lse (B, NH, T); inputs q, k, v; segStart (B·T) or nil for plain causal.
    ///
    /// The G = NH/KVH query heads that share a key/value head are stacked, so each block is one
    /// (G·rows)-row product against its keys rather than G products of `rows` rows.
    /// kept (`keptCount` floats) or nil: where to leave the exponentials for `backward`.
    /// The B·KVH (batch row, key/value head) pairs are independent and are split across
    /// `threads` workers (`scratch` holds `scratchCount(..., threads:)` floats); each pair's
    /// arithmetic is the same whichever worker runs it.
    public static func forward(_ out: UnsafeMutablePointer<Float>, _ lse: UnsafeMutablePointer<Float>,
                               _ kept: UnsafeMutablePointer<Float>?,
                               _ q: UnsafePointer<Float>, _ k: UnsafePointer<Float>, _ v: UnsafePointer<Float>,
                               _ segStart: UnsafePointer<Int32>?, _ scratch: UnsafeMutablePointer<Float>,
                               _ B: Int, _ T: Int, _ NH: Int, _ KVH: Int, _ HD: Int, threads: Int = 1) {
        let qDim = NH * HD, kvDim = KVH * HD, G = NH / KVH
        let scale = 1 / Float(HD).squareRoot()
        let maxRows = G * queryBlock, perWorker = workerScratch(T: T, HD: HD, group: G)
        let perHead = keptBlockOffset(T, T: T, group: G), keptScale = kept.map { $0 + B * KVH * perHead }
        let vec = Vectors.kernels
        Parallel.forEachItem(B * KVH, workers: threads) { worker, pair in
            let b = pair / KVH, g = pair % KVH
            // Per block: stacked queries Qs and outputs Os (G·rows, HD); exponentials E (G·rows, keys)
            // with row stride T, or in `kept` with row stride keys; (G·rows) reciprocal sums.
            let qs = scratch + worker * perWorker, os = qs + maxRows * HD, scratchP = qs + 2 * maxRows * HD
            let rowScale = scratchP + maxRows * T
            let kb = k + b * T * kvDim + g * HD
            let vb = v + b * T * kvDim + g * HD
            for q0 in stride(from: 0, to: T, by: queryBlock) {
                let q1 = min(T, q0 + queryBlock), rows = q1 - q0, keys = q1, M = G * rows
                let p = kept.map { $0 + (b * KVH + g) * perHead + keptBlockOffset(q0, T: T, group: G) } ?? scratchP
                let ldp = kept == nil ? T : keys
                gather(qs, q, b: b, g: g, q0: q0, rows: rows, T, G, qDim, HD)
                // S (M, keys) = scale · Qs (M, HD) · K[0..<keys] (keys, HD)ᵀ
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(M), Int32(keys), Int32(HD),
                            scale, qs, Int32(HD), kb, Int32(kvDim), 0, p, Int32(ldp))
                // E = exp(S - rowmax), masked; each row's 1/Σ is applied to its (HD) output
                // row rather than its (keys) probabilities, which saves a pass over E.
                for r in 0..<M {
                    let j = r / rows, t = q0 + r % rows, row = p + r * ldp
                    let lo = segStart.map { Int($0[b * T + t]) } ?? 0
                    let width = t - lo + 1
                    let mx = vec.max(row + lo, width)
                    let sum = vec.expShifted(row + lo, row + lo, width, shift: mx)
                    if lo > 0 { row.update(repeating: 0, count: lo) }
                    if keys > t + 1 { (row + t + 1).update(repeating: 0, count: keys - t - 1) }
                    let at = (b * NH + g * G + j) * T + t
                    lse[at] = mx + logf(sum)
                    rowScale[r] = 1 / sum
                    keptScale?[at] = 1 / sum
                }
                // Os (M, HD) = E (M, keys) · V[0..<keys] (keys, HD); out rows = Os rows / Σ
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(M), Int32(HD), Int32(keys),
                            1, p, Int32(ldp), vb, Int32(kvDim), 0, os, Int32(HD))
                for r in 0..<M {
                    let j = r / rows, t = q0 + r % rows
                    vec.scale(out + (b * T + t) * qDim + (g * G + j) * HD, os + r * HD, rowScale[r], HD)
                }
            }
        }
    }

    /// dq (B, T, NH·HD), dk and dv (B, T, KVH·HD) += gradients, from dout (B, T, NH·HD) and the
    /// forward's out, lse and (when forward was given it) kept. Query heads are stacked per
    /// key/value head, and (batch row, key/value head) pairs split across workers, as in `forward`.
    public static func backward(_ dq: UnsafeMutablePointer<Float>, _ dk: UnsafeMutablePointer<Float>,
                                _ dv: UnsafeMutablePointer<Float>,
                                _ dout: UnsafePointer<Float>, _ out: UnsafePointer<Float>, _ lse: UnsafePointer<Float>,
                                _ kept: UnsafePointer<Float>?,
                                _ q: UnsafePointer<Float>, _ k: UnsafePointer<Float>, _ v: UnsafePointer<Float>,
                                _ segStart: UnsafePointer<Int32>?, _ scratch: UnsafeMutablePointer<Float>,
                                _ B: Int, _ T: Int, _ NH: Int, _ KVH: Int, _ HD: Int, threads: Int = 1) {
        let qDim = NH * HD, kvDim = KVH * HD, G = NH / KVH
        let scale = 1 / Float(HD).squareRoot()
        let maxRows = G * queryBlock, perWorker = workerScratch(T: T, HD: HD, group: G)
        let perHead = keptBlockOffset(T, T: T, group: G), keptScale = kept.map { $0 + B * KVH * perHead }
        let vec = Vectors.kernels
        Parallel.forEachItem(B * KVH, workers: threads) { worker, pair in
            let b = pair / KVH, g = pair % KVH
            // Per block: stacked Qs, dOs and dQs (G·rows, HD); P and dP (then dS) (G·rows, keys) with row stride T.
            let qs = scratch + worker * perWorker, dos = qs + maxRows * HD, dqs = qs + 2 * maxRows * HD
            let p = qs + 3 * maxRows * HD, dp = p + maxRows * T
            let kvOff = b * T * kvDim + g * HD
            let kb = k + kvOff, vb = v + kvOff
            for q0 in stride(from: 0, to: T, by: queryBlock) {
                let q1 = min(T, q0 + queryBlock), rows = q1 - q0, keys = q1, M = G * rows
                gather(qs, q, b: b, g: g, q0: q0, rows: rows, T, G, qDim, HD)
                gather(dos, dout, b: b, g: g, q0: q0, rows: rows, T, G, qDim, HD)
                // dP (M, keys) = dOs (M, HD) · V[0..<keys] (keys, HD)ᵀ
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(M), Int32(keys), Int32(HD),
                            1, dos, Int32(HD), vb, Int32(kvDim), 0, dp, Int32(T))
                if let kept, let keptScale {
                    // P = E / Σ from what forward kept (zero where masked), and dS = P ∘ (dP - D).
                    let e = kept + (b * KVH + g) * perHead + keptBlockOffset(q0, T: T, group: G)
                    for r in 0..<M {
                        let j = r / rows, t = q0 + r % rows
                        let at = (b * T + t) * qDim + (g * G + j) * HD
                        let d = vec.dot(dout + at, out + at, HD)
                        vec.scaledGradientRow(p + r * T, dp + r * T, e + r * keys, keys,
                                          rowScale: keptScale[(b * NH + g * G + j) * T + t], rowDot: d)
                    }
                } else {
                    // S = scale·Qs Kᵀ (M, keys)
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(M), Int32(keys), Int32(HD),
                                scale, qs, Int32(HD), kb, Int32(kvDim), 0, p, Int32(T))
                    // In one pass per row: P = exp(S - lse) and dS = P ∘ (dP - D), with
                    // D_t = Σ_d dO[t,d]·O[t,d] = Σ_j P[t,j]·dP[t,j]; both zero where masked.
                    for r in 0..<M {
                        let j = r / rows, t = q0 + r % rows, row = p + r * T, drow = dp + r * T
                        let lo = segStart.map { Int($0[b * T + t]) } ?? 0
                        let at = (b * T + t) * qDim + (g * G + j) * HD
                        let d = vec.dot(dout + at, out + at, HD)
                        vec.softmaxGradientRow(row + lo, drow + lo, t - lo + 1, lse: lse[(b * NH + g * G + j) * T + t], rowDot: d)
                        if lo > 0 { row.update(repeating: 0, count: lo); drow.update(repeating: 0, count: lo) }
                        if keys > t + 1 {
                            (row + t + 1).update(repeating: 0, count: keys - t - 1)
                            (drow + t + 1).update(repeating: 0, count: keys - t - 1)
                        }
                    }
                }
                // dV[0..<keys] (keys, HD) += Pᵀ (keys, M) · dOs (M, HD)
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(keys), Int32(HD), Int32(M),
                            1, p, Int32(T), dos, Int32(HD), 1, dv + kvOff, Int32(kvDim))
                // dQs (M, HD) = scale · dS (M, keys) · K[0..<keys] (keys, HD), added to dq's rows
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(M), Int32(HD), Int32(keys),
                            scale, dp, Int32(T), kb, Int32(kvDim), 0, dqs, Int32(HD))
                for r in 0..<M {
                    let j = r / rows, t = q0 + r % rows
                    vec.add(dq + (b * T + t) * qDim + (g * G + j) * HD, dqs + r * HD, HD)
                }
                // dK[0..<keys] (keys, HD) += scale · dSᵀ (keys, M) · Qs (M, HD)
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(keys), Int32(HD), Int32(M),
                            scale, dp, Int32(T), qs, Int32(HD), 1, dk + kvOff, Int32(kvDim))
            }
        }
    }
}
