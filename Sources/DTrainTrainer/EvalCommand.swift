import DTrainCore
import DTrainData
import DTrainIO
import Foundation

/// The next-token loss of a set of texts: per record and token-weighted overall.
public struct EvalResult {
    public struct Record {
        /// 0-based index of the record in the input.
        public let index: Int
        /// Positions scored: one fewer than the record's tokens (the first token has no context).
        public let tokens: Int
        /// Mean loss over those positions (natural log).
        public let loss: Double
    }
    public let records: [Record]
    /// Σ scored positions.
    public var tokens: Int { records.reduce(0) { $0 + $1.tokens } }
    /// Token-weighted mean loss.
    public let loss: Double
    public var perplexity: Double { exp(loss) }
    /// Records cut to the maximum sequence length.
    public let truncated: Int
}

/// `dtrain eval`: loss and perplexity of a model on `text` records.
public enum EvalCommand {
    /// Scores `sequences` (token ids) with `model`, packing several per row of `seqLen` tokens
    /// (attention and positions reset at each record), `rows` rows per forward pass.
    public static func evaluate(model: LlamaModel, sequences: [[Int32]], seqLen T: Int, rows B: Int) -> EvalResult {
        model.prepare(batchSize: B, seqLen: T)
        var sums = [Double](repeating: 0, count: sequences.count)
        var counts = [Int](repeating: 0, count: sequences.count)
        var tokens = [Int32](repeating: 0, count: B * T), labels = tokens, positions = tokens, segs = tokens
        var owner = [Int](repeating: -1, count: B * T)
        let rowLoss = UnsafeMutablePointer<Float>.allocate(capacity: B * T)
        defer { rowLoss.deallocate() }
        var next = 0
        while next < sequences.count {
            // Fill B rows greedily in input order.
            for i in 0..<(B * T) {
                tokens[i] = 0; labels[i] = TokenBatch.ignoreIndex; positions[i] = Int32(i % T); segs[i] = Int32(i % T)
                owner[i] = -1
            }
            for b in 0..<B {
                var used = 0
                while next < sequences.count {
                    let seq = sequences[next]
                    if seq.count > T - used { if used == 0 { preconditionFailure("sequence longer than row") }; break }
                    for (j, id) in seq.enumerated() {
                        let i = b * T + used + j
                        tokens[i] = id
                        labels[i] = j == 0 ? TokenBatch.ignoreIndex : id
                        positions[i] = Int32(j)
                        segs[i] = Int32(used)
                        owner[i] = next
                    }
                    used += seq.count
                    next += 1
                }
            }
            let batch = TokenBatch(batchSize: B, seqLen: T, tokens: tokens, labels: labels,
                                   positions: positions, segmentStarts: segs)
            _ = model.evaluate(batch, rowLoss: rowLoss)
            // The model lists labelled positions in (b, t) order, scoring labels[t + 1].
            var k = 0
            for b in 0..<B {
                for t in 0..<(T - 1) where labels[b * T + t + 1] != TokenBatch.ignoreIndex {
                    let r = owner[b * T + t + 1]
                    sums[r] += Double(rowLoss[k])
                    counts[r] += 1
                    k += 1
                }
            }
        }
        let totalSum = sums.reduce(0, +), totalCount = counts.reduce(0, +)
        let records = (0..<sequences.count).map {
            EvalResult.Record(index: $0, tokens: counts[$0], loss: counts[$0] > 0 ? sums[$0] / Double(counts[$0]) : .nan)
        }
        return EvalResult(records: records, loss: totalCount > 0 ? totalSum / Double(totalCount) : .nan, truncated: 0)
    }

    public static func run(modelPath: String, dataPath: String, json: Bool, maxSeqLen: Int, threads: Int,
                           addSpecialTokens: Bool) throws {
        ComputeThreads.configure(threads)
        let texts = try JSONLReader(path: dataPath).texts()
        let loaded = try ModelLoader.load(path: modelPath)
        let model = LlamaModel(config: loaded.config, params: loaded.params)
        let limit = min(maxSeqLen, loaded.config.maxPositionEmbeddings)
        var truncated = 0
        let sequences: [[Int32]] = texts.map { rec in
            let ids = loaded.tokenizer.encode(rec.text, addSpecialTokens: addSpecialTokens)
            if ids.count > limit { truncated += 1; return Array(ids.prefix(limit)) }
            return ids
        }
        if truncated > 0 {
            printError("warning: \(truncated) of \(texts.count) records were longer than \(limit) tokens and were truncated (--max-seq-len)")
        }
        let T = max(2, min(limit, sequences.map(\.count).max() ?? 2))
        let start = now()
        let base = evaluate(model: model, sequences: sequences, seqLen: T, rows: 4)
        let result = EvalResult(records: base.records, loss: base.loss, truncated: truncated)
        let seconds = now() - start
        if json {
            let perRecord = result.records.map { ["index": $0.index, "tokens": $0.tokens, "loss": $0.loss] as [String: Any] }
            print(jsonLine(["records": result.records.count, "tokens": result.tokens, "loss": result.loss,
                            "perplexity": result.perplexity, "per_record": perRecord] as [String: Any]))
        } else {
            for r in result.records {
                print(String(format: "record %5d (line %d) | tokens %6d | loss %.4f", r.index, texts[r.index].line, r.tokens, r.loss))
            }
            print(String(format: "records %d | tokens %d | loss %.4f | perplexity %.3f | %.1f s (%.0f tok/s)",
                         result.records.count, result.tokens, result.loss, result.perplexity, seconds,
                         Double(result.tokens) / max(seconds, 1e-9)))
        }
    }
}
