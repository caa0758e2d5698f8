import ArgumentParser
import DTrainCore
import DTrainDistributed
import DTrainTrainer
import Foundation

/// Options every command that loads a model shares.
struct ModelOptions: ParsableArguments {
    @Option(help: "A .gguf file or a Hugging Face model directory (config.json + model.safetensors).")
    var model: String
}

/// Compute threads; defaults to every core this process may use.
struct ThreadOptions: ParsableArguments {
    @Option(help: "BLAS and element-wise threads (default: all available cores).")
    var threads: Int?
    var resolved: Int { threads ?? ComputeThreads.available }
}

/// Turns a thrown error into one clear line on stderr and exit status 1.
func runReportingErrors(_ body: () throws -> Void) throws {
    do { try body() } catch let error as CustomStringConvertible {
        printError("error: \(error.description)")
        throw ExitCode(1)
    }
}

@main
struct DTrain: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dtrain",
        abstract: "Fine-tune Llama-family language models on CPU clusters.",
        subcommands: [Train.self, Inspect.self, DataCommand.self, Tokenize.self, Eval.self, Bench.self])
}

struct Tokenize: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Tokenize JSONL records with a `text` field; prints {\"ids\": [...], \"tokens\": N} per record.")
    @OptionGroup var model: ModelOptions
    @Flag(help: "Add BOS/EOS as the model's metadata says.") var addSpecialTokens = false
    @Argument(help: "JSONL file (default: standard input).") var file: String?

    func run() throws {
        try runReportingErrors {
            try TokenizeCommand.run(modelPath: model.model, input: file, addSpecialTokens: addSpecialTokens)
        }
    }
}

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
            var request = EvalRequest(modelPath: model.model, dataPaths: data, threads: threads.resolved)
            request.data = try dataFlags.settings()
            request.data.maxSeqLen = maxSeqLen
            request.adapter = adapter
            request.checkpoint = checkpoint
            request.examplesPerPass = batch
            request.json = json
            try EvalCommand.run(request)
        }
    }
}

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Benchmarks.", subcommands: [Step.self, Checkpoint.self])

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

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Fine-tune a model as a YAML run config says; run under mpirun/srun for data parallelism.",
        discussion: """
            Exit status: 0 done; 1 failed during training (naming the rank); 2 bad config, model, data or \
            checkpoint found before the first step (nothing trained); \
            75 stopped by SIGUSR1/SIGTERM after writing a checkpoint (run again with --resume auto). \
            SIGTERM sent to mpirun itself makes mpirun kill the ranks within 2 s and exit 1; rank 0 then \
            writes a rescue checkpoint of the last completed step, and --resume auto continues from it.
            """)
    @Option(help: "The run config (YAML); see cluster-configs/.") var config: String
    @Option(help: "Continue from a checkpoint: `auto` (the newest under <output_dir>/checkpoints that verifies; a fresh start if none) or a .h5 path.")
    var resume: String?
    @Option(name: .customLong("set"), help: "Override a config key: --set optim.lr=1e-4 (repeatable).") var overrides: [String] = []

    func run() throws {
        // Before anything slow: SIGUSR1's default action would kill a rank still loading.
        StopRequest.install()
        let comm = World.make()
        let runConfig: RunConfig
        do {
            runConfig = try RunConfig.load(path: config, overrides: overrides)
            try runConfig.validate(worldSize: comm.worldSize)
            try runConfig.checkFiles()
        } catch {
            // Every rank reads the same config and fails the same way; rank 0 speaks for all.
            if comm.rank == 0 { printError("error: \(error)") }
            throw ExitCode(2)
        }
        let summary: TrainSummary
        do {
            summary = try Trainer(config: runConfig, comm: comm, resume: resume.map(ResumeSource.init(argument:))).run()
        } catch let failure as SetupFailure {
            // A bad model, data file or checkpoint, found before the first step: every rank
            // agreed on it and leaves alike (MPI finalised at exit, so mpirun shows no abort).
            if comm.rank == 0 { printError("error: \(failure)") }
            throw ExitCode(2)
        } catch {
            if comm.worldSize > 1 { comm.abort(code: 1, message: "\(error)") }
            printError("error: \(error)")
            throw ExitCode(1)
        }
        // Every rank leaves the same way after the same checkpoint; mpirun passes the status on.
        if summary.stoppedBySignal != nil {
            StopRequest.restoreDefaults()
            throw ExitCode(stoppedForResumeExitCode)
        }
    }
}

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print a checkpoint's manifest, training state and trainable-parameter SHA-256, after verifying its checksums.")
    @Argument(help: "A checkpoint file (<output_dir>/checkpoints/step-*.h5).") var checkpoint: String
    @Flag(help: "Print one JSON object on stdout (keys include step, world_size, param_sha256).") var json = false
    @Flag(help: "Skip reading the tensors against their checksums (only the headers are read).") var noVerify = false

    func run() throws {
        try runReportingErrors {
            try InspectCommand.run(path: checkpoint, json: json, verify: !noVerify)
        }
    }
}
