import ArgumentParser
import DTrainCore
import DTrainData
import DTrainDistributed
import DTrainIO
import DTrainTrainer
import Foundation

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Benchmarks.", subcommands: [Step.self, Generate.self, Checkpoint.self, AllReduce.self])

    struct AllReduce: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "allreduce",
            abstract: "Time blocking all-reduces across this job's ranks (run it under mpirun) and fit the links.",
            discussion: """
                Prints each size's fastest all-reduce, the fit t(n) = fixed + n / rate, its reading as a ring \
                (per-message latency, link bandwidth), the bucket size training picks from it, and the ring's cost \
                of each --payload-mb at other rank counts on the same links. launch/bench-scaling.sh --hosts runs it \
                on the namespace cluster.
                """)
        @Option(help: "Bytes per rank to time (repeatable; default 8 bytes, then 4 KiB to 16 MiB in steps of 4x).") var bytes: [Int] = []
        @Option(help: "Rounds per size; the fastest counts.") var repeats = 5
        @Option(help: "Gradient payloads (MB per rank) to model at other rank counts (repeatable).") var payloadMb: [Double] = []
        @Option(help: "Rank counts to model.") var modelRanks: [Int] = [8, 64]
        @Flag(help: "Print one JSON object on stdout (rank 0).") var json = false

        func run() throws {
            let comm = World.make()
            let sizes = bytes.isEmpty ? [8] + (0..<7).map { 4096 << (2 * $0) } : bytes
            guard sizes.allSatisfy({ $0 >= 4 }) else { throw ValidationError("--bytes: expected sizes of at least 4 bytes") }
            let fit = LinkProbe.measure(comm, sizes: sizes, repeats: repeats)
            guard comm.rank == 0 else { return }
            let payloads = payloadMb.map { $0 * 1e6 }
            let predictions = payloads.map { bytes in modelRanks.map { ["ranks": $0, "seconds": fit.ringSeconds(bytes: bytes, ranks: $0)] as [String: Any] } }
            if json {
                print(jsonLine(["ranks": comm.worldSize, "samples": fit.samples.map { ["bytes": Int($0[0]), "seconds": $0[1]] },
                                "fixed_s": fit.fixedSeconds, "s_per_byte": fit.secondsPerByte, "latency_s": fit.latency,
                                "bandwidth_bytes_per_s": fit.bandwidth,
                                "bucket_bytes": payloads.map { fit.bucketFloats(total: Int($0 / 4)) * 4 },
                                "payload_bytes": payloads, "predicted": predictions]))
                return
            }
            print("all-reduce over \(comm.worldSize) ranks (fastest of \(repeats)):")
            for s in fit.samples {
                print(String(format: "  %10.0f bytes: %9.1f us  (%.3f GB/s of buffer)", s[0], s[1] * 1e6, s[0] / s[1] / 1e9))
            }
            print(String(format: "fit: %.1f us + bytes / %.3f GB/s; as a ring: latency %.1f us per message, link bandwidth %.3f GB/s",
                         fit.fixedSeconds * 1e6, 1 / max(fit.secondsPerByte, 1e-15) / 1e9, fit.latency * 1e6, fit.bandwidth / 1e9))
            for (i, bytes) in payloads.enumerated() {
                let floats = fit.bucketFloats(total: Int(bytes / 4))
                print(String(format: "payload %.2f MB: buckets of %.2f MB; ring all-reduce ", bytes / 1e6, Double(floats * 4) / 1e6)
                      + predictions[i].map { String(format: "%d ranks %.1f ms", $0["ranks"] as! Int, ($0["seconds"] as! Double) * 1e3) }.joined(separator: ", "))
            }
        }
    }

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

