import Foundation

/// How the next token is chosen from the logits, in transformers' order: the repetition
/// penalty, then temperature, top-k and top-p; temperature 0 is greedy (the first largest
/// logit, as `argmax` picks it).
public struct SamplingSettings: Sendable, Equatable {
    public var temperature: Float
    /// 0: no top-k cut.
    public var topK: Int
    /// 1: no nucleus cut.
    public var topP: Float
    /// 1: none. A seen token's logit is divided by it when positive, multiplied when negative
    /// (the CTRL paper's penalty, as transformers applies it).
    public var repetitionPenalty: Float
    public var seed: UInt64

    public init(temperature: Float, topK: Int, topP: Float, repetitionPenalty: Float, seed: UInt64) {
        self.temperature = temperature; self.topK = topK; self.topP = topP
        self.repetitionPenalty = repetitionPenalty; self.seed = seed
    }

    public var isGreedy: Bool { temperature == 0 }
}

/// Picks tokens from logits. The random draw for a token depends only on (seed, sequence
/// index, token index), so an answer does not depend on what it was batched with.
public struct TokenSampler {
    public let settings: SamplingSettings
    private var work: [Float]
    private var order: [Int32]

    public init(settings: SamplingSettings, vocabSize: Int) {
        self.settings = settings
        work = [Float](repeating: 0, count: vocabSize)
        order = []
        order.reserveCapacity(vocabSize)
    }

    /// The next token of sequence `sequence` at its `index`-th generated position, from
    /// `logits` (V); `seen` are the tokens the repetition penalty applies to (prompt and answer).
    public mutating func pick(_ logits: UnsafePointer<Float>, seen: [Int32], sequence: Int, index: Int) -> Int32 {
        let V = work.count, s = settings
        work.withUnsafeMutableBufferPointer { w in w.baseAddress!.update(from: logits, count: V) }
        if s.repetitionPenalty != 1 {
            for id in Set(seen) where id >= 0 && Int(id) < V {
                let x = work[Int(id)]
                work[Int(id)] = x > 0 ? x / s.repetitionPenalty : x * s.repetitionPenalty
            }
        }
        if s.isGreedy { return Self.argmax(work) }
        // Candidates by logit, largest first (ties by id, so the order is fixed).
        order.removeAll(keepingCapacity: true)
        for i in 0..<V where work[i] > -Float.infinity { order.append(Int32(i)) }
        let w = work
        order.sort { w[Int($0)] != w[Int($1)] ? w[Int($0)] > w[Int($1)] : $0 < $1 }
        if s.topK > 0 && order.count > s.topK { order.removeLast(order.count - s.topK) }
        let top = w[Int(order[0])] / s.temperature
        var probs = order.map { expf(w[Int($0)] / s.temperature - top) }
        var total = probs.reduce(0, +)
        if s.topP < 1 {
            // Keep the smallest prefix whose probability reaches top_p (at least one token).
            var kept = 0, mass: Float = 0
            while kept < probs.count {
                mass += probs[kept] / total
                kept += 1
                if mass >= s.topP { break }
            }
            probs.removeLast(probs.count - kept)
            total = probs.reduce(0, +)
        }
        let key = CounterRandom.key(s.seed, UInt64(sequence), 0x5341_4D50)
        let u = CounterRandom.uniform(key, index) * total
        var acc: Float = 0
        for (i, p) in probs.enumerated() {
            acc += p
            if u < acc { return order[i] }
        }
        return order[probs.count - 1]
    }

    /// The index of the first largest value.
    public static func argmax(_ x: [Float]) -> Int32 {
        x.withUnsafeBufferPointer { argmax($0.baseAddress!, $0.count) }
    }

    /// The index of the first largest of x[0..<n].
    public static func argmax(_ x: UnsafePointer<Float>, _ n: Int) -> Int32 {
        var best = 0
        for i in 1..<n where x[i] > x[best] { best = i }
        return Int32(best)
    }
}
