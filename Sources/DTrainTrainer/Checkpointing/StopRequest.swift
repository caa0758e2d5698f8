import Foundation

/// The exit status of a run that stopped on request (SIGUSR1/SIGTERM) after writing a
/// checkpoint: "stopped, resume me" (BSD's EX_TEMPFAIL). The sbatch script requeues on it.
public let stoppedForResumeExitCode: Int32 = 75

// Written by the signal handler, read by the training loop at each step boundary. A plain
// word store is async-signal-safe; the pointer is allocated before any handler is installed.
private let pendingSignal: UnsafeMutablePointer<sig_atomic_t> = {
    let p = UnsafeMutablePointer<sig_atomic_t>.allocate(capacity: 1)
    p.initialize(to: 0)
    return p
}()

/// Turns SIGUSR1 and SIGTERM into a request to stop at the next step boundary, where all ranks
/// agree (the flag travels in the step's first all-reduce), rank 0 writes a checkpoint, and the
/// job exits with `stoppedForResumeExitCode`.
///
/// Open MPI's mpirun forwards SIGUSR1 to every rank; Slurm's `--signal` and `scancel --signal`
/// deliver either signal to the batch script or the tasks.
public enum StopRequest {
    /// The signals that request a stop.
    public static let signals: [Int32] = [SIGUSR1, SIGTERM]

    /// Installs the handlers (once per process).
    public static func install() {
        _ = pendingSignal.pointee
        for s in signals {
            var action = sigaction()
            action.__sigaction_handler.sa_handler = { pendingSignal.pointee = $0 }
            sigemptyset(&action.sa_mask)
            action.sa_flags = SA_RESTART
            sigaction(s, &action, nil)
        }
        // A launcher may pass a mask that blocks them on; the handlers must be able to run.
        var unblock = sigset_t()
        sigemptyset(&unblock)
        for s in signals { sigaddset(&unblock, s) }
        pthread_sigmask(SIG_UNBLOCK, &unblock, nil)
    }

    /// Puts the default actions back once the stop's checkpoint is written. mpirun answers the
    /// first rank that exits non-zero (75) by sending SIGTERM to the others; a rank still
    /// finishing MPI must then die at once, not swallow it as a stop request and wait for the
    /// SIGKILL that follows `odls_base_sigkill_timeout` (30 s in the launchers) later.
    public static func restoreDefaults() {
        for s in signals { signal(s, SIG_DFL) }
    }

    /// The signal that asked for a stop, or 0.
    public static var pending: Int32 { Int32(pendingSignal.pointee) }

    /// Requests a stop as a signal would (fault-injection tests).
    public static func request(_ signal: Int32 = SIGUSR1) { pendingSignal.pointee = signal }

    /// A signal's name for messages.
    public static func name(_ signal: Int32) -> String {
        switch signal {
        case SIGUSR1: return "SIGUSR1"
        case SIGTERM: return "SIGTERM"
        default: return "signal \(signal)"
        }
    }
}

/// Deliberate failures, for tests of failure handling and resume. `DTRAIN_FAULT=ACTION:RANK:STEP[:N]`:
///
/// - `fail:R:S` — rank R throws an error at the start of step S (1-based);
/// - `kill:R:S:N` — rank R kills itself (SIGKILL) in step S after N micro-batches (0: at its start);
/// - `signal:R:S:N` — rank R raises SIGUSR1 in step S after N micro-batches (a stop request
///   arriving mid-accumulation);
/// - `kill-in-checkpoint:0:S:N` — rank 0 kills itself while writing step S's checkpoint, after N
///   of its datasets.
///
/// `R:S` alone means `fail:R:S`.
public struct FaultInjection: Equatable {
    public enum Action: String { case fail, kill, signal, killInCheckpoint = "kill-in-checkpoint" }
    public let action: Action
    public let rank: Int, step: Int, count: Int

    public struct Failure: Error, CustomStringConvertible {
        public let rank: Int, step: Int
        public var description: String { "injected failure at step \(step) (DTRAIN_FAULT)" }
    }

    public static func parse(_ text: String) -> FaultInjection? {
        var parts = text.split(separator: ":").map(String.init)
        if parts.count == 2 { parts.insert("fail", at: 0) }
        guard parts.count >= 3, let action = Action(rawValue: parts[0]), let rank = Int(parts[1]), let step = Int(parts[2]) else { return nil }
        return FaultInjection(action: action, rank: rank, step: step, count: parts.count > 3 ? Int(parts[3]) ?? 0 : 0)
    }

    static func fromEnvironment() -> FaultInjection? {
        ProcessInfo.processInfo.environment["DTRAIN_FAULT"].flatMap(parse)
    }

    /// Acts if this rank is at the fault's point in step `step` after `microDone` micro-batches.
    func trigger(rank: Int, step: Int, microDone: Int) throws {
        guard rank == self.rank, step == self.step, microDone == count else { return }
        switch action {
        case .fail: if microDone == 0 { throw Failure(rank: rank, step: step) }
        case .kill: kill(getpid(), SIGKILL)
        case .signal: StopRequest.request(SIGUSR1)
        case .killInCheckpoint: break
        }
    }

    /// The checkpoint writer's hook for `kill-in-checkpoint`.
    func checkpointHook(rank: Int, step: Int) -> ((Int, Int) -> Void)? {
        guard action == .killInCheckpoint, rank == self.rank, step == self.step else { return nil }
        let after = count
        return { done, _ in if done >= after { kill(getpid(), SIGKILL) } }
    }
}
