import DTrainCore
import DTrainData
import DTrainDistributed
import DTrainIO
import Foundation

/// The loss of a model on data files, computed as training's validation computes it: per
/// record and token-weighted overall, over the tokens that carry loss.
public struct EvalResult {
    public struct Record {
        /// 0-based index of the example among those scored.
        public let index: Int
        /// Where the record came from.
        public let location: RecordLocation?
        /// Tokens scored: those that carry loss (the first token never does).
        public let tokens: Int
        /// Mean loss over those tokens (natural log); NaN when none carries loss.
        public let loss: Double
    }
    public let records: [Record]
    /// Σ scored tokens.
    public var tokens: Int { records.reduce(0) { $0 + $1.tokens } }
    /// Token-weighted mean loss.
    public let loss: Double
    public var perplexity: Double { exp(loss) }
    /// What the data pipeline did with the records (truncated, dropped, invalid).
    public let report: DataReport

    /// From each example's summed loss (natural log) over its `counts` scored tokens.
    public init(sums: [Double], counts: [Int], data: EncodedData) {
        let total = counts.reduce(0, +)
        records = data.examples.indices.map {
            Record(index: $0, location: data.locations[$0], tokens: counts[$0], loss: counts[$0] > 0 ? sums[$0] / Double(counts[$0]) : .nan)
        }
        loss = total > 0 ? sums.reduce(0, +) / Double(total) : .nan
        report = data.report
    }
}

/// The loss of a model (with an adapter or checkpoint applied) on encoded data, the way training's
/// validation computes it: the same encoder, loss masks, length policy and packing, so that on a
/// run's validation file it gives that run's validation loss.
public enum LossEvaluation {
    /// Scores `examples`, `perPass` at a time packed into rows of at most `seqLen` tokens
    /// (attention and positions reset at each example). Under several ranks, each rank scores
    /// every `worldSize`-th pass of `perPass` examples, packed as one rank packs them, and the
    /// per-record sums are all-reduced: every rank returns what one rank alone would.
    public static func evaluate(model: LlamaModel, data: EncodedData, seqLen T: Int, perPass: Int,
                                comm: Communicator = SingleProcessCommunicator()) -> EvalResult {
        let examples = data.examples
        let builder = BatchBuilder(maxSeqLen: T, packing: true)
        let sequences = examples.map { SequenceExample(ids: $0.ids, lossMask: $0.lossMask) }
        model.prepare(batchSize: perPass, seqLen: T)
        var sums = [Double](repeating: 0, count: examples.count)
        var counts = [Int](repeating: 0, count: examples.count)
        let rowLoss = UnsafeMutablePointer<Float>.allocate(capacity: perPass * T)
        defer { rowLoss.deallocate() }
        var batch = TokenBatch.empty
        for start in stride(from: comm.rank * perPass, to: sequences.count, by: perPass * comm.worldSize) {
            let chunk = Array(start..<min(sequences.count, start + perPass))
            builder.fill(&batch, for: chunk, from: sequences)
            _ = model.evaluate(batch, rowLoss: rowLoss)
            // The model lists the scored positions in (row, position) order; rows hold their
            // examples in the order `rows(for:)` placed them.
            var k = 0
            for row in builder.rows(for: chunk, length: { sequences[$0].ids.count }) {
                for e in row {
                    let mask = sequences[e].lossMask
                    for j in 1..<max(1, mask.count) where mask[j] != 0 {
                        sums[e] += Double(rowLoss[k])
                        counts[e] += 1
                        k += 1
                    }
                }
            }
        }
        // Each record was scored on one rank: adding the others' zeros changes no bit.
        comm.allReduceSum(&sums)
        comm.allReduceSum(&counts)
        return EvalResult(sums: sums, counts: counts, data: data)
    }

    /// Applies trained weights to `model` (the base loaded from `modelPath`, whose weights hash to
    /// `baseHash`): a PEFT adapter directory, or a dtrain checkpoint (LoRA or full) that must
    /// have been trained from that base. Returns what was applied, for the report.
    public static func applyWeights(adapter: String?, checkpoint: String?, to model: LlamaModel, modelPath: String,
                                    baseHash: UInt64) throws -> String {
        if adapter != nil && checkpoint != nil {
            throw DataConfigError(path: "--adapter/--checkpoint", message: "give one of them: an adapter directory or a checkpoint file")
        }
        if let dir = adapter {
            let adapter = try PEFTAdapter(directory: dir)
            model.enableTraining(.lora(adapter.config), seed: 0)
            try adapter.load(into: model.lora!)
            return "adapter \(dir) (r \(adapter.config.rank), alpha \(adapter.config.alpha), \(adapter.config.targets.count) projections)"
        }
        guard let path = checkpoint else { return "base weights" }
        let reader = try CheckpointReader(path: path)
        let run: RunConfig
        do {
            run = try ConfigLoader.decode(RunConfig.self, yaml: reader.config, file: path + " (its stored config)", overrides: [])
        } catch {
            throw CheckpointError(path: path, message: "its stored run config cannot be read: \(error)")
        }
        let hash = CheckpointState.modelIdentity(baseHash)
        guard reader.manifest.modelHash == hash else {
            throw CheckpointError(path: path, message: "it was trained from another base model (\(reader.manifest.model), "
                                  + "\(reader.manifest.modelHash)); --model \(modelPath) is \(hash). HINT: pass the run's model")
        }
        switch run.method {
        case .lora:
            model.enableTraining(.lora(run.lora.coreConfig), seed: 0)
            let lora = model.lora!
            try reader.load(expected: lora.specs, weights: lora.weights, adamM: nil, adamV: nil)
        case .full:
            try reader.load(expected: model.layout.specs, weights: model.params, adamM: nil, adamV: nil)
        }
        return "checkpoint \(path) (\(run.method.rawValue), step \(reader.progress.step))"
    }
}
