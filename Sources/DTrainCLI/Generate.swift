import ArgumentParser
import DTrainCore
import DTrainData
import DTrainIO
import DTrainTrainer
import Foundation

/// Weights to apply on top of --model, shared by generate, chat and export.
struct TunedWeightOptions: ParsableArguments {
    @Option(help: "A PEFT adapter directory to apply (a LoRA run's final/ or best/, or one PEFT wrote).") var adapter: String?
    @Option(help: "A dtrain checkpoint (.h5) whose trained weights to use; it must have been trained from --model.") var checkpoint: String?
    @Flag(help: "Add a LoRA adapter into the base weights at load (faster per token) instead of running it beside them.") var merge = false

    func validate() throws {
        guard adapter == nil || checkpoint == nil else {
            throw ValidationError("--adapter and --checkpoint: give one of them, an adapter directory or a checkpoint file")
        }
    }
}

/// Decoding settings shared by generate and chat.
struct DecodingOptions: ParsableArguments {
    @Option(help: "Most tokens generated per answer.") var maxNewTokens = 256
    @Option(help: "Sampling temperature; 0 is greedy decoding.") var temperature: Float = 0
    @Option(help: "Sample among the K most likely tokens only (0: all).") var topK = 0
    @Option(help: "Sample among the most likely tokens whose probabilities sum to P (1: all).") var topP: Float = 1
    @Option(help: "Divide a seen token's positive logit by R, multiply a negative one (1: none).") var repetitionPenalty: Float = 1
    @Option(help: "Seed of the sampling draws (an answer depends on the seed and its index only).") var seed: UInt64 = 0
    @Option(help: "Stop an answer before this text (repeatable); EOS and the chat template's end of turn always stop it.") var stop: [String] = []

    func validate() throws {
        guard maxNewTokens >= 0 else { throw ValidationError("--max-new-tokens \(maxNewTokens): expected 0 or more") }
        guard temperature.isFinite && temperature >= 0 else { throw ValidationError("--temperature \(temperature): expected 0 (greedy) or a positive number") }
        guard topK >= 0 else { throw ValidationError("--top-k \(topK): expected 0 (off) or a positive number") }
        guard topP > 0 && topP <= 1 else { throw ValidationError("--top-p \(topP): expected a number in (0, 1]") }
        guard repetitionPenalty.isFinite && repetitionPenalty > 0 else {
            throw ValidationError("--repetition-penalty \(repetitionPenalty): expected a positive number (1: none)")
        }
        guard !stop.contains("") else { throw ValidationError("--stop: expected non-empty text") }
    }

    func options(assets: ModelAssets) -> GenerationOptions {
        GenerationOptions(maxNewTokens: maxNewTokens,
                          sampling: SamplingSettings(temperature: temperature, topK: topK, topP: topP,
                                                     repetitionPenalty: repetitionPenalty, seed: seed),
                          stopTokens: Set(assets.stopTokenIDs), stopStrings: stop)
    }
}

struct Generate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Answer prompts with a model (and a fine-tune's adapter or checkpoint), KV-cached.",
        discussion: """
            --prompt TEXT is tokenized as it is (special-token text such as <|im_start|> is read as that token; BOS \
            added as the model's tokenizer says). --data FILE.jsonl answers each record's prompt as training renders \
            it: a prompt/completion's prompt, an instruction, a chat up to its last assistant message (with the \
            template's generation prompt); a text record is continued. Answers stop at EOS, the chat template's end \
            of turn, a --stop string or --max-new-tokens. Temperature 0 (the default) is greedy.
            --json prints one line per answer: {"index", "text", "ids", "tokens_per_s", "finish", "prompt_tokens"} \
            (and "file", "line", "reference" with --data).
            Exit status: 0 done; 1 an error (named on stderr); 2 a usage error.
            """)
    @OptionGroup var model: ModelOptions
    @OptionGroup var tuned: TunedWeightOptions
    @Option(help: "Text to continue (repeatable).") var prompt: [String] = []
    @Option(help: "JSONL file whose records' prompts to answer (repeatable).") var data: [String] = []
    @OptionGroup var decoding: DecodingOptions
    @Option(help: "Prompts answered at once, batched in each forward pass.") var batch = 8
    @Flag(help: "Print one JSON object per answer on stdout.") var json = false
    @OptionGroup var dataFlags: DataFlags
    @OptionGroup var threads: ThreadOptions

    func validate() throws {
        guard prompt.isEmpty != data.isEmpty else { throw ValidationError("give --prompt TEXT or --data FILE.jsonl (one of them)") }
        guard batch > 0 else { throw ValidationError("--batch \(batch): expected a positive number of prompts") }
    }

    func run() throws {
        try runReportingErrors {
            ComputeThreads.configure(threads.resolved)
            let tuned = try TunedModel.load(modelPath: model.model, adapter: self.tuned.adapter,
                                            checkpoint: self.tuned.checkpoint, merge: self.tuned.merge)
            let assets = tuned.assets, tokenizer = assets.tokenizer
            let maxPositions = tuned.model.config.maxPositionEmbeddings
            var questions: [Question]
            if data.isEmpty {
                questions = prompt.enumerated().map { i, text in
                    Question(location: RecordLocation(file: "--prompt", line: i + 1), format: .text,
                             prompt: tokenizer.encode(text, addSpecialTokens: true, parseSpecialTokens: true), answer: nil, record: .text(text))
                }
                if let i = questions.firstIndex(where: { $0.prompt.isEmpty }) {
                    throw ValidationError("--prompt \(i + 1) is empty; expected text to continue")
                }
                if let q = questions.first(where: { $0.prompt.count >= maxPositions }) {
                    throw ValidationError("--prompt \(q.location.line) has \(q.prompt.count) tokens; the model holds \(maxPositions) positions")
                }
            } else {
                let options = try dataFlags.settings().resolve()
                let encoder = try makeDataEncoder(assets: assets, options: options)
                let loaded = try QuestionLoader.load(paths: data, encoder: encoder, options: options, maxPromptTokens: maxPositions - 1)
                questions = loaded.questions
                if loaded.report.invalidCount > 0 {
                    printError("generate: \(loaded.report.invalidCount) invalid records skipped")
                }
                guard !questions.isEmpty else { throw ValidationError("--data: no record to answer") }
            }
            let longest = questions.map(\.prompt.count).max()!
            let context = min(maxPositions, longest + decoding.maxNewTokens)
            let generator = TextGenerator(model: tuned.model, tokenizer: tokenizer, rows: min(batch, questions.count), context: context)
            if !json { printError("generate: \(model.model) with \(tuned.weights); \(questions.count) prompt(s), batch \(generator.decoder.rows)") }
            let streaming = !json && questions.count == 1
            let start = now()
            let answers = generator.generate(questions.map(\.prompt), options: decoding.options(assets: assets)) { _, piece in
                if streaming { FileHandle.standardOutput.write(Data(piece.utf8)) }
            }
            let seconds = now() - start
            for a in answers {
                let q = questions[a.index]
                if json {
                    var o: [String: Any] = ["index": a.index, "text": a.text, "ids": a.ids.map(Int.init),
                                            "tokens_per_s": a.tokensPerSecond, "finish": a.finish.rawValue,
                                            "prompt_tokens": a.promptTokens]
                    if !data.isEmpty {
                        o["file"] = q.location.file; o["line"] = q.location.line
                        o["reference"] = q.answer ?? NSNull()
                    }
                    print(jsonLine(o))
                } else if streaming {
                    print("")
                } else {
                    print("[\(a.index)] \(q.location)")
                    print(a.text)
                    print("")
                }
            }
            if !json {
                let generated = answers.reduce(0) { $0 + $1.ids.count }
                printError(String(format: "generate: %d tokens in %.2f s (%.1f tok/s)", generated, seconds, Double(generated) / max(seconds, 1e-9)))
            }
        }
    }
}
