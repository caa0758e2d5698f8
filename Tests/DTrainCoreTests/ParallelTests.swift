import CBLAS
import Foundation
import DTrainTestSupport
import Synchronization
import Testing
@testable import DTrainCore

/// The compute team and the split matrix products built on it.
struct ParallelTests {
    /// Every way `GEMMSplit` cuts a product tiles C once and matches one whole sgemm to float32
    /// rounding (OpenBLAS's kernels do not sum a tile's edge elements in quite the same order as
    /// its interior, so the bits can differ); the parts run on a team give the same bits as the
    /// parts run one after the other, so a run's results depend on its thread count only.
    @Test(arguments: [(false, true), (false, false), (true, false), (true, true)])
    func splitProductMatchesWholeProductAndIsDeterministic(transA: Bool, transB: Bool) {
        // As in training: the parts run concurrently, each a single-threaded sgemm.
        openblas_set_num_threads(1)
        let teams = [2: ComputeTeam(size: 2), 3: ComputeTeam(size: 3)]
        // (M, N, K): rows split (M ≥ N), columns split (N > M), ragged edges, and one too small to split.
        for (M, N, K) in [(300, 70, 90), (40, 530, 64), (1000, 37, 33), (8, 8, 8)] {
            let lda = (transA ? M : K) + 3, ldb = (transB ? K : N) + 5, ldc = N + 2
            let a = randomFloats((transA ? K : M) * lda, seed: 80), b = randomFloats((transB ? N : K) * ldb, seed: 81)
            let c0 = randomFloats(M * ldc, seed: 82)
            var whole = c0
            cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                        Int32(M), Int32(N), Int32(K), 0.5, a, Int32(lda), b, Int32(ldb), 1, &whole, Int32(ldc))
            for threads in [2, 3] {
                let parts = parts(M: M, N: N, K: K, threads: threads)
                #expect(parts.reduce(0) { $0 + ($1.m1 - $1.m0) * ($1.n1 - $1.n0) } == M * N, "the parts tile C")
                var serial = c0, onTeam = c0
                serial.withUnsafeMutableBufferPointer { c in
                    for p in parts { GEMMSplit.run(p, transA, transB, K, 0.5, a, lda, b, ldb, 1, c.baseAddress!, ldc) }
                }
                onTeam.withUnsafeMutableBufferPointer { c in
                    let base = c.baseAddress!
                    teams[threads]!.run { i in
                        if i < parts.count { GEMMSplit.run(parts[i], transA, transB, K, 0.5, a, lda, b, ldb, 1, base, ldc) }
                    }
                }
                let label = "(\(M), \(N), \(K)) in \(parts.count) parts, transA \(transA), transB \(transB)"
                let rounding = compare(serial, whole, label: label + " vs whole")
                #expect(rounding.maxRelToScale < 1e-6, "\(rounding)")
                let repeatable = compare(onTeam, serial, label: label + ", team vs serial")
                #expect(repeatable.maxAbs == 0, "\(repeatable)")
            }
        }
        // Large enough products are split, into blocks whose edges fall on multiples of 16.
        #expect(parts(M: 1024, N: 576, K: 576, threads: 2)
                == [GEMMSplit.Part(m0: 0, m1: 512, n0: 0, n1: 576), GEMMSplit.Part(m0: 512, m1: 1024, n0: 0, n1: 576)])
        #expect(parts(M: 256, N: 49152, K: 576, threads: 3).allSatisfy { $0.n0 % 16 == 0 && $0.m1 == 256 })
        // 64 rows for 3 threads: blocks of 32 (rounded up to 16), so only 2 parts.
        #expect(parts(M: 64, N: 48, K: 2048, threads: 3).map { $0.m1 - $0.m0 } == [32, 32])
    }

    /// Decoding's few-row products (`rowsTimesRows`, at both vector widths) match sgemm to
    /// float32 rounding, and a row's result has the same bits whatever rows share its product,
    /// so an answer does not depend on the batch it was generated in.
    @Test func fewRowProductsMatchSgemmAndIgnoreTheirBatch() {
        let K = 583, N = 70, ldb = K + 3
        let a = randomFloats(16 * K, seed: 90), b = randomFloats(N * ldb, seed: 91)
        for kernels in [Vectors.avx2, Vectors.avx512] where kernels.lanes == 8 || MachineKernels.cpu.level >= .avx512 {
            var rows: [[Float]] = []
            for M in [1, 3, 4, 8, 13, 16] {
                var reference = [Float](repeating: 0, count: M * N), mine = reference
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(M), Int32(N), Int32(K), 0.5, a, Int32(K), b, Int32(ldb), 0, &reference, Int32(N))
                mine.withUnsafeMutableBufferPointer { c in
                    kernels.rowsTimesRows(c.baseAddress!, N, a, K, b, ldb, M, 0, N, K, alpha: 0.5, accumulate: false)
                }
                let c = compare(mine, reference, label: "\(kernels.lanes) lanes, M \(M)")
                #expect(c.maxRelToScale < 1e-6, "\(c)")
                rows.append(Array(mine.prefix(N)))
            }
            #expect(rows.allSatisfy { $0 == rows[0] }, "row 0 differs with the batch (\(kernels.lanes) lanes)")
        }
    }

    private func parts(M: Int, N: Int, K: Int, threads: Int) -> [GEMMSplit.Part] {
        let plan = GEMMSplit.plan(M: M, N: N, K: K, threads: threads)
        return (0..<plan.count).map { plan[$0] }
    }

    /// Each job runs every participant exactly once, on distinct threads, job after job; a job
    /// started from inside a job runs all its shares on the caller instead of deadlocking.
    @Test func teamRunsEachParticipantOncePerJob() {
        let team = ComputeTeam(size: 3)
        let counts = UnsafeMutablePointer<Int>.allocate(capacity: 3)
        defer { counts.deallocate() }
        counts.initialize(repeating: 0, count: 3)
        for _ in 0..<2000 {
            team.run { i in counts[i] += 1 }  // each participant writes only its own slot
        }
        #expect((0..<3).map { counts[$0] } == [2000, 2000, 2000])

        let threadIDs = Mutex<Set<UInt>>([])
        team.run { _ in
            let id = UInt(bitPattern: Int(pthread_self()))
            threadIDs.withLock { _ = $0.insert(id) }
            usleep(2000)  // all three hold a thread at once
        }
        #expect(threadIDs.withLock { $0.count } == 3)

        let nested = Mutex<[Int]>([])
        team.run { outer in
            guard outer == 1 else { return }
            team.run { inner in nested.withLock { $0.append(inner) } }
        }
        #expect(nested.withLock { $0 } == [0, 1, 2])
    }

    /// Threads that went to sleep after their spin wake for the next job.
    @Test func teamWakesAfterSleeping() {
        let team = ComputeTeam(size: 2, spinSeconds: 0.001)
        let done = Mutex<Int>(0)
        for _ in 0..<5 {
            usleep(20_000)  // well past the spin: the team's thread sleeps
            team.run { _ in done.withLock { $0 += 1 } }
        }
        #expect(done.withLock { $0 } == 10)
    }
}
