import CBLAS
import Foundation

/// A rank's parallel work: element-wise loops, attention's independent pairs and the large
/// matrix products, all on one `ComputeTeam`, with BLAS itself single-threaded.
///
/// Each large product is split into one part per thread (`GEMMSplit`), each part one
/// single-threaded `cblas_sgemm`. On this 2-core VM that beat OpenBLAS's own threads by a wide
/// margin inside a training step, whose products are separated by element-wise work: OpenBLAS's
/// threads either sleep between products (and every product then waits for a halted virtual CPU
/// to wake) or spin and take the cores from the element-wise loops.
public enum Parallel {
    /// Threads for the rank's parallel work; set once at start from the run's thread count.
    public static var threads: Int { team?.size ?? 1 }

    /// The team; nil until `ComputeThreads.configure` asks for more than one thread.
    nonisolated(unsafe) static var team: ComputeTeam?

    /// Runs `body(participant)` for participants 0..<n (n at most `threads`): on the team, or on
    /// the caller alone when there is no team or it is busy.
    @inline(__always)
    static func each(_ n: Int, _ body: (Int) -> Void) {
        guard n > 1, let team else {
            for i in 0..<n { body(i) }
            return
        }
        team.run { i in if i < n { body(i) } }
    }

    /// Calls `body(range)` on disjoint chunks covering `0..<count`, in parallel when the work is
    /// large enough (`count >= minPerThread * 2`) and more than one thread is configured.
    @inline(__always)
    public static func forChunks(_ count: Int, minPerThread: Int = 4096, _ body: (Range<Int>) -> Void) {
        let n = min(threads, count / max(minPerThread, 1))
        if n <= 1 {
            if count > 0 { body(0..<count) }
            return
        }
        let per = (count + n - 1) / n
        each(n) { i in
            let lo = i * per, hi = min(count, lo + per)
            if lo < hi { body(lo..<hi) }
        }
    }

    /// Calls `body(worker, item)` for every item in `0..<count`, with items split into `workers`
    /// contiguous runs (at most `count`), worker w taking run w in order. What an item computes
    /// must not depend on its worker: the worker index only picks its scratch. Callers pass
    /// `Parallel.threads` as it was when they sized their scratch; with more workers than
    /// threads, a thread runs several workers' runs one after the other.
    public static func forEachItem(_ count: Int, workers: Int, _ body: (Int, Int) -> Void) {
        let n = max(1, min(workers, count))
        let per = (count + n - 1) / n
        let runners = min(n, threads)
        each(runners) { r in
            for w in stride(from: r, to: n, by: runners) {
                for item in (w * per)..<min(count, (w + 1) * per) { body(w, item) }
            }
        }
    }

    /// `cblas_sgemm` (row-major): C (M, N) = alpha · op(A) (M, K) · op(B) (K, N) + beta · C, split
    /// across the threads by `GEMMSplit` when it is large enough. Each element of C is summed
    /// over all of K by one single-threaded sgemm; the split depends only on the shape and the
    /// thread count, so the bits do too (a split product can differ from a whole one in the
    /// last bits: OpenBLAS sums a tile's edge elements in another order than its interior).
    public static func sgemm(_ transA: Bool, _ transB: Bool, _ M: Int, _ N: Int, _ K: Int,
                             _ alpha: Float, _ a: UnsafePointer<Float>, _ lda: Int,
                             _ b: UnsafePointer<Float>, _ ldb: Int,
                             _ beta: Float, _ c: UnsafeMutablePointer<Float>, _ ldc: Int) {
        let plan = GEMMSplit.plan(M: M, N: N, K: K, threads: threads)
        each(plan.count) { i in
            GEMMSplit.run(plan[i], transA, transB, K, alpha, a, lda, b, ldb, beta, c, ldc)
        }
    }
}

/// How `Parallel.sgemm` divides a product: into row blocks of C when M ≥ N, else column blocks,
/// since each part packs all of the other operand (splitting rows repeats B's packing, columns
/// A's). Block edges fall on multiples of 16; products under `minFlops` stay whole.
public enum GEMMSplit {
    /// One part: rows m0..<m1 and columns n0..<n1 of C.
    public struct Part: Equatable, Sendable { public var m0, m1, n0, n1: Int }

    /// Below this many FLOPs (about 20 µs on one core) a product is not split.
    public static let minFlops = 2_000_000

    /// The parts of one product, computed on demand: `Parallel.sgemm` runs in the training step,
    /// where nothing may allocate.
    public struct Plan: Sendable {
        let M, N: Int, byRows: Bool, per: Int
        /// Number of parts (1 when the product stays whole).
        public let count: Int

        /// Part i: blocks of `per` rows (or columns), the last one running to the end.
        public subscript(i: Int) -> Part {
            let extent = byRows ? M : N
            let lo = i * per, hi = i == count - 1 ? extent : lo + per
            return byRows ? Part(m0: lo, m1: hi, n0: 0, n1: N) : Part(m0: 0, m1: M, n0: lo, n1: hi)
        }
    }

    /// A product that streams an operand of this many floats or more is split even when its
    /// FLOPs are few: decoding's one-token products (M = 1) are bound by reading the weights,
    /// which two cores read faster than one.
    public static let minStreamedFloats = 1 << 16

    public static func plan(M: Int, N: Int, K: Int, threads: Int) -> Plan {
        let byRows = M >= N, extent = byRows ? M : N
        let large = 2 * M * N * K >= minFlops || (byRows ? M : N) * K >= minStreamedFloats
        let blocks = threads > 1 && large ? min(threads, extent / 16) : 1
        guard blocks > 1 else { return Plan(M: M, N: N, byRows: byRows, per: extent, count: 1) }
        let per = (extent / blocks + 15) / 16 * 16
        // Rounding `per` up to 16 can leave fewer non-empty blocks than asked for.
        return Plan(M: M, N: N, byRows: byRows, per: per, count: min(blocks, (extent + per - 1) / per))
    }

    /// Products with at most this many rows (A not transposed, B transposed: tokens times a
    /// weight matrix) run `rowsTimesRows` instead of sgemm.
    public static let smallRows = 16

    /// Runs one part as a single-threaded sgemm on the matching blocks of A, B and C.
    @inline(__always)
    public static func run(_ p: Part, _ transA: Bool, _ transB: Bool, _ K: Int,
                           _ alpha: Float, _ a: UnsafePointer<Float>, _ lda: Int,
                           _ b: UnsafePointer<Float>, _ ldb: Int,
                           _ beta: Float, _ c: UnsafeMutablePointer<Float>, _ ldc: Int) {
        // Row m of op(A) starts at a + m·lda (A is (M, K)), or is column m of A (A is (K, M)).
        let aPart = transA ? a + p.m0 : a + p.m0 * lda
        // Column n of op(B) is column n of B (B is (K, N)), or row n of B (B is (N, K)).
        let bPart = transB ? b + p.n0 * ldb : b + p.n0
        if !transA && transB && p.m1 - p.m0 <= smallRows && (beta == 0 || beta == 1) {
            // A few rows times a weight matrix (decoding): B's rows streamed once, unpacked;
            // sgemm would copy all of B into its packed layout first, costing more than the product.
            Vectors.kernels.rowsTimesRows(c + p.m0 * ldc, ldc, aPart, lda, b, ldb, p.m1 - p.m0, p.n0, p.n1, K,
                                          alpha: alpha, accumulate: beta == 1)
            return
        }
        cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                    Int32(p.m1 - p.m0), Int32(p.n1 - p.n0), Int32(K), alpha, aPart, Int32(lda), bPart, Int32(ldb),
                    beta, c + p.m0 * ldc + p.n0, Int32(ldc))
    }
}
