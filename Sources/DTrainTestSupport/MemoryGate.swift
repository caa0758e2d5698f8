import Foundation

/// Admits the jobs tests start (mpirun, the cluster launchers, a dtrain process) only while the
/// memory their ranks need fits in the machine's, so that suites running side by side never
/// push it into the kernel's OOM killer (a full fine-tuning rank of SmolLM2-135M peaks near 3 GB,
/// and two 4-rank full jobs at once overflow 24 GB). Jobs wait their turn; one that needs more
/// than the whole budget runs alone.
public enum MemoryGate {
    /// GiB a job may hold in all: the machine's memory less what the test process and the page
    /// cache keep.
    public static let budgetGiB: Double = {
        let physical = Double(ProcessInfo.processInfo.physicalMemory) / Double(1 << 30)
        return max(3, physical - 5)
    }()

    /// A rank's peak, measured (`/usr/bin/time -v`, SmolLM2-135M): 2.8 GB fine-tuning every
    /// weight (the tests' short sequences), 0.8 GB training LoRA on those and 2.3–2.4 GB on the
    /// quickstart config's 16 x 128-token micro-batches.
    public static func rankGiB(fullFineTuning: Bool) -> Double { fullFineTuning ? 3 : 2 }

    /// Whether a dtrain command line trains every weight: `--set method=full`, or a `--config`
    /// file that says `method: full` (later `--set`s win, as in dtrain).
    public static func trainsEveryWeight(_ args: [String]) -> Bool {
        var full = false
        if let i = args.firstIndex(of: "--config"), i + 1 < args.count,
           let text = try? String(contentsOfFile: args[i + 1], encoding: .utf8) {
            full = text.split(separator: "\n").contains { $0.trimmingCharacters(in: .whitespaces) == "method: full" }
        }
        for (i, a) in args.enumerated() where a == "--set" && i + 1 < args.count && args[i + 1].hasPrefix("method=") {
            full = args[i + 1] == "method=full"
        }
        return full
    }

    private static let condition = NSCondition()
    nonisolated(unsafe) private static var heldGiB: Double = 0

    /// Runs `body` once `gib` (capped at the budget) is free, and frees it after.
    public static func admit<T>(gib: Double, _ body: () throws -> T) rethrows -> T {
        let want = min(gib, budgetGiB)
        condition.lock()
        while heldGiB + want > budgetGiB { condition.wait() }
        heldGiB += want
        condition.unlock()
        defer {
            condition.lock()
            heldGiB -= want
            condition.broadcast()
            condition.unlock()
        }
        return try body()
    }

    /// `admit` for `ranks` ranks of the dtrain command line `args`.
    public static func admit<T>(ranks: Int, args: [String], _ body: () throws -> T) rethrows -> T {
        try admit(gib: Double(ranks) * rankGiB(fullFineTuning: trainsEveryWeight(args)), body)
    }
}
