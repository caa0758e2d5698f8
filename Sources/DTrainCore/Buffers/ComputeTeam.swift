import Foundation
import Synchronization

/// A fixed team of compute threads that stay awake between jobs.
///
/// A job is one closure run once by every participant: the calling thread is participant 0 and
/// the team's own threads are 1..<size. Between jobs the team's threads spin (yielding the core
/// to anything else runnable) for up to `spinSeconds` and only then sleep. On a VM, an idle
/// virtual CPU is halted and waking it costs the hypervisor's scheduling latency, which can
/// exceed the product that follows the pause: a pool whose
/// threads sleep between the hundreds of products and loops of a training step pays that again
/// and again, and two pools (BLAS's and ours) that each want the
/// same cores pay it in turn. One team that does all of a rank's parallel work, awake for the
/// whole step, pays it once.
///
/// One job runs at a time. A caller that finds the team busy (a job started from inside a job, or
/// from another thread) runs every participant's share itself, one after the other: what a
/// share computes must therefore depend only on its participant index, never on which thread
/// runs it, and the results are the same either way.
public final class ComputeTeam: @unchecked Sendable {
    /// Participants, the caller included.
    public let size: Int
    /// How long an idle thread spins before it sleeps.
    public let spinSeconds: Double

    private let generation = Atomic<Int>(0)
    private let finished = Atomic<Int>(0)
    private let busy = Atomic<Bool>(false)
    private let sleepers = Atomic<Int>(0)
    // Written by the caller before it publishes a job (the generation's release store) and read
    // by the threads after they see it (acquire), so a plain variable is enough.
    nonisolated(unsafe) private var job: ((Int) -> Void)?
    private let lock = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let wake = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)

    /// Starts `size - 1` threads (none for a size of 1).
    public init(size: Int, spinSeconds: Double = 0.005) {
        self.size = max(1, size)
        self.spinSeconds = spinSeconds
        pthread_mutex_init(lock, nil)
        pthread_cond_init(wake, nil)
        for index in 1..<self.size {
            let thread = Thread { [self] in self.workerLoop(index) }
            thread.name = "dtrain-compute-\(index)"
            thread.start()
        }
    }

    // The threads hold the team and run for the life of the process: a rank makes one team.

    /// Runs `body(participant)` for every participant in 0..<size and returns when all are done.
    public func run(_ body: (Int) -> Void) {
        guard size > 1, busy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged else {
            for participant in 0..<size { body(participant) }
            return
        }
        withoutActuallyEscaping(body) { escapable in
            job = escapable
            finished.store(0, ordering: .relaxed)
            generation.wrappingAdd(1, ordering: .sequentiallyConsistent)
            // A thread that counted itself a sleeper before the new generation was visible
            // to it is (or is about to be) waiting on the condition: wake it under the lock.
            if sleepers.load(ordering: .sequentiallyConsistent) > 0 {
                pthread_mutex_lock(lock)
                pthread_cond_broadcast(wake)
                pthread_mutex_unlock(lock)
            }
            escapable(0)
            var spins = 0
            while finished.load(ordering: .acquiring) < size - 1 {
                spins += 1
                if spins > 64 { sched_yield() }
            }
            job = nil
        }
        busy.store(false, ordering: .releasing)
    }

    private func workerLoop(_ index: Int) {
        var seen = 0
        while true {
            var spins = 0
            var idleSince = 0.0
            while generation.load(ordering: .acquiring) == seen {
                spins += 1
                guard spins > 64 else { continue }
                sched_yield()
                // Check the clock only now and then; it costs more than the load.
                guard spins % 256 == 0 else { continue }
                let t = Self.seconds()
                if idleSince == 0 { idleSince = t } else if t - idleSince > spinSeconds { sleep(until: seen); break }
            }
            seen = generation.load(ordering: .acquiring)
            job!(index)
            finished.wrappingAdd(1, ordering: .releasing)
        }
    }

    /// Waits on the condition until the generation moves past `seen`.
    private func sleep(until seen: Int) {
        pthread_mutex_lock(lock)
        sleepers.wrappingAdd(1, ordering: .sequentiallyConsistent)
        while generation.load(ordering: .sequentiallyConsistent) == seen { pthread_cond_wait(wake, lock) }
        sleepers.wrappingSubtract(1, ordering: .sequentiallyConsistent)
        pthread_mutex_unlock(lock)
    }

    private static func seconds() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
    }
}
