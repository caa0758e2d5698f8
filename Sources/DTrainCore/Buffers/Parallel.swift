import Dispatch
import Foundation

/// Element-wise work split across the rank's compute threads.
///
/// BLAS has its own threads; this is for the loops between matrix products (softmax rows,
/// SwiGLU, AdamW) where one thread would leave the other cores idle.
public enum Parallel {
    /// Threads used for element-wise loops; set once at start from the run's thread count.
    nonisolated(unsafe) public static var threads: Int = 1

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
        DispatchQueue.concurrentPerform(iterations: n) { i in
            let lo = i * per, hi = min(count, lo + per)
            if lo < hi { body(lo..<hi) }
        }
    }
}

import CBLAS

/// The rank's compute threads: BLAS's pool and the element-wise loops.
public enum ComputeThreads {
    /// Sets both BLAS's thread count and `Parallel.threads` to `count`.
    public static func configure(_ count: Int) {
        let n = max(1, count)
        openblas_set_num_threads(Int32(n))
        Parallel.threads = n
    }

    /// Cores this process may run on.
    public static var available: Int { ProcessInfo.processInfo.activeProcessorCount }
}
