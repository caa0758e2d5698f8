import ArgumentParser
import DTrainCore
import DTrainData
import DTrainDistributed
import DTrainIO
import DTrainTrainer
import Foundation

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Benchmarks.", subcommands: [Step.self, Generate.self, Checkpoint.self])

    struct Checkpoint: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write and read a checkpoint of a model's full training state (weights + AdamW moments); report GB/s.")
        @OptionGroup var model: ModelOptions
        @Option(help: "Directory to write into (the disk being measured).") var dir = "runs/bench-checkpoint"
        @Option(help: "Write/read rounds.") var repeats = 3
        @Flag(help: "Print one JSON object on stdout.") var json = false

        func run() throws {
            try runReportingErrors {
                let r = try CheckpointBenchmark.measure(modelPath: model.model, directory: dir, repeats: repeats, progress: { printError($0) })
                CheckpointBenchmark.report(r, json: json)
            }
        }
    }

    struct Generate: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Time KV-cached generation: prompt tokens/s and generated tokens/s at a batch size.",
            discussion: "bench/compare-llamacpp.sh runs it beside llama.cpp on the same model (F32 and Q8_0 GGUF).")
        @OptionGroup var model: ModelOptions
        @Option(help: "Sequences generated at once.") var batch = 1
        @Option(help: "Prompt tokens per sequence.") var promptTokens = 128
        @Option(help: "Tokens generated per sequence.") var newTokens = 64
        @Option(help: "Rounds; the best is reported.") var repeats = 3
        @Flag(help: "Print one JSON object on stdout.") var json = false
        @OptionGroup var threads: ThreadOptions

        func validate() throws {
            guard batch > 0, promptTokens > 0, newTokens > 0, repeats > 0 else {
                throw ValidationError("--batch, --prompt-tokens, --new-tokens and --repeats take positive numbers")
            }
        }

        func run() throws {
            try runReportingErrors {
                let r = try GenerateBenchmark.measure(modelPath: model.model, batch: batch, promptTokens: promptTokens, newTokens: newTokens,
                                                      threads: threads.resolved, repeats: repeats, progress: { printError($0) })
                print(json ? jsonLine(r.json) : r.line)
            }
        }
    }

    struct Step: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Time training steps (forward + backward + AdamW) against this machine's sgemm peak.")
        enum Method: String, ExpressibleByArgument { case full, lora }
        @OptionGroup var model: ModelOptions
        @Option(help: "full or lora.") var method: Method = .lora
        @Option(help: "Tokens per row.") var seqLen = 256
        @Option(help: "Rows per step.") var batch = 4
        @Option(help: "LoRA rank (adapters on all seven projections; default: the run config's lora.r).") var loraRank: Int?
        @Option(help: "LoRA dropout (default: the run config's lora.dropout).") var loraDropout: Float?
        @Option(help: "Timed steps.") var steps = 3
        @Option(help: "Untimed warm-up steps.") var warmup = 1
        @Flag(help: "Recompute layer activations in backward (gradient checkpointing).") var recompute = false
        @Flag(help: "Print one JSON object on stdout.") var json = false
        @OptionGroup var threads: ThreadOptions

        func run() throws {
            try runReportingErrors {
                var settings = BenchCommand.Settings()
                if let loraRank { settings.lora.r = loraRank }
                if let loraDropout {
                    guard (0..<1).contains(loraDropout) else { throw ValidationError("--lora-dropout \(loraDropout): expected a probability in [0, 1)") }
                    settings.lora.dropout = loraDropout
                }
                if let loraRank, loraRank < 1 { throw ValidationError("--lora-rank \(loraRank): expected a positive rank") }
                let r = try BenchCommand.measure(modelPath: model.model, full: method == .full, settings: settings,
                                                 batch: batch, seqLen: seqLen, threads: threads.resolved, steps: steps,
                                                 warmup: warmup, recompute: recompute, progress: { printError($0) })
                BenchCommand.report(r, json: json)
            }
        }
    }
}

