import DTrainCore
import DTrainData
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
}

/// What `dtrain eval` scores, with which weights.
public struct EvalRequest {
    public var modelPath: String
    public var dataPaths: [String]
    /// Data options: defaults, a run config's `data:` section, flags.
    public var data = DataSettings()
    /// A PEFT adapter directory to apply (a LoRA run's final/ or best/, or one PEFT wrote).
    public var adapter: String?
    /// A dtrain checkpoint whose trained weights replace or adapt the model's.
    public var checkpoint: String?
    /// Examples per forward pass (packed into at most this many rows).
    public var examplesPerPass = 4
    public var threads: Int
    public var json = false

    public init(modelPath: String, dataPaths: [String], threads: Int) {
        self.modelPath = modelPath; self.dataPaths = dataPaths; self.threads = threads
    }
}

/// `dtrain eval`: the loss and perplexity of a model (with an adapter or checkpoint applied) on
/// data files of any format, through the training data pipeline: the same encoder, loss masks,
/// length policy and packing, so that on a run's validation file it prints that run's
/// validation loss.
public enum EvalCommand {
    /// Scores `examples`, `perPass` at a time packed into rows of at most `seqLen` tokens
    /// (attention and positions reset at each example).
    public static func evaluate(model: LlamaModel, data: EncodedData, seqLen T: Int, perPass: Int) -> EvalResult {
        let examples = data.examples
        let builder = BatchBuilder(maxSeqLen: T, packing: true)
        let sequences = examples.map { SequenceExample(ids: $0.ids, lossMask: $0.lossMask) }
        model.prepare(batchSize: perPass, seqLen: T)
        var sums = [Double](repeating: 0, count: examples.count)
        var counts = [Int](repeating: 0, count: examples.count)
        let rowLoss = UnsafeMutablePointer<Float>.allocate(capacity: perPass * T)
        defer { rowLoss.deallocate() }
        var batch = TokenBatch.empty
        for start in stride(from: 0, to: sequences.count, by: perPass) {
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
        let total = counts.reduce(0, +)
        let records = examples.indices.map {
            EvalResult.Record(index: $0, location: data.locations[$0], tokens: counts[$0],
                              loss: counts[$0] > 0 ? sums[$0] / Double(counts[$0]) : .nan)
        }
        return EvalResult(records: records, loss: total > 0 ? sums.reduce(0, +) / Double(total) : .nan, report: data.report)
    }

    /// Loads the model and the weights the request names, on top of an already loaded base.
    static func applyWeights(_ request: EvalRequest, to model: LlamaModel, baseHash: UInt64) throws -> String {
        if let dir = request.adapter {
            let adapter = try PEFTAdapter(directory: dir)
            model.enableTraining(.lora(adapter.config), seed: 0)
            try adapter.load(into: model.lora!)
            return "adapter \(dir) (r \(adapter.config.rank), alpha \(adapter.config.alpha), \(adapter.config.targets.count) projections)"
        }
        guard let path = request.checkpoint else { return "base weights" }
        let reader = try CheckpointReader(path: path)
        let run: RunConfig
        do {
            run = try ConfigLoader.decode(RunConfig.self, yaml: reader.config, file: path + " (its stored config)", overrides: [])
        } catch {
            throw CheckpointError(path: path, message: "its stored run config cannot be read: \(error)")
        }
        let hash = String(format: "fnv1a64:%016llx", baseHash)
        guard reader.manifest.modelHash == hash else {
            throw CheckpointError(path: path, message: "it was trained from another base model (\(reader.manifest.model), "
                                  + "\(reader.manifest.modelHash)); --model \(request.modelPath) is \(hash). HINT: pass the run's model")
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

    public static func run(_ request: EvalRequest) throws {
        if request.adapter != nil && request.checkpoint != nil {
            throw DataConfigError(path: "--adapter/--checkpoint", message: "give one of them: an adapter directory or a checkpoint file")
        }
        ComputeThreads.configure(request.threads)
        let options = try request.data.resolve()
        let assets = try ModelAssets.load(path: request.modelPath)
        let config = try assets.requireConfig()
        let encoder = try makeDataEncoder(assets: assets, options: options)
        let data = try DataLoader.load(paths: request.dataPaths, encoder: encoder, options: options, keepText: false)
        let params = try assets.loadWeights()
        let model = LlamaModel(config: config, params: params)
        let weights = try applyWeights(request, to: model, baseHash: Trainer.hash(params))
        let report = data.report
        if report.invalidCount + report.truncated + report.droppedTooLong + report.droppedNoLoss > 0 {
            printError("eval: \(report.invalidCount) invalid records skipped, \(report.truncated) truncated to \(options.maxSeqLen) tokens, "
                       + "\(report.droppedTooLong + report.droppedNoLoss) dropped (too long, or no token left that carries loss)")
        }
        let T = max(2, min(options.maxSeqLen, data.examples.map(\.ids.count).max() ?? 2))
        let start = now()
        let result = evaluate(model: model, data: data, seqLen: T, perPass: request.examplesPerPass)
        let seconds = now() - start
        if request.json {
            let perRecord = result.records.map { r -> [String: Any] in
                // JSON has no NaN: a record with no token that carries loss has a null loss.
                var o: [String: Any] = ["index": r.index, "tokens": r.tokens, "loss": r.tokens > 0 ? r.loss : NSNull()]
                if let l = r.location { o["file"] = l.file; o["line"] = l.line }
                return o
            }
            print(jsonLine(["records": result.records.count, "tokens": result.tokens, "loss": result.tokens > 0 ? result.loss : NSNull(),
                            "perplexity": result.tokens > 0 ? result.perplexity : NSNull(), "per_record": perRecord, "weights": weights,
                            "invalid": report.invalidCount, "truncated": report.truncated,
                            "dropped": report.droppedTooLong + report.droppedNoLoss] as [String: Any]))
        } else {
            print("eval: \(request.modelPath) with \(weights)")
            for r in result.records {
                let place = r.location.map { "\($0.file):\($0.line)" } ?? "-"
                print(String(format: "record %5d (%@) | tokens %6d | loss %.4f", r.index, place, r.tokens, r.loss))
            }
            print(String(format: "records %d | tokens %d | loss %.4f | perplexity %.3f | %.1f s (%.0f tok/s)",
                         result.records.count, result.tokens, result.loss, result.perplexity, seconds,
                         Double(data.report.tokens) / max(seconds, 1e-9)))
        }
    }
}
