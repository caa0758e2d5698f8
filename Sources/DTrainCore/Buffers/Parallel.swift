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

    /// Calls `body(worker, item)` for every item in `0..<count`, with items split into `workers`
    /// contiguous runs (at most `count`), worker w taking run w in order. What an item computes
    /// must not depend on its worker: the worker index only picks its scratch. Callers pass
    /// `Parallel.threads` as it was when they sized their scratch.
    ///
    /// While the workers run, BLAS is single-threaded, so each worker's products run on its own
    /// core: for many small products (attention's blocks) this beats splitting each product
    /// across BLAS's threads, and the loops between the products run in parallel too.
    public static func forEachItem(_ count: Int, workers: Int, _ body: (Int, Int) -> Void) {
        let n = max(1, min(workers, count))
        if n == 1 {
            for item in 0..<count { body(0, item) }
            return
        }
        let per = (count + n - 1) / n
        ComputeThreads.withSingleThreadedBLAS {
            DispatchQueue.concurrentPerform(iterations: n) { w in
                for item in (w * per)..<min(count, (w + 1) * per) { body(w, item) }
            }
        }
    }
}

import CBLAS

/// The rank's compute threads: BLAS's pool and the element-wise loops.
public enum ComputeThreads {
    /// Sets both BLAS's thread count and `Parallel.threads` to `count`.
    public static func configure(_ count: Int) {
        let n = max(1, count)
        shortenBLASSpin()
        openblas_set_num_threads(Int32(n))
        Parallel.threads = n
    }

    /// OpenBLAS's workers spin for 2^28 cycles (about 0.1 s) after each product before they
    /// sleep, and on a node with as many threads as cores they then compete with the element-wise
    /// loops and with attention's workers that run right after most products: in a SmolLM2 LoRA
    /// step, attention took 0.42 s with the default spin and 0.24-0.30 s with 2^16 cycles.
    /// OpenBLAS reads `OPENBLAS_THREAD_TIMEOUT` (log2 of the cycles) only when it starts its
    /// threads, so this sets it, unless the user has, and restarts them (they start again at
    /// the next `openblas_set_num_threads`). The two entry points are looked up at run time; a
    /// BLAS without them keeps its own behaviour.
    private static func shortenBLASSpin() {
        guard !spinShortened else { return }
        spinShortened = true
        setenv("OPENBLAS_THREAD_TIMEOUT", "16", 0)
        guard let process = dlopen(nil, RTLD_NOW),
              let readEnv = dlsym(process, "openblas_read_env"),
              let shutdown = dlsym(process, "blas_thread_shutdown_") else { return }
        unsafeBitCast(readEnv, to: (@convention(c) () -> Void).self)()
        _ = unsafeBitCast(shutdown, to: (@convention(c) () -> Int32).self)()
    }

    nonisolated(unsafe) private static var spinShortened = false

    /// Runs `body` with BLAS on one thread, then restores BLAS's thread count.
    public static func withSingleThreadedBLAS<R>(_ body: () -> R) -> R {
        let saved = openblas_get_num_threads()
        if saved == 1 { return body() }
        openblas_set_num_threads(1)
        defer { openblas_set_num_threads(saved) }
        return body()
    }

    /// Cores this process may run on.
    public static var available: Int { ProcessInfo.processInfo.activeProcessorCount }
}
