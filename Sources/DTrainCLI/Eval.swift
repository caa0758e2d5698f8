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
            one PEFT wrote); --checkpoint applies a dtrain checkpoint (LoRA or full) trained from --model. \
            Under mpirun or srun the ranks share the records (each scores and answers a share) and rank 0 \
            prints the report, which is the one a single process prints.
            Exit status: 0 done; 1 an error (named on stderr).
            """)
    @OptionGroup var model: ModelOptions
    @Option(help: "JSONL file to score (repeatable).") var data: [String] = []
    @Option(help: "A PEFT adapter directory to apply (adapter_config.json + adapter_model.safetensors).") var adapter: String?
    @Option(help: "A dtrain checkpoint (.h5) whose trained weights to use; it must have been trained from --model.") var checkpoint: String?
    @OptionGroup var dataFlags: DataFlags
    @Option(help: "Maximum sequence length in tokens (data.max_seq_len; default \(DataSection().maxSeqLen)).") var maxSeqLen: Int?
    @Option(help: "Examples per forward pass.") var batch = 4
    @Flag(help: "Print one JSON object on stdout (records, tokens, loss, perplexity, the task metrics, per_record).") var json = false
    @Option(help: "Classify by log-likelihood among these labels (comma-separated); the gold label is each record's answer, trimmed.")
    var labels: String?
    @Flag(help: "Report the base model beside the tuned one (same data, same metrics).") var compareBase = false
    @Option(help: "Most tokens generated per answer for the task metrics (default: twice the longest reference's tokens plus 8, at most 512).")
    var maxNewTokens: Int?
    @Flag(help: "Report the loss only: generate no answers.") var lossOnly = false
    @Option(help: "Print the first N records' prompts, references and answers (the base model's too with --compare-base).")
    var show = 0
    @OptionGroup var threads: ThreadOptions

    func run() throws {
        let comm = World.make()
        try runReportingErrors(quiet: comm.rank != 0) {
            guard !data.isEmpty else { throw ValidationError("--data FILE.jsonl is required") }
            guard batch > 0 else { throw ValidationError("--batch \(batch): expected a positive number of examples") }
            guard adapter == nil || checkpoint == nil else {
                throw ValidationError("--adapter and --checkpoint: give one of them, an adapter directory or a checkpoint file")
            }
            if let maxNewTokens, maxNewTokens <= 0 { throw ValidationError("--max-new-tokens \(maxNewTokens): expected a positive number") }
            if let labels, parsedLabels(labels).count < 2 {
                throw ValidationError("--labels \(labels): expected at least two comma-separated labels")
            }
            try evaluate(comm)
        }
    }

    func parsedLabels(_ text: String) -> [String] {
        text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    }

    /// Loads the model, applies --adapter or --checkpoint, encodes the data as training does and
    /// prints the losses and task metrics (for the base model too with --compare-base) on rank 0.
    func evaluate(_ comm: Communicator) throws {
        var settings = try dataFlags.settings()
        settings.maxSeqLen = maxSeqLen
        ComputeThreads.configure(threads.resolved)
        let options = try settings.resolve()
        let assets = try ModelAssets.load(path: model.model)
        _ = try assets.requireConfig()  // a directory without config.json fails before the data is read
        let encoder = try makeDataEncoder(assets: assets, options: options)
        let positions = assets.config!.maxPositionEmbeddings
        let encoded = try DataLoader.load(paths: data, encoder: encoder, options: options, keepText: false,
                                          questionPromptLimit: lossOnly ? nil : positions - (maxNewTokens ?? 1))
        let questions = encoded.questions
        if encoded.questionsTooLong > 0 && comm.rank == 0 {
            printError("eval: \(encoded.questionsTooLong) records not answered: their prompts leave no room for an answer in the model's \(positions) positions")
        }
        let report = encoded.report
        if report.invalidCount + report.truncated + report.droppedTooLong + report.droppedNoLoss > 0 && comm.rank == 0 {
            printError("eval: \(report.invalidCount) invalid records skipped, \(report.truncated) truncated to \(options.maxSeqLen) tokens, "
                       + "\(report.droppedTooLong + report.droppedNoLoss) dropped (too long, or no token left that carries loss)")
        }
        let tuned = try TunedModel.load(assets: assets, adapter: adapter, checkpoint: checkpoint)
        let newTokens = maxNewTokens ?? min(512, 8 + 2 * (questions.compactMap(\.answer).map { assets.tokenizer.encode($0).count }.max() ?? 0))
        var reports = [try score(tuned.model, weights: tuned.weights, encoded: encoded, encoder: encoder, questions: questions,
                                 options: options, newTokens: newTokens, stopTokens: assets.stopTokenIDs, comm: comm)]
        if compareBase {
            let base = try TunedModel.load(assets: assets, adapter: nil, checkpoint: nil)
            reports.append(try score(base.model, weights: base.weights, encoded: encoded, encoder: encoder, questions: questions,
                                     options: options, newTokens: newTokens, stopTokens: assets.stopTokenIDs, comm: comm))
        }
        guard comm.rank == 0 else { return }
        if json {
            var top = reports[0].json
            top["invalid"] = report.invalidCount; top["truncated"] = report.truncated
            top["dropped"] = report.droppedTooLong + report.droppedNoLoss
            if compareBase { top["base"] = reports[1].json }
            print(jsonLine(top))
            return
        }
        for r in reports { r.printText() }
        printAnswers(questions, tuned: reports[0].tasks, base: compareBase ? reports[1].tasks : nil, tokenizer: assets.tokenizer)
        if compareBase {
            let keys = ["loss", "perplexity", "exact_match", "token_f1", "rouge_l", "bleu", "accuracy", "macro_f1"]
            print("\n" + "metric".padding(toLength: 12, withPad: " ", startingAt: 0) + "      base     tuned")
            for key in keys {
                guard let t = reports[0].json[key] as? Double, let b = reports[1].json[key] as? Double else { continue }
                print(key.padding(toLength: 12, withPad: " ", startingAt: 0) + String(format: " %9.4f %9.4f", b, t))
            }
        }
    }

    /// The first `show` scored records: prompt, reference, and each model's answer.
    func printAnswers(_ questions: [Question], tuned: TaskScores, base: TaskScores?, tokenizer: BPETokenizer) {
        for (i, answer) in tuned.answers.prefix(show).enumerated() {
            let prompt = tokenizer.decode(questions[answer.index].prompt, skipSpecialTokens: true)
            print("\n[\(answer.location)] \(prompt.count > 300 ? "..." + prompt.suffix(300) : prompt)")
            print("  reference: \(answer.reference)")
            if let base, i < base.answers.count { print("  base:      \(base.answers[i].prediction)") }
            print("  tuned:     \(answer.prediction)")
        }
    }

    /// One model's loss, task metrics and per-record results.
    struct ModelReport {
        let weights: String
        let loss: EvalResult
        let tasks: TaskScores
        let seconds: Double
        let tokens: Int

        var json: [String: Any] {
            let l = loss
            let perRecord = l.records.map { r -> [String: Any] in
                // JSON has no NaN: a record with no token that carries loss has a null loss.
                var o: [String: Any] = ["index": r.index, "tokens": r.tokens, "loss": r.tokens > 0 ? r.loss : NSNull()]
                if let loc = r.location { o["file"] = loc.file; o["line"] = loc.line }
                return o
            }
            var o: [String: Any] = ["records": l.records.count, "tokens": l.tokens, "loss": l.tokens > 0 ? l.loss : NSNull(),
                                    "perplexity": l.tokens > 0 ? l.perplexity : NSNull(), "per_record": perRecord, "weights": weights]
            o.merge(tasks.json) { a, _ in a }
            if !tasks.answers.isEmpty {
                o["answers"] = tasks.answers.map { ["index": $0.index, "file": $0.location.file, "line": $0.location.line,
                                                    "prediction": $0.prediction, "reference": $0.reference] as [String: Any] }
            }
            return o
        }

        func printText() {
            print("eval: with \(weights)")
            for r in loss.records {
                let place = r.location.map { "\($0.file):\($0.line)" } ?? "-"
                print(String(format: "record %5d (%@) | tokens %6d | loss %.4f", r.index, place, r.tokens, r.loss))
            }
            print(String(format: "records %d | tokens %d | loss %.4f | perplexity %.3f | %.1f s (%.0f tok/s)",
                         loss.records.count, loss.tokens, loss.loss, loss.perplexity, seconds, Double(tokens) / max(seconds, 1e-9)))
            let metrics = tasks.json.filter { $0.value is Double }.sorted { $0.key < $1.key }
            if !metrics.isEmpty {
                print(metrics.map { String(format: "%@ %.2f", $0.key, $0.value as! Double) }.joined(separator: " | "))
            }
            if let confusion = tasks.confusion {
                print("confusion (gold -> predicted): " + confusion.keys.sorted().map { g in
                    "\(g): " + confusion[g]!.keys.sorted().map { "\($0) \(confusion[g]![$0]!)" }.joined(separator: ", ")
                }.joined(separator: "; "))
            }
        }
    }

    func score(_ llama: LlamaModel, weights: String, encoded: EncodedData, encoder: ExampleEncoder, questions: [Question],
               options: DataOptions, newTokens: Int, stopTokens: [Int32], comm: Communicator) throws -> ModelReport {
        let T = max(2, min(options.maxSeqLen, encoded.examples.map(\.ids.count).max() ?? 2))
        let start = now()
        if let labels, !lossOnly {
            // The candidates' passes give the records' losses too.
            let (tasks, result) = try TaskEvaluation.classified(model: llama, encoder: encoder, questions: questions, labels: parsedLabels(labels),
                                                                data: encoded, comm: comm)
            return ModelReport(weights: weights, loss: result!, tasks: tasks, seconds: now() - start, tokens: encoded.report.tokens)
        }
        let result = LossEvaluation.evaluate(model: llama, data: encoded, seqLen: T, perPass: batch, comm: comm)
        var tasks = TaskScores()
        if !questions.isEmpty {
            tasks = try TaskEvaluation.generated(model: llama, tokenizer: encoder.tokenizer, questions: questions,
                                                 stopTokens: stopTokens, maxNewTokens: newTokens, batch: max(batch, 8), comm: comm)
        }
        return ModelReport(weights: weights, loss: result, tasks: tasks, seconds: now() - start, tokens: encoded.report.tokens)
    }
}
