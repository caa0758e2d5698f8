import Foundation

/// The exit status of a run that stopped on request (SIGUSR1/SIGTERM/SIGINT) after writing a
/// checkpoint: "stopped, resume me" (BSD's EX_TEMPFAIL). The sbatch script requeues on it.
public let stoppedForResumeExitCode: Int32 = 75

// Written by the signal handler, read by the training loop at each step boundary. A plain
// word store is async-signal-safe; the pointer is allocated before any handler is installed.
private let pendingSignal: UnsafeMutablePointer<sig_atomic_t> = {
    let p = UnsafeMutablePointer<sig_atomic_t>.allocate(capacity: 1)
    p.initialize(to: 0)
    return p
}()

// What the handler prints on a Ctrl-C that arrives while a stop is already under way (the rank
// that speaks only; empty on the others), as bytes allocated before any handler is installed.
private let repeatedInterruptMessage: UnsafeMutableBufferPointer<UInt8> = {
    let text = Array("\ndtrain: already stopping: finishing the step's checkpoint, then exiting with status 75 (resume with --resume auto)\n".utf8)
    let p = UnsafeMutableBufferPointer<UInt8>.allocate(capacity: text.count)
    _ = p.initialize(from: text)
    return p
}()
nonisolated(unsafe) private var repeatedInterruptSpeaks: sig_atomic_t = 0

// A pipe the handler writes each SIGTERM's and SIGCONT's number to (one byte), waking the rescue
// thread (`RescueCheckpointer`). Both ends are non-blocking: a full pipe never blocks a handler.
private let rescuePipe: UnsafeMutablePointer<Int32> = {
    let p = UnsafeMutablePointer<Int32>.allocate(capacity: 2)
    p.initialize(repeating: -1, count: 2)
    if pipe(p) == 0 {
        for i in 0..<2 {
            _ = fcntl(p[i], F_SETFL, fcntl(p[i], F_GETFL) | O_NONBLOCK)
            _ = fcntl(p[i], F_SETFD, FD_CLOEXEC)
        }
    }
    return p
}()

/// Turns SIGUSR1, SIGTERM and SIGINT (Ctrl-C) into a request to stop at the next step boundary, where all ranks
/// agree (the flag travels in the step's first all-reduce), rank 0 writes a checkpoint, and the
/// job exits with `stoppedForResumeExitCode`.
///
/// Open MPI's mpirun forwards SIGUSR1 to every rank; Slurm's `--signal` and `scancel --signal`
/// deliver either signal to the batch script or the tasks. SIGTERM and SIGCONT also wake rank 0's
/// rescue thread, which checkpoints the last completed step at once: they are how mpirun and
/// Slurm begin a kill that may not wait for the next step boundary.
public enum StopRequest {
    /// The signals that request a stop.
    public static let signals: [Int32] = [SIGUSR1, SIGTERM, SIGINT]
    /// The signals the handler takes: the stop requests, and SIGCONT, which only wakes the rescue
    /// thread (SIGTERM does both).
    static let handled: [Int32] = signals + [SIGCONT]

    /// Whether `install` has run: only then does a trainer start its rescue thread.
    nonisolated(unsafe) public private(set) static var installed = false

    /// Installs the handlers (once per process).
    public static func install() {
        _ = pendingSignal.pointee
        _ = rescuePipe[0]
        for s in handled {
            var action = sigaction()
            action.__sigaction_handler.sa_handler = { signal in
                // Only async-signal-safe work: a word store and write(2), with errno kept.
                let savedErrno = errno
                if signal == SIGINT && pendingSignal.pointee != 0 && repeatedInterruptSpeaks != 0 {
                    _ = write(2, repeatedInterruptMessage.baseAddress, repeatedInterruptMessage.count)
                }
                if signal != SIGCONT { pendingSignal.pointee = signal }
                if signal != SIGUSR1 {
                    var byte = UInt8(truncatingIfNeeded: signal)
                    _ = write(rescuePipe[1], &byte, 1)
                }
                errno = savedErrno
            }
            sigemptyset(&action.sa_mask)
            action.sa_flags = SA_RESTART
            sigaction(s, &action, nil)
        }
        // A launcher may pass a mask that blocks them on; the handlers must be able to run.
        var unblock = sigset_t()
        sigemptyset(&unblock)
        for s in handled { sigaddset(&unblock, s) }
        pthread_sigmask(SIG_UNBLOCK, &unblock, nil)
        installed = true
    }

    /// Whether this process says so when a Ctrl-C arrives while it is already stopping (rank 0:
    /// the others stay quiet, so that a job prints it once).
    public static func announceRepeatedInterrupts(_ speaks: Bool) {
        _ = repeatedInterruptMessage.count
        repeatedInterruptSpeaks = speaks ? 1 : 0
    }

    /// Puts the default actions back once the stop's checkpoint is written. mpirun answers the
    /// first rank that exits non-zero (75) by sending the others SIGCONT, SIGTERM and SIGKILL; a
    /// rank still finishing MPI must then die at once, not swallow SIGTERM as a stop request.
    public static func restoreDefaults() {
        for s in handled { signal(s, SIG_DFL) }
    }

    /// Blocks until a rescue signal arrives (or `wake` is called) and returns the newest signal
    /// number read (0 for `wake`), or nil after `timeoutMilliseconds` without one.
    static func waitForRescueSignal(timeoutMilliseconds: Int32) -> Int32? {
        var fds = pollfd(fd: rescuePipe[0], events: Int16(POLLIN), revents: 0)
        guard poll(&fds, 1, timeoutMilliseconds) > 0 else { return nil }
        var bytes = [UInt8](repeating: 0, count: 64)
        var newest: Int32? = nil
        while true {
            let n = read(rescuePipe[0], &bytes, bytes.count)
            guard n > 0 else { break }
            newest = Int32(bytes[n - 1])
        }
        return newest
    }

    /// Wakes a thread blocked in `waitForRescueSignal` (it reads 0).
    static func wake() {
        var byte: UInt8 = 0
        _ = write(rescuePipe[1], &byte, 1)
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
        case SIGINT: return "SIGINT (Ctrl-C)"
        case SIGCONT: return "SIGCONT"
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
///   of its datasets;
/// - `interrupt:R:S:N` — rank R sends itself SIGINT (Ctrl-C) in step S after N micro-batches;
/// - `nan:R:S:L` — rank R puts a NaN into layer L's gradients (default 0) at the start of step
///   S, so that step's gradient norm is not finite;
/// - `stall:R:S:N` — rank R stops for 60 s in step S after N micro-batches (a step longer than a
///   launcher's grace period, so that a kill lands mid-step).
///
/// `R:S` alone means `fail:R:S`.
public struct FaultInjection: Equatable {
    public enum Action: String { case fail, kill, signal, interrupt, stall, nan, killInCheckpoint = "kill-in-checkpoint" }
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
        case .interrupt: kill(getpid(), SIGINT)
        case .nan: break  // taken by the step itself (it needs the gradients)
        case .stall:
            // Signals interrupt sleep; keep stalling until the deadline.
            let deadline = Date().addingTimeInterval(60)
            while Date() < deadline { usleep(100_000) }
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
