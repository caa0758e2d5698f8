import DTrainCore

/// A training example as the model sees it: token ids and which of them carry loss.
public struct SequenceExample: Sendable, Equatable {
    /// Token ids.
    public var ids: [Int32]
    /// 1 where the token is a training target (predicted from the tokens before it), else 0.
    public var lossMask: [UInt8]
    public init(ids: [Int32], lossMask: [UInt8]) {
        precondition(ids.count == lossMask.count, "SequenceExample: ids and lossMask differ in length")
        self.ids = ids; self.lossMask = lossMask
    }
    /// Positions that carry loss (the first token never does: nothing precedes it).
    public var labelledCount: Int { lossMask.count > 1 ? lossMask[1...].reduce(0) { $0 + Int($1) } : 0 }
}

/// Which examples every optimizer step uses, for every rank: a pure function of the seed, the
/// epoch, the batch settings and the world size, never of timing or rank-local state.
///
/// Each epoch visits a seeded permutation of the examples. Step s of an epoch takes the next
/// global batch from it (a fixed number of examples, or as many as fit a token budget; the last
/// batch of an epoch may be smaller). The step's examples are cut into `worldSize` contiguous
/// slices, one per rank, and each slice into micro-batches of `micro` examples. The set of
/// examples in a step is the same for any world size, so N ranks compute the same update as one
/// rank with N times the accumulation.
public struct StepPlan: Sendable {
    public let exampleCount: Int
    public let seed: UInt64
    public let worldSize: Int
    public let micro: Int
    /// The global batch: a number of examples, or a token budget (one of the two is set).
    private let globalExamples: Int?
    private let globalTokens: Int?
    private let lengths: [Int]

    public init(lengths: [Int], seed: UInt64, globalExamples: Int?, globalTokens: Int?, worldSize: Int, micro: Int) {
        precondition(globalExamples != nil || globalTokens != nil, "StepPlan: a global batch size is required")
        exampleCount = lengths.count
        self.lengths = lengths
        self.seed = seed
        self.globalExamples = globalExamples
        self.globalTokens = globalTokens
        self.worldSize = worldSize
        self.micro = micro
    }

    /// The epoch's order: a Fisher-Yates permutation drawn from (seed, epoch).
    public func order(epoch: Int) -> [Int] {
        var order = Array(0..<exampleCount)
        let key = CounterRandom.key(seed, 0x4F52_4445_52, UInt64(epoch))
        var i = exampleCount - 1
        while i > 0 {
            let j = Int(CounterRandom.mix(key ^ UInt64(i) &* 0x9E37_79B9_7F4A_7C15) % UInt64(i + 1))
            order.swapAt(i, j)
            i -= 1
        }
        return order
    }

    /// Boundaries of each step inside `order` (count + 1 offsets).
    public func stepBoundaries(order: [Int]) -> [Int] {
        var bounds = [0]
        if let g = globalExamples {
            var s = 0
            while s < order.count { s = min(order.count, s + g); bounds.append(s) }
        } else if let budget = globalTokens {
            var s = 0
            while s < order.count {
                var tokens = 0, e = s
                while e < order.count && (e == s || tokens + lengths[order[e]] <= budget) { tokens += lengths[order[e]]; e += 1 }
                bounds.append(e); s = e
            }
        }
        return bounds
    }

    /// Steps in one epoch.
    public func stepsPerEpoch() -> Int { stepBoundaries(order: order(epoch: 0)).count - 1 }

    /// The examples of step `step` (0-based within the epoch) that `rank` trains on, as micro-batches.
    public func microBatches(order: [Int], bounds: [Int], step: Int, rank: Int) -> [[Int]] {
        let slice = Array(rankSlice(order: order, bounds: bounds, step: step, rank: rank))
        return stride(from: 0, to: slice.count, by: micro).map { Array(slice[$0..<min(slice.count, $0 + micro)]) }
    }

    /// The rank's contiguous share of a step's examples.
    public func rankSlice(order: [Int], bounds: [Int], step: Int, rank: Int) -> ArraySlice<Int> {
        let start = bounds[step], end = bounds[step + 1], n = end - start
        let per = (n + worldSize - 1) / worldSize
        let lo = min(end, start + rank * per), hi = min(end, lo + per)
        return order[lo..<hi]
    }
}
