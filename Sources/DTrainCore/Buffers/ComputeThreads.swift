import CBLAS
import Foundation

/// Configures a rank's compute threads: its `ComputeTeam`, and OpenBLAS kept to one thread.
public enum ComputeThreads {
    /// Sets `Parallel.threads` to `count` (making the rank's `ComputeTeam` the first time, or
    /// anew if the count changes) and BLAS to one thread: the team splits the products.
    public static func configure(_ count: Int) {
        let n = max(1, count)
        shortenBLASSpin()
        openblas_set_num_threads(1)
        if n != Parallel.threads { Parallel.team = n > 1 ? ComputeTeam(size: n) : nil }
    }

    /// Runs `body` with OpenBLAS's own threads set to `count`, then back to one: for measuring
    /// OpenBLAS's threaded sgemm beside the team's (`dtrain bench`).
    public static func withBLASThreads<R>(_ count: Int, _ body: () -> R) -> R {
        openblas_set_num_threads(Int32(max(1, count)))
        defer { openblas_set_num_threads(1) }
        return body()
    }

    /// BLAS runs single-threaded, but OpenBLAS may have started its threads already (it does at
    /// load time, one per core), and `withBLASThreads` starts them again. Those threads spin for
    /// 2^28 cycles (about 0.1 s) after each product before they sleep, taking cores from the
    /// team. OpenBLAS reads `OPENBLAS_THREAD_TIMEOUT` (log2 of the cycles) only when it starts
    /// its threads, so this sets it to 16, unless the user has, and shuts them down (they start
    /// again at the next `openblas_set_num_threads` above one). The two entry points are looked
    /// up at run time; a BLAS without them keeps its own behaviour.
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

    /// Cores this process may run on.
    public static var available: Int { ProcessInfo.processInfo.activeProcessorCount }

    /// The default threads of one rank: this node's cores shared among the ranks a launcher
    /// (mpirun, srun) started on it; all of them for a process started alone.
    public static var perRank: Int {
        let env = ProcessInfo.processInfo.environment
        let local = Int(env["OMPI_COMM_WORLD_LOCAL_SIZE"] ?? env["SLURM_NTASKS_PER_NODE"] ?? "1") ?? 1
        return max(1, available / max(local, 1))
    }
}
