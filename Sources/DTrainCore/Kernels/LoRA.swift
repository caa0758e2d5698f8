import CBLAS

/// A low-rank adapter beside a frozen linear layer, in PEFT's convention:
/// y += scale · B (A x), with A (r, IC) and B (OC, r).
///
/// The pieces are separate so that adapters reading the same input (q/k/v, gate/up) can share
/// one A product: their A matrices stacked are one (R = k·r, IC) matrix, and their products
/// lie side by side in one (N, R) block, each adapter's B reading its r columns (leading
/// dimension R).
public enum LoRA {
    /// out (N, OC) += scale · xa · Bᵀ, where xa (N, r) = inp (N, IC) · Aᵀ is kept for backward.
    public static func forward(_ out: UnsafeMutablePointer<Float>, _ xa: UnsafeMutablePointer<Float>,
                               _ inp: UnsafePointer<Float>, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>,
                               _ N: Int, _ IC: Int, _ OC: Int, _ r: Int, scale: Float) {
        forwardA(xa, inp, a, N, IC, r)
        forwardB(out, xa, r, b, N, OC, r, scale: scale)
    }

    /// xa (N, R) = inp (N, IC) · A (R, IC)ᵀ.
    public static func forwardA(_ xa: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>, _ a: UnsafePointer<Float>,
                                _ N: Int, _ IC: Int, _ R: Int) {
        Parallel.sgemm(false, true, N, R, IC, 1, inp, IC, a, IC, 0, xa, R)
    }

    /// out (N, OC) += scale · xa (N, r; leading dimension ldxa) · B (OC, r)ᵀ.
    public static func forwardB(_ out: UnsafeMutablePointer<Float>, _ xa: UnsafePointer<Float>, _ ldxa: Int,
                                _ b: UnsafePointer<Float>, _ N: Int, _ OC: Int, _ r: Int, scale: Float) {
        Parallel.sgemm(false, true, N, OC, r, scale, xa, ldxa, b, r, 1, out, OC)
    }

    /// Whether the dropout path runs through the fused kernels below (r a multiple of 8, the
    /// kernels' block of A's rows); otherwise the dropped-out input is written out for the sgemms.
    public static func fusesDropout(rank r: Int) -> Bool { r % 8 == 0 }

    /// xa (N, r) = dropout(inp) (N, IC) · A (r, IC)ᵀ, drawing dropout's mask into bits (N, ⌈IC/32⌉)
    /// (see `Dropout`) row by row just before the row's product reads it; r a multiple of 8.
    /// The dropped-out input is never written: writing and re-reading it cost more than the
    /// products (measured; README, Speed).
    public static func forwardDropped(_ xa: UnsafeMutablePointer<Float>, _ bits: UnsafeMutablePointer<UInt32>,
                                      _ inp: UnsafePointer<Float>, _ rowKeys: UnsafePointer<UInt64>, _ a: UnsafePointer<Float>,
                                      _ N: Int, _ IC: Int, _ r: Int, p: Float, key: UInt64) {
        let s = 1 / (1 - p), t = Dropout.threshold(p), W = Dropout.wordsPerRow(IC), vec = Vectors.kernels
        Parallel.forChunks(N, minPerThread: 8) { rows in
            for n in rows { vec.dropoutMaskRow(bits + n * W, IC, key: key ^ rowKeys[n], threshold: t) }
            for j in stride(from: 0, to: r, by: 8) { vec.loRADroppedA(xa + j, r, inp, bits, W, a + j * IC, IC, rows, scale: s) }
        }
    }

    /// dinp (N, IC) += dropout's gradient of dxa (N, r) · A (r, IC), with the mask forward drew.
    public static func backwardInputDropped(_ dinp: UnsafeMutablePointer<Float>, _ dxa: UnsafePointer<Float>,
                                            _ bits: UnsafePointer<UInt32>, _ a: UnsafePointer<Float>,
                                            _ N: Int, _ IC: Int, _ r: Int, p: Float) {
        let s = 1 / (1 - p), W = Dropout.wordsPerRow(IC), vec = Vectors.kernels
        Parallel.forChunks(N, minPerThread: 8) { rows in
            for j in stride(from: 0, to: r, by: 8) { vec.loRADroppedInput(dinp, dxa + j, r, bits, W, a + j * IC, IC, rows, scale: s) }
        }
    }

    /// da (r, IC) += dxa (N, r)ᵀ · dropout(inp), with the mask forward drew. The threads split
    /// A's columns; each column's sum runs over the rows in order, whoever computes it.
    public static func backwardADropped(_ da: UnsafeMutablePointer<Float>, _ dxa: UnsafePointer<Float>,
                                        _ inp: UnsafePointer<Float>, _ bits: UnsafePointer<UInt32>,
                                        _ N: Int, _ IC: Int, _ r: Int, p: Float) {
        let s = 1 / (1 - p), W = Dropout.wordsPerRow(IC), vec = Vectors.kernels, L = vec.lanes
        Parallel.forChunks((IC + L - 1) / L, minPerThread: 1) { chunks in
            let c0 = chunks.lowerBound * L, c1 = min(IC, chunks.upperBound * L)
            for j in stride(from: 0, to: r, by: 8) { vec.loRADroppedGradA(da + j * IC, dxa + j, r, inp, bits, W, N, IC, c0, c1, scale: s) }
        }
    }

    /// dinp (N, IC) += ∂/∂inp (when non-nil), da (r, IC) += ∂/∂A, db (OC, r) += ∂/∂B.
    /// dxa (N, r) is scratch; dout (N, OC); inp, xa, a, b as in forward.
    public static func backward(_ dinp: UnsafeMutablePointer<Float>?, _ da: UnsafeMutablePointer<Float>,
                                _ db: UnsafeMutablePointer<Float>, _ dxa: UnsafeMutablePointer<Float>,
                                _ dout: UnsafePointer<Float>, _ inp: UnsafePointer<Float>, _ xa: UnsafePointer<Float>,
                                _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>,
                                _ N: Int, _ IC: Int, _ OC: Int, _ r: Int, scale: Float) {
        backwardB(db, dxa, r, dout, xa, r, b, N, OC, r, scale: scale)
        backwardA(dinp, da, dxa, inp, a, N, IC, r)
    }

    /// Floats of scratch `backwardB` uses to run on `threads` threads: one (N, 8) partial of
    /// ∂/∂xa per thread after the first.
    public static func backwardScratchCount(N: Int, threads: Int) -> Int { N * 8 * max(0, threads - 1) }

    /// db (OC, r) += scale · dout (N, OC)ᵀ · xa (N, r; ld ldxa); dxa (N, r; ld lddxa) = scale · dout · B.
    ///
    /// Both products read all of dout and do only 2·r FLOPs per element of it, so two sgemms are
    /// bound by its memory traffic, far below the sgemm peak. When r is a multiple
    /// of 8 and `scratch` is given (`backwardScratchCount` floats for `scratchThreads`), they are
    /// one SIMD pass over dout instead: the threads split dout's columns, each owning its rows of
    /// db and summing a partial ∂/∂xa that is added up at the end.
    public static func backwardB(_ db: UnsafeMutablePointer<Float>, _ dxa: UnsafeMutablePointer<Float>, _ lddxa: Int,
                                 _ dout: UnsafePointer<Float>, _ xa: UnsafePointer<Float>, _ ldxa: Int,
                                 _ b: UnsafePointer<Float>, _ N: Int, _ OC: Int, _ r: Int, scale: Float,
                                 scratch: UnsafeMutablePointer<Float>?, scratchThreads: Int) {
        guard let scratch, r % 8 == 0 else {
            backwardB(db, dxa, lddxa, dout, xa, ldxa, b, N, OC, r, scale: scale)
            return
        }
        // The split depends on scratchThreads alone, never on how many threads run it, so the
        // sums (and a resumed run) do not depend on timing or Parallel.threads.
        let threads = max(1, min(scratchThreads, OC / 64))
        let per = (OC + threads - 1) / threads
        let vec = Vectors.kernels
        for c in stride(from: 0, to: r, by: 8) {
            Parallel.forChunks(threads, minPerThread: 1) { range in
                for t in range {
                    let f0 = t * per, f1 = min(OC, f0 + per)
                    let out = t == 0 ? dxa + c : scratch + (t - 1) * N * 8
                    vec.loRAColumns(db + c, out, t == 0 ? lddxa : 8, dout, xa + c, ldxa, b + c, N, OC, r, f0, f1, scale)
                }
            }
            for t in 1..<threads {
                let part = scratch + (t - 1) * N * 8
                for n in 0..<N { vec.add(dxa + n * lddxa + c, part + n * 8, 8) }
            }
        }
    }

    /// `backwardB` as two sgemms (any r).
    public static func backwardB(_ db: UnsafeMutablePointer<Float>, _ dxa: UnsafeMutablePointer<Float>, _ lddxa: Int,
                                 _ dout: UnsafePointer<Float>, _ xa: UnsafePointer<Float>, _ ldxa: Int,
                                 _ b: UnsafePointer<Float>, _ N: Int, _ OC: Int, _ r: Int, scale: Float) {
        Parallel.sgemm(true, false, OC, r, N, scale, dout, OC, xa, ldxa, 1, db, r)
        Parallel.sgemm(false, false, N, r, OC, scale, dout, OC, b, r, 0, dxa, lddxa)
    }

    /// da (R, IC) += dxa (N, R)ᵀ · inp (N, IC); dinp (N, IC) += dxa · A (R, IC) when non-nil.
    public static func backwardA(_ dinp: UnsafeMutablePointer<Float>?, _ da: UnsafeMutablePointer<Float>,
                                 _ dxa: UnsafePointer<Float>, _ inp: UnsafePointer<Float>, _ a: UnsafePointer<Float>,
                                 _ N: Int, _ IC: Int, _ R: Int) {
        Parallel.sgemm(true, false, R, IC, N, 1, dxa, R, inp, IC, 1, da, IC)
        if let dinp { backwardInput(dinp, dxa, a, N, IC, R) }
    }

    /// dinp (N, IC) += dxa (N, R) · A (R, IC) (= when not `accumulate`): the part of `backwardA`
    /// that needs no input.
    public static func backwardInput(_ dinp: UnsafeMutablePointer<Float>, _ dxa: UnsafePointer<Float>,
                                     _ a: UnsafePointer<Float>, _ N: Int, _ IC: Int, _ R: Int, accumulate: Bool = true) {
        Parallel.sgemm(false, false, N, IC, R, 1, dxa, R, a, IC, accumulate ? 1 : 0, dinp, IC)
    }
}
