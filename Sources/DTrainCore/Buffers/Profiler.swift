import Foundation

/// Wall-clock time per kernel family, collected when `DTRAIN_PROFILE=1` (off by default; the
/// disabled path is one branch per kernel call).
public enum Profiler {
    public enum Section: Int, CaseIterable {
        case embedding, rmsnorm, linear, lora, dropout, rope, attention, swiglu, head, optimizer
    }

    nonisolated(unsafe) public static var enabled = ProcessInfo.processInfo.environment["DTRAIN_PROFILE"] == "1"
    nonisolated(unsafe) static var seconds = [Double](repeating: 0, count: Section.allCases.count)

    @inline(__always)
    public static func measure<R>(_ section: Section, _ body: () -> R) -> R {
        guard enabled else { return body() }
        var t0 = timespec(), t1 = timespec()
        clock_gettime(CLOCK_MONOTONIC, &t0)
        let r = body()
        clock_gettime(CLOCK_MONOTONIC, &t1)
        seconds[section.rawValue] += Double(t1.tv_sec - t0.tv_sec) + Double(t1.tv_nsec - t0.tv_nsec) * 1e-9
        return r
    }

    /// Accumulated seconds per section, largest first.
    public static func report() -> [(String, Double)] {
        Section.allCases.map { ("\($0)", seconds[$0.rawValue]) }.filter { $0.1 > 0 }.sorted { $0.1 > $1.1 }
    }

    public static func reset() { seconds = [Double](repeating: 0, count: Section.allCases.count) }
}
