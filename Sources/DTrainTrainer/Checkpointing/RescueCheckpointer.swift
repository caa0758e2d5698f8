import DTrainIO
import Foundation

/// Rank 0's thread that checkpoints the last completed step the moment a kill may be coming.
///
/// A stop request is honoured at the next step boundary, but a kill does not always wait that
/// long. Open MPI's `mpirun`, sent SIGTERM (or SIGINT, SIGHUP), sends every rank SIGCONT at once,
/// SIGTERM `odls_base_sigkill_timeout` seconds later (1 by default) and SIGKILL as long again after
/// that, and then exits 1 whatever the ranks do; Slurm's end of a job also starts with SIGCONT and
/// SIGTERM. A step can take longer than those two seconds. So SIGCONT and SIGTERM wake this thread,
/// which writes the state after the last completed step straight away: rank 0 holds it whole
/// (every rank has the same weights and optimizer state) while all ranks compute the next step's
/// gradients, which touch neither.
///
/// The training loop holds `lock` whenever it changes the weights, the optimizer state or the
/// progress, or writes a checkpoint, and releases it only while gradients are computed; it
/// `publish`es the progress each time a step is complete. A rescue therefore always writes a real
/// step boundary, from which a resumed run is bit-exact, and at most the step in flight is lost.
final class RescueCheckpointer: @unchecked Sendable {
    private let lock = NSLock()
    private var published: TrainingProgress?
    private var stopped = false
    private let finished = DispatchSemaphore(value: 0)
    /// Writes the checkpoint of a published step if it is newer than any written (called with
    /// `lock` held, on the rescue thread); the signal that woke the thread is passed for messages.
    private let rescue: (TrainingProgress, Int32) -> Void

    init(rescue: @escaping (TrainingProgress, Int32) -> Void) {
        self.rescue = rescue
    }

    /// Starts the thread. The caller holds the lock (`hold`) from here on, except while computing
    /// gradients.
    func start() {
        let thread = Thread { [self] in
            while true {
                guard let signal = StopRequest.waitForRescueSignal(timeoutMilliseconds: -1) else { continue }
                lock.lock()
                if stopped { lock.unlock(); break }
                if signal != 0, let progress = published { rescue(progress, signal) }
                lock.unlock()
            }
            finished.signal()
        }
        thread.name = "dtrain-rescue"
        thread.start()
    }

    /// The training loop is about to change the state (or write a checkpoint).
    func hold() { lock.lock() }

    /// The training loop computes gradients only until it calls `hold` again.
    func release() { lock.unlock() }

    /// Records the state after a completed step as the one a rescue writes. Call while holding.
    func publish(_ progress: TrainingProgress) { published = progress }

    /// Ends the thread; no rescue is written after this returns. Call while holding (it releases).
    func retire() {
        stopped = true
        lock.unlock()
        StopRequest.wake()
        finished.wait()
    }
}
