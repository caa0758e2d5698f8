/// One batch of B rows of T token ids, with the labels that say which next tokens carry loss.
public struct TokenBatch: Sendable {
    /// B.
    public var batchSize: Int
    /// T.
    public var seqLen: Int
    /// (B, T) token ids.
    public var tokens: [Int32]
    /// (B, T) labels in transformers' convention: position t is scored on labels[t + 1];
    /// -100 means no loss. Usually the tokens themselves, masked.
    public var labels: [Int32]
    /// (B, T) RoPE positions; nil means 0..<T in every row.
    public var positions: [Int32]?
    /// (B, T) row-local index where each token's example begins (packing); nil means 0.
    public var segmentStarts: [Int32]?
    /// (B, T) a key per token for LoRA dropout, from its example and position; nil means the
    /// token's index in the batch.
    public var tokenKeys: [UInt64]?

    /// The label value that carries no loss.
    public static let ignoreIndex: Int32 = -100

    /// A batch with no tokens: the starting point for `BatchBuilder.fill`, which refills one
    /// batch's arrays in place.
    public static var empty: TokenBatch { TokenBatch(batchSize: 1, seqLen: 0, tokens: [], labels: []) }

    public init(batchSize: Int, seqLen: Int, tokens: [Int32], labels: [Int32],
                positions: [Int32]? = nil, segmentStarts: [Int32]? = nil, tokenKeys: [UInt64]? = nil) {
        precondition(tokens.count == batchSize * seqLen && labels.count == tokens.count,
                     "TokenBatch: tokens and labels must hold B*T = \(batchSize * seqLen) values")
        self.batchSize = batchSize; self.seqLen = seqLen
        self.tokens = tokens; self.labels = labels
        self.positions = positions; self.segmentStarts = segmentStarts; self.tokenKeys = tokenKeys
    }
}

/// A loss summed over the positions that carry a label, and how many there were.
public struct LossSum: Sendable, Equatable {
    public var sum: Double
    public var count: Int
    public init(sum: Double = 0, count: Int = 0) { self.sum = sum; self.count = count }
    /// Mean loss per labelled position (NaN when there are none).
    public var mean: Double { count > 0 ? sum / Double(count) : .nan }
}
