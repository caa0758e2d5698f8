import ArgumentParser
import DTrainCore
import DTrainData
import DTrainDistributed
import DTrainIO
import DTrainTrainer
import Foundation

struct Eval: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Loss and perplexity of a model on JSONL data, per record and overall, as training's validation computes them.",
        discussion: """
            Records of any format (text, prompt/completion, chat, instruction; .jsonl or .jsonl.gz) go through \
            the training data pipeline: the same template, loss masks and length policy as `train`. With \
            --config RUN.yaml (the run's data: section) on the run's validation file, the loss printed is the \
            run's validation loss. --adapter applies a PEFT adapter directory (a LoRA run's final/ or best/, or \
            one PEFT wrote); --checkpoint applies a dtrain checkpoint (LoRA or full) trained from --model.
            Exit status: 0 done; 1 an error (named on stderr).
            """)
    @OptionGroup var model: ModelOptions
    @Option(help: "JSONL file to score (repeatable).") var data: [String] = []
    @Option(help: "A PEFT adapter directory to apply (adapter_config.json + adapter_model.safetensors).") var adapter: String?
    @Option(help: "A dtrain checkpoint (.h5) whose trained weights to use; it must have been trained from --model.") var checkpoint: String?
    @OptionGroup var dataFlags: DataFlags
    @Option(help: "Maximum sequence length in tokens (data.max_seq_len; default \(DataSection().maxSeqLen)).") var maxSeqLen: Int?
    @Option(help: "Examples per forward pass.") var batch = 4
    @Flag(help: "Print one JSON object on stdout (records, tokens, loss, perplexity, per_record).") var json = false
    @OptionGroup var threads: ThreadOptions

    func run() throws {
        try runReportingErrors {
            guard !data.isEmpty else { throw ValidationError("--data FILE.jsonl is required") }
            guard batch > 0 else { throw ValidationError("--batch \(batch): expected a positive number of examples") }
            guard adapter == nil || checkpoint == nil else {
                throw ValidationError("--adapter and --checkpoint: give one of them, an adapter directory or a checkpoint file")
            }
            try evaluate()
        }
    }

    /// Loads the model, applies --adapter or --checkpoint, encodes the data as training does and
    /// prints the losses.
    func evaluate() throws {
        var settings = try dataFlags.settings()
        settings.maxSeqLen = maxSeqLen
        ComputeThreads.configure(threads.resolved)
        let options = try settings.resolve()
        let assets = try ModelAssets.load(path: model.model)
        _ = try assets.requireConfig()  // a directory without config.json fails before the data is read
        let encoder = try makeDataEncoder(assets: assets, options: options)
        let encoded = try DataLoader.load(paths: data, encoder: encoder, options: options, keepText: false)
        let tuned = try TunedModel.load(assets: assets, adapter: adapter, checkpoint: checkpoint)
        let llama = tuned.model, weights = tuned.weights
        let report = encoded.report
        if report.invalidCount + report.truncated + report.droppedTooLong + report.droppedNoLoss > 0 {
            printError("eval: \(report.invalidCount) invalid records skipped, \(report.truncated) truncated to \(options.maxSeqLen) tokens, "
                       + "\(report.droppedTooLong + report.droppedNoLoss) dropped (too long, or no token left that carries loss)")
        }
        let T = max(2, min(options.maxSeqLen, encoded.examples.map(\.ids.count).max() ?? 2))
        let start = now()
        let result = LossEvaluation.evaluate(model: llama, data: encoded, seqLen: T, perPass: batch)
        let seconds = now() - start
        if json {
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
            print("eval: \(model.model) with \(weights)")
            for r in result.records {
                let place = r.location.map { "\($0.file):\($0.line)" } ?? "-"
                print(String(format: "record %5d (%@) | tokens %6d | loss %.4f", r.index, place, r.tokens, r.loss))
            }
            print(String(format: "records %d | tokens %d | loss %.4f | perplexity %.3f | %.1f s (%.0f tok/s)",
                         result.records.count, result.tokens, result.loss, result.perplexity, seconds,
                         Double(encoded.report.tokens) / max(seconds, 1e-9)))
        }
    }
}
