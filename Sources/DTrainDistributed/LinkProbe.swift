import Foundation

/// What one all-reduce costs on this world's links, fitted to timed blocking all-reduces:
/// t(n) = fixed + n · perByte for n bytes per rank, through the smallest and largest sizes
/// timed. Read as a ring all-reduce over p ranks, t(n) = 2(p−1)·α + 2(p−1)/p · n / B, which gives
/// the per-message latency α and the link bandwidth B, and from them the cost at other rank counts.
public struct AllReduceFit: Codable, Sendable {
    /// Ranks the measurements were taken on.
    public let ranks: Int
    /// Seconds an all-reduce costs whatever its size.
    public let fixedSeconds: Double
    /// Seconds per byte of each rank's buffer.
    public let secondsPerByte: Double
    /// The measurements: (bytes per rank, fastest seconds).
    public let samples: [[Double]]

    /// Per-message latency α of the ring reading.
    public var latency: Double { ranks > 1 ? fixedSeconds / Double(2 * (ranks - 1)) : 0 }
    /// Link bandwidth B (bytes/s) of the ring reading.
    public var bandwidth: Double {
        ranks > 1 && secondsPerByte > 0 ? 2 * Double(ranks - 1) / (Double(ranks) * secondsPerByte) : .infinity
    }

    /// A ring all-reduce of `bytes` per rank over `p` ranks on the same links.
    public func ringSeconds(bytes: Double, ranks p: Int) -> Double {
        guard p > 1 else { return 0 }
        return 2 * Double(p - 1) * latency + 2 * Double(p - 1) / Double(p) * bytes / bandwidth
    }

    /// The bucket size (floats) for overlapping gradient all-reduces with backward: the smallest
    /// power of two whose all-reduce spends at most a tenth of its time on the fixed cost (so that
    /// splitting the gradients costs little), but at most `total / 4` (so that there are buckets
    /// to overlap) and at least 2^16.
    public func bucketFloats(total: Int) -> Int {
        let wanted = secondsPerByte > 0 ? 9 * fixedSeconds / secondsPerByte / 4 : Double(total)
        var floats = 1 << 16
        while Double(floats) < wanted && floats < total / 4 { floats <<= 1 }
        return floats
    }
}

/// Times blocking all-reduces on the world's links.
public enum LinkProbe {
    /// The fastest of `repeats` blocking all-reduces of each size (bytes per rank, rounded to
    /// floats), fitted on every rank; the fit is rank 0's, broadcast, so that every rank derives
    /// the same bucket layout from it.
    public static func measure(_ comm: Communicator, sizes: [Int], repeats: Int) -> AllReduceFit {
        let maxFloats = sizes.map { max(1, $0 / 4) }.max() ?? 1
        let send = UnsafeMutablePointer<Float>.allocate(capacity: maxFloats), recv = UnsafeMutablePointer<Float>.allocate(capacity: maxFloats)
        defer { send.deallocate(); recv.deallocate() }
        send.initialize(repeating: 1, count: maxFloats)
        var samples: [[Double]] = []
        for bytes in sizes {
            let n = max(1, bytes / 4)
            var best = Double.infinity
            for _ in 0..<max(1, repeats) {
                comm.barrier()
                let t0 = ProcessInfo.processInfo.systemUptime
                comm.wait(comm.startAllReduceSum(send: send, recv: recv, count: n))
                best = min(best, ProcessInfo.processInfo.systemUptime - t0)
            }
            samples.append([Double(n * 4), best])
        }
        // Through the smallest and the largest size: the smallest is nearly all fixed cost, the
        // largest nearly all bytes (a least-squares line would be the largest's alone).
        let small = samples.min { $0[0] < $1[0] }!, large = samples.max { $0[0] < $1[0] }!
        let b = large[0] > small[0] ? max(0, (large[1] - small[1]) / (large[0] - small[0])) : 0
        let a0 = max(0, small[1] - b * small[0])
        var fit = [a0, b]
        comm.broadcast(&fit, root: 0)
        var flat = samples.flatMap { $0 }
        comm.broadcast(&flat, root: 0)
        return AllReduceFit(ranks: comm.worldSize, fixedSeconds: fit[0], secondsPerByte: fit[1],
                            samples: stride(from: 0, to: flat.count, by: 2).map { [flat[$0], flat[$0 + 1]] })
    }
}
