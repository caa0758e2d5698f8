import DTrainCore

/// Turns a micro-batch of examples into a `TokenBatch`, packed or padded.
///
/// Packed: examples are placed best-fit (longest first, each into the fullest row that still
/// has room) into rows of at most `maxSeqLen` tokens; every example keeps its own RoPE positions
/// (0, 1, ...) and attends only within itself, so a packed batch gives the same loss and gradients
/// as the examples one by one. Padded: one example per row. Either way the row length is the
/// longest row actually used, padding carries no loss, and labels follow transformers (position t
/// is scored on labels[t + 1], and labels[j] = ids[j] where the loss mask is 1, else -100).
/// Each token's dropout key comes from its example's index in `data` and its position in it.
public struct BatchBuilder: Sendable {
    public let maxSeqLen: Int
    public let packing: Bool
    /// Token id written into padding (never scored, never attended by real tokens).
    public let padID: Int32

    public init(maxSeqLen: Int, packing: Bool, padID: Int32 = 0) {
        self.maxSeqLen = maxSeqLen; self.packing = packing; self.padID = padID
    }

    /// Rows (each a list of example indices) for a micro-batch, deterministic in its input order.
    public func rows(for examples: [Int], length: (Int) -> Int) -> [[Int]] {
        guard packing else { return examples.map { [$0] } }
        // Longest first, ties by position in the micro-batch, so the layout is reproducible.
        let sorted = examples.enumerated().sorted {
            let a = length($0.element), b = length($1.element)
            return a != b ? a > b : $0.offset < $1.offset
        }.map(\.element)
        var rows: [[Int]] = [], used: [Int] = []
        for e in sorted {
            let len = length(e)
            var best = -1
            for r in rows.indices where used[r] + len <= maxSeqLen && (best < 0 || used[r] > used[best]) { best = r }
            if best < 0 { rows.append([e]); used.append(len) } else { rows[best].append(e); used[best] += len }
        }
        return rows
    }

    /// The batch for a micro-batch; examples must already be at most `maxSeqLen` long.
    public func batch(for examples: [Int], from data: [SequenceExample]) -> TokenBatch {
        var batch = TokenBatch.empty
        fill(&batch, for: examples, from: data)
        return batch
    }

    /// Writes the batch for a micro-batch into `batch`, reusing its arrays' storage: a training
    /// loop that keeps one `TokenBatch` allocates its (B, T) arrays once, not per micro-batch.
    public func fill(_ batch: inout TokenBatch, for examples: [Int], from data: [SequenceExample]) {
        let layout = rows(for: examples) { data[$0].ids.count }
        let T = max(2, layout.map { $0.reduce(0) { $0 + data[$1].ids.count } }.max() ?? 2)
        let B = max(1, layout.count)
        // Taken out of the optionals so that each array is uniquely referenced while refilled.
        var positions = batch.positions ?? [], segments = batch.segmentStarts ?? [], keys = batch.tokenKeys ?? []
        batch.positions = nil; batch.segmentStarts = nil; batch.tokenKeys = nil
        Self.refill(&batch.tokens, padID, B * T)
        Self.refill(&batch.labels, TokenBatch.ignoreIndex, B * T)
        Self.refill(&positions, 0, B * T)
        Self.refill(&segments, 0, B * T)
        Self.refill(&keys, 0, B * T)
        for (b, row) in layout.enumerated() {
            var at = 0
            for e in row {
                let ex = data[e]
                precondition(at + ex.ids.count <= T, "BatchBuilder: example longer than max_seq_len")
                for j in 0..<ex.ids.count {
                    let i = b * T + at + j
                    batch.tokens[i] = ex.ids[j]
                    batch.labels[i] = (j > 0 && ex.lossMask[j] != 0) ? ex.ids[j] : TokenBatch.ignoreIndex
                    positions[i] = Int32(j)
                    segments[i] = Int32(at)
                    keys[i] = CounterRandom.key(UInt64(e), UInt64(j))
                }
                at += ex.ids.count
            }
            // Padding: each pad token attends only to itself and is never scored.
            for t in at..<T {
                positions[b * T + t] = Int32(t - at)
                segments[b * T + t] = Int32(t)
            }
        }
        batch.batchSize = B; batch.seqLen = T
        batch.positions = positions; batch.segmentStarts = segments; batch.tokenKeys = keys
    }

    /// `array` = `count` copies of `value`, in the storage it already has when that is enough.
    private static func refill<E>(_ array: inout [E], _ value: E, _ count: Int) {
        array.removeAll(keepingCapacity: true)
        array.append(contentsOf: repeatElement(value, count: count))
    }
}
