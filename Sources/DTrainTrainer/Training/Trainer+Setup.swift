import DTrainCore
import DTrainData
import DTrainDistributed
import DTrainIO
import Foundation

/// A run as every rank holds it once set up: the model and its trainable view, the data and
/// its step plan, the optimizer, the gradient reducer, the checkpoints, and where training
/// stands (`progress`, restored from a checkpoint when resuming).
final class TrainingRun {
    let loaded: LoadedModel
    let data: TrainingData
    let model: LlamaModel
    let trainable: (weights: FloatBuffer, grads: FloatBuffer, specs: [ParameterSpec])
    let plan: StepPlan
    let totalSteps: Int
    let builder: BatchBuilder
    /// Overlaps the gradient all-reduce with backward (more than one rank).
    let reducer: GradientReducer?
    let optimizer: AdamWState
    let checkpoints: CheckpointState
    let outputDirectory: URL
    /// Whether `progress` came from a checkpoint.
    let resumed: Bool
    var progress: TrainingProgress
    var summary: TrainSummary
    /// One micro-batch's arrays, refilled in place for every micro-batch of the run.
    var microBatch = TokenBatch.empty
    /// The validation records as questions with their reference answers (every rank, with
    /// `eval.generate_every`), for the task metrics.
    var questions: [Question] = []

    // This session's clock (a resumed run continues the elapsed time of the sessions before).
    let elapsedBefore: Double
    private(set) var sessionStart = now()
    var timedSeconds = 0.0, timedTokens = 0.0, sessionSteps = 0

    init(loaded: LoadedModel, data: TrainingData, model: LlamaModel, plan: StepPlan, totalSteps: Int, builder: BatchBuilder,
         reducer: GradientReducer?, optimizer: AdamWState, checkpoints: CheckpointState, outputDirectory: URL,
         resumed: Bool, progress: TrainingProgress, summary: TrainSummary) {
        self.loaded = loaded; self.data = data; self.model = model; trainable = model.trainable!
        self.plan = plan; self.totalSteps = totalSteps; self.builder = builder; self.reducer = reducer
        self.optimizer = optimizer; self.checkpoints = checkpoints; self.outputDirectory = outputDirectory
        self.resumed = resumed; self.progress = progress; self.summary = summary
        elapsedBefore = progress.elapsedSeconds
    }

    /// Starts this session's clock (after the validation before training).
    func startSession() { sessionStart = now() }

    /// The state after `progress.step` steps, as a checkpoint records it.
    func boundaryProgress() -> TrainingProgress {
        var p = progress
        p.optimizerStep = optimizer.step
        p.tokensSeen = summary.tokens
        p.totalSteps = totalSteps
        p.elapsedSeconds = elapsedBefore + now() - sessionStart
        return p
    }
}

extension Trainer {
    /// Prints the run line and the effective config, loads the model and the data on every
    /// rank (each checks it holds what rank 0 holds), builds the step plan, the optimizer and
    /// the reducer, and resumes from a checkpoint when asked.
    func setUp() throws -> TrainingRun {
        let cfg = config
        let threads = Self.threadsPerRank(cfg)
        ComputeThreads.configure(threads)
        let outDir = URL(fileURLWithPath: cfg.outputDir)
        if isRoot {
            print("dtrain: \(comm.worldSize) rank(s) x \(threads) thread(s); \(MachineKernels.summary); effective config:")
            if let warning = MachineKernels.warning { printError("warning: \(warning)") }
            print(cfg.yaml())
        }
        // A checkpoint named by --resume is judged before the slow part.
        if case .path(let path)? = resume {
            try agreeOnSetup { if isRoot { try precheckResume(path) } }
        }

        // Model and data: every rank loads both (deterministically), then checks it holds what rank 0 holds.
        let t0 = now()
        let (loaded, data) = try agreeOnSetup {
            let loaded = try ModelLoader.load(path: cfg.model)
            let data = try TrainingDataLoader.load(config: cfg, model: loaded)
            guard !data.train.isEmpty else {
                throw ConfigError.invalid(key: "data.train", message: "no training examples remain (after the validation split and length policy)")
            }
            return (loaded, data)
        }
        let model = LlamaModel(config: loaded.config, params: loaded.params)
        model.enableTraining(cfg.method == .full ? .full : .lora(cfg.lora.coreConfig), seed: cfg.seed)
        model.prepare(batchSize: cfg.batch.micro, seqLen: cfg.data.maxSeqLen, recompute: cfg.recompute)
        let trainable = model.trainable!
        let baseHash = Self.hash(model.params)
        try agreeOnWeights(model, baseHash: baseHash)
        say(String(format: "loaded %@ (%d layers, %.1fM parameters, %.1fM trainable) and %d train / %d validation examples in %.1f s",
                   cfg.model, loaded.config.numLayers, Double(model.layout.count) / 1e6, Double(trainable.weights.count) / 1e6,
                   data.train.count, data.validation.count, now() - t0))
        if data.truncated + data.dropped + data.skipped > 0 {
            let kinds = data.skippedByKind.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
            say("data: \(data.truncated) truncated to \(cfg.data.maxSeqLen) tokens, \(data.dropped) dropped as too long, \(data.skipped) invalid records skipped"
                + (kinds.isEmpty ? "" : " (\(kinds))"))
        }

        let plan = StepPlan(lengths: data.train.map(\.ids.count), seed: cfg.seed, globalExamples: cfg.batch.globalExamples,
                            globalTokens: cfg.batch.globalTokens, worldSize: comm.worldSize, micro: cfg.batch.micro)
        let stepsPerEpoch = plan.stepsPerEpoch()
        let totalSteps = min(cfg.train.maxSteps ?? Int.max, cfg.train.epochs * stepsPerEpoch)
        let optimizer = AdamWState(count: trainable.weights.count)

        // Where training stands; restored from a checkpoint when resuming.
        var progress = TrainingProgress()
        progress.seed = cfg.seed
        progress.dataFingerprint = Self.fingerprint(data.train)
        progress.initialValLoss = .nan
        let checkpoints = CheckpointState(config: cfg, comm: comm, threads: threads, model: model, optimizer: optimizer,
                                          modelHash: baseHash) { [log] in log.say($0) }
        let resumed = try resume.map { try restore(from: $0, into: &progress, model: model, optimizer: optimizer, checkpoints: checkpoints) } ?? false
        let reducer = comm.worldSize > 1 ? try makeReducer(trainable.grads, model: model, progress: &progress) : nil
        // Nothing in the output directory changes until here, where a resume has been accepted:
        // the saved config describes the checkpoints beside it.
        try agreeOnSetup {
            guard isRoot else { return }
            try FileOperation.createDirectory(outDir.path, key: "output_dir")
            try AtomicFile.write(Data(cfg.yaml().utf8), to: outDir.appendingPathComponent("config.yaml").path)
        }
        say("training: \(totalSteps) steps (\(stepsPerEpoch) per epoch), \(cfg.batch.globalExamples.map { "\($0) examples" } ?? "\(cfg.batch.globalTokens!) tokens") per step, micro-batch \(cfg.batch.micro) per rank")
        if isRoot {
            for warning in Self.scheduleWarnings(cfg, totalSteps: totalSteps, fromStep: progress.step, hasValidation: !data.validation.isEmpty) {
                printError("warning: \(warning)")
            }
        }
        try log.open(directory: outDir, tensorboard: cfg.logging.tensorboard, resumedStep: resumed ? progress.step : nil)

        var summary = TrainSummary(totalSteps: totalSteps, outputDir: cfg.outputDir)
        summary.tokens = progress.tokensSeen
        if progress.initialValLoss.isFinite { summary.initialValLoss = progress.initialValLoss }
        if progress.bestStep >= 0 && !cfg.eval.metricIsTask { summary.bestValLoss = progress.bestMetric; summary.bestStep = progress.bestStep }
        // Task metrics: the ranks share the validation records' answers.
        var questions: [Question] = []
        if cfg.eval.generateEvery > 0, let files = cfg.data.validation {
            questions = try agreeOnSetup {
                let options = cfg.data.options
                let encoder = try makeDataEncoder(assets: loaded.assets, options: options)
                return try QuestionLoader.load(paths: files, encoder: encoder, options: options,
                                               maxPromptTokens: loaded.config.maxPositionEmbeddings - cfg.eval.maxNewTokens).questions
                    .filter { $0.answer != nil }
            }
        }
        let run = TrainingRun(loaded: loaded, data: data, model: model, plan: plan, totalSteps: totalSteps,
                           builder: BatchBuilder(maxSeqLen: cfg.data.maxSeqLen, packing: cfg.data.packing), reducer: reducer,
                           optimizer: optimizer, checkpoints: checkpoints, outputDirectory: outDir, resumed: resumed,
                           progress: progress, summary: summary)
        run.questions = questions
        return run
    }

    /// Settings that cannot act as written in a run of `totalSteps` steps (resumed after
    /// `fromStep`): said once, at start.
    static func scheduleWarnings(_ cfg: RunConfig, totalSteps: Int, fromStep: Int, hasValidation: Bool) -> [String] {
        var warnings: [String] = []
        if cfg.schedule.warmupSteps > totalSteps {
            warnings.append("schedule.warmup_steps (\(cfg.schedule.warmupSteps)) exceeds the run's \(totalSteps) steps: the learning rate never reaches optim.lr (\(cfg.optim.lr))")
        }
        if hasValidation && cfg.eval.everySteps > totalSteps {
            warnings.append("eval.every_steps (\(cfg.eval.everySteps)) exceeds the run's \(totalSteps) steps: validation runs only at the end")
        }
        let every = cfg.checkpoint.everySteps
        if every > 0 && (fromStep / every + 1) * every >= totalSteps && fromStep < totalSteps {
            warnings.append("checkpoint.every_steps (\(every)) never fires before the run ends at step \(totalSteps): only the final checkpoint is written"
                + (cfg.checkpoint.everyMinutes > 0 ? " (and those of checkpoint.every_minutes)" : ""))
        }
        return warnings
    }

    /// Every rank must start from the same weights: compare each rank's hash with rank 0's.
    func agreeOnWeights(_ model: LlamaModel, baseHash: UInt64) throws {
        var mine = baseHash
        if let lora = model.lora { mine ^= CounterRandom.mix(Self.hash(lora.weights)) }
        let lanes = Vectors.kernels.lanes
        var rootHash = [mine], rootLanes = [lanes]
        comm.broadcast(&rootHash, root: 0)
        comm.broadcast(&rootLanes, root: 0)
        // The vector width decides the order of some sums (the gradient norm that clipping
        // uses among them): ranks at different widths would drift apart by rounding.
        var mismatch = [rootHash[0] == mine ? 0 : comm.rank + 1, rootLanes[0] == lanes ? 0 : comm.rank + 1]
        comm.allReduceMax(&mismatch)
        if mismatch[1] > 0 {
            throw SetupFailure(message: "rank \(mismatch[1] - 1) runs its vector kernels at another width than rank 0 "
                + "(\(rootLanes[0]) float32 lanes there); set DTRAIN_VECTOR_BITS=256 for every rank of a job whose nodes' CPUs differ")
        }
        if mismatch[0] > 0 {
            throw SetupFailure(message: "\(ConfigError.invalid(key: "model", message: "rank \(mismatch[0] - 1) loaded different weights than rank 0 from \(config.model); every node must see the same file"))")
        }
    }

    /// Runs `body`, this rank's share of setting up (no collectives inside), and then has every
    /// rank agree on the outcome: when `body` failed on any rank, every rank throws the same
    /// `SetupFailure`, with the message of the lowest failing rank, instead of the ranks that
    /// succeeded waiting in their next collective for the ones that did not.
    func agreeOnSetup<T>(_ body: () throws -> T) throws -> T {
        var result: Result<T, Error>
        do { result = .success(try body()) } catch { result = .failure(error) }
        // The lowest failing rank r contributes worldSize - r, the largest value of any failing rank.
        var flag = [0]
        if case .failure = result { flag[0] = comm.worldSize - comm.rank }
        comm.allReduceMax(&flag)
        guard flag[0] > 0 else { return try result.get() }
        let first = comm.worldSize - flag[0]
        var message = ""
        if case .failure(let error) = result, comm.rank == first { message = userFacingDescription(error) }
        comm.broadcast(&message, root: first)
        throw SetupFailure(message: first == 0 ? message : "rank \(first): \(message)")
    }

    /// The gradient reducer, its buckets sized from the links: a first start times a few
    /// blocking all-reduces (well under a second) and picks the size whose fixed cost is a tenth
    /// of its time; a resumed run keeps the size its checkpoint recorded. A progress thread moves
    /// the reductions while backward runs when the ranks span several hosts and a bucket is over
    /// a megabyte (within one node, or for small buckets, testing at each layer's end suffices).
    func makeReducer(_ grads: FloatBuffer, model: LlamaModel, progress: inout TrainingProgress) throws -> GradientReducer {
        let ranges = GradientReducer.layerRanges(model: model)
        var name = [CChar](repeating: 0, count: 256)
        gethostname(&name, name.count - 1)
        let hosts = Set(try comm.allGather(String(cString: name))).count
        // Full fine-tuning: the LM head's gradient is reduced from the head's backward on. Tied to
        // the embedding, its lookup rows go apart while the gathered rows of all ranks are fewer
        // than the vocabulary's.
        let c = model.config, headFloats = c.vocabSize * c.hiddenSize, rows = config.batch.micro * config.data.maxSeqLen
        var headRange: Range<Int>? = nil
        var embeddingRows: GradientReducer.EmbeddingRows? = nil
        if model.lora == nil {
            let lmHead = model.layout.lmHead..<(model.layout.lmHead + headFloats)
            if !c.tieWordEmbeddings {
                headRange = lmHead
            } else if comm.worldSize * rows < c.vocabSize {
                headRange = lmHead
                embeddingRows = .init(embedding: model.layout.embedding, C: c.hiddenSize, rows: rows, worldSize: comm.worldSize)
            }
        }
        func reducer(_ floats: Int) -> GradientReducer {
            GradientReducer(comm: comm, grads: grads, layerRanges: ranges, headRange: headRange, embeddingRows: embeddingRows,
                            bucketFloats: floats, spansHosts: hosts > 1)
        }
        if let floats = progress.allReduceBucketFloats {
            let r = reducer(floats)
            say(String(format: "all-reduce buckets: %.2f MB (kept from the checkpoint), ranks on %d host(s)%@", Double(floats * 4) / 1e6, hosts,
                       r.progressThread ? ", progress thread" : "") + r.headNote)
            return r
        }
        let fit = LinkProbe.measure(comm, sizes: [8, 4 << 10, 64 << 10, 1 << 20, 8 << 20], repeats: 3)
        let floats = fit.bucketFloats(total: grads.count)
        progress.allReduceBucketFloats = floats
        let r = reducer(floats)
        say(String(format: "all-reduce link: %.0f us fixed cost, %.2f GB/s per rank (%d ranks on %d host(s)) -> buckets of %.2f MB, %d buckets for %.2f MB of gradients%@",
                   fit.fixedSeconds * 1e6, 1 / max(fit.secondsPerByte, 1e-15) / 1e9, comm.worldSize, hosts, Double(floats * 4) / 1e6,
                   r.buckets.count, Double(grads.count * 4) / 1e6, r.progressThread ? ", progress thread" : "") + r.headNote)
        return r
    }
}
