import DTrainCore
import DTrainData
import DTrainDistributed
import DTrainIO
import Foundation

/// What a finished run reports.
public struct TrainSummary {
    public var steps = 0
    public var totalSteps = 0
    public var tokens = 0
    public var seconds = 0.0
    public var initialValLoss: Double?
    public var finalValLoss: Double?
    public var bestValLoss: Double?
    public var bestStep: Int?
    public var stoppedEarly = false
    /// The signal that stopped the run at a step boundary (after a checkpoint), if any.
    public var stoppedBySignal: Int32?
    /// The newest checkpoint written, if any.
    public var checkpoint: String?
    public var outputDir = ""
    /// Bitwise hash of the trainable parameters at the end (identical on every rank).
    public var paramHash: UInt64 = 0
    /// Tokens per second over this session's steps after its first (which pays first-touch page
    /// faults), without validation and checkpoint time.
    public var steadyTokensPerSecond: Double?
    /// Gradient all-reduce, with more than one rank: bytes each rank contributes per step, the
    /// wait for reductions after backward per step, and a blocking all-reduce of the same buffer.
    public var allReduce: (payloadBytes: Int, exposedSeconds: Double, unhiddenSeconds: Double, blockingSeconds: Double)?
}

/// The data-parallel training loop. Every rank runs it; rank 0 validates, decides early
/// stopping, logs and writes outputs, and every decision reaches the other ranks through the
/// communicator, so all ranks leave the loop at the same step.
public final class Trainer {
    public let config: RunConfig
    public let comm: Communicator
    /// Where to resume from, if anywhere.
    public let resume: ResumeSource?
    private var isRoot: Bool { comm.rank == 0 }
    /// Redraws one line on a terminal; under an MPI launcher (whose pty is not the user's
    /// terminal) prints plain lines.
    private let console = World.launchedByMPI
        ? ConsoleReporter(isTerminal: false) { fputs($0, stdout); fflush(stdout) } : ConsoleReporter()

    public init(config: RunConfig, comm: Communicator, resume: ResumeSource? = nil) {
        self.config = config
        self.comm = comm
        self.resume = resume
    }

    /// Threads per rank: the config's, or the cores of this node shared among its ranks.
    public static func threadsPerRank(_ config: RunConfig) -> Int {
        if let t = config.threads { return t }
        let env = ProcessInfo.processInfo.environment
        let local = Int(env["OMPI_COMM_WORLD_LOCAL_SIZE"] ?? env["SLURM_NTASKS_PER_NODE"] ?? "1") ?? 1
        return max(1, ComputeThreads.available / max(local, 1))
    }

    func say(_ text: String) { if isRoot { console.message(text) } }

    /// Runs training to the end (or early stop) and returns the summary on every rank.
    public func run() throws -> TrainSummary {
        let cfg = config
        let threads = Self.threadsPerRank(cfg)
        ComputeThreads.configure(threads)
        let outDir = URL(fileURLWithPath: cfg.outputDir)
        if isRoot {
            print("dtrain: \(comm.worldSize) rank(s) x \(threads) thread(s); \(MachineKernels.summary); effective config:")
            if let warning = MachineKernels.warning { printError("warning: \(warning)") }
            print(cfg.yaml())
            try FileManager.default.createDirectory(at: outDir, withIntermediateDirectories: true)
            try AtomicFile.write(Data(cfg.yaml().utf8), to: outDir.appendingPathComponent("config.yaml").path)
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
            say("data: \(data.truncated) truncated to \(cfg.data.maxSeqLen) tokens, \(data.dropped) dropped as too long, \(data.skipped) invalid records skipped")
        }

        let plan = StepPlan(lengths: data.train.map(\.ids.count), seed: cfg.seed, globalExamples: cfg.batch.globalExamples,
                            globalTokens: cfg.batch.globalTokens, worldSize: comm.worldSize, micro: cfg.batch.micro)
        let stepsPerEpoch = plan.stepsPerEpoch()
        let totalSteps = min(cfg.train.maxSteps ?? Int.max, cfg.train.epochs * stepsPerEpoch)
        let builder = BatchBuilder(maxSeqLen: cfg.data.maxSeqLen, packing: cfg.data.packing)
        // One micro-batch's arrays, refilled in place for every micro-batch of the run.
        var microBatch = TokenBatch.empty
        let reducer = comm.worldSize > 1
            ? GradientReducer(comm: comm, grads: trainable.grads, layerRanges: GradientReducer.layerRanges(model: model)) : nil
        let optimizer = AdamWState(count: trainable.weights.count)

        // Where training stands; restored from a checkpoint when resuming.
        var progress = TrainingProgress()
        progress.seed = cfg.seed
        progress.dataFingerprint = Self.fingerprint(data.train)
        progress.initialValLoss = .nan
        let checkpoints = CheckpointState(directory: CheckpointDirectory(outputDir: cfg.outputDir), modelHash: baseHash,
                                          threads: threads)
        let resumed = try resume.map { try restore(from: $0, into: &progress, model: model, optimizer: optimizer, checkpoints: checkpoints) } ?? false
        say("training: \(totalSteps) steps (\(stepsPerEpoch) per epoch), \(cfg.batch.globalExamples.map { "\($0) examples" } ?? "\(cfg.batch.globalTokens!) tokens") per step, micro-batch \(cfg.batch.micro) per rank")

        var tensorBoard: TensorBoardWriter? = nil
        var metrics: MetricsLog? = nil
        if isRoot {
            if cfg.logging.tensorboard { tensorBoard = try TensorBoardWriter(directory: outDir) }
            metrics = try MetricsLog(directory: outDir, mode: resumed ? .append(resumeStep: progress.step) : .fresh, tensorBoard: tensorBoard)
        }

        var summary = TrainSummary(totalSteps: totalSteps, outputDir: cfg.outputDir)
        summary.tokens = progress.tokensSeen
        if progress.initialValLoss.isFinite { summary.initialValLoss = progress.initialValLoss }
        if progress.bestStep >= 0 { summary.bestValLoss = progress.bestMetric; summary.bestStep = progress.bestStep }

        // Validation before training: the "before" figure.
        if !resumed && !data.validation.isEmpty && cfg.eval.atStart {
            let v = validate(model, data.validation, builder)
            summary.initialValLoss = v
            progress.initialValLoss = v
            progress.bestMetric = v
            metrics?.validation(step: 0, valLoss: v, valPerplexity: exp(v))
            say(String(format: "validation at step 0: loss %.4f | ppl %.3f", v, exp(v)))
        }

        // Stop-request handlers are installed by the train command before anything loads.
        let fault = FaultInjection.fromEnvironment()
        let sessionStart = now()
        let elapsedBefore = progress.elapsedSeconds
        var timedSeconds = 0.0, timedTokens = 0.0, sessionSteps = 0
        var order = plan.order(epoch: progress.epoch)
        var bounds = plan.stepBoundaries(order: order)
        // The state after `progress.step` steps, as a checkpoint records it.
        func boundaryProgress() -> TrainingProgress {
            var p = progress
            p.optimizerStep = optimizer.step
            p.tokensSeen = summary.tokens
            p.totalSteps = totalSteps
            p.elapsedSeconds = elapsedBefore + now() - sessionStart
            return p
        }
        // Saves the state after `progress.step` steps (rank 0 writes; the others wait for it).
        func saveCheckpoint() throws {
            progress = boundaryProgress()
            let hook = fault?.checkpointHook(rank: comm.rank, step: progress.step)
            summary.checkpoint = try checkpoints.write(progress: progress, trainer: self, model: model, optimizer: optimizer, hook: hook)
            comm.barrier()
        }
        // Rank 0 checkpoints the last completed step at once on SIGTERM or SIGCONT (see
        // RescueCheckpointer). The loop holds its lock except while computing gradients.
        let rescue = isRoot && StopRequest.installed ? RescueCheckpointer { [unowned self] p, signal in
            checkpoints.rescue(progress: p, signal: signal, trainer: self, model: model, optimizer: optimizer)
        } : nil
        rescue?.hold()
        rescue?.publish(boundaryProgress())
        rescue?.start()

        while progress.step < totalSteps {
            if progress.stepInEpoch == bounds.count - 1 {
                progress.epoch += 1
                progress.stepInEpoch = 0
                order = plan.order(epoch: progress.epoch)
                bounds = plan.stepBoundaries(order: order)
            }
            let step = progress.step
            let micro = plan.microBatches(order: order, bounds: bounds, step: progress.stepInEpoch, rank: comm.rank)
            // Step boundary. One all-reduce carries the step's labelled-token count (the loss is the
            // mean over every labelled token of the global batch), any rank's stop request, and
            // rank 0's verdict on a time-based checkpoint, so that all ranks act alike.
            let timeDue = isRoot && checkpoints.dueByTime(everyMinutes: cfg.checkpoint.everyMinutes)
            var counts = [Double(micro.joined().reduce(0) { $0 + data.train[$1].labelledCount }),
                          Double(StopRequest.pending), timeDue ? 1 : 0]
            comm.allReduceSum(&counts)
            if counts[1] > 0 {
                var signal = [Double(StopRequest.pending)]
                comm.allReduceMax(&signal)
                summary.stoppedBySignal = Int32(signal[0])
                if progress.step > checkpoints.lastStep { try saveCheckpoint() }
                break
            }
            if counts[2] > 0 && progress.step > checkpoints.lastStep { try saveCheckpoint() }
            try fault?.trigger(rank: comm.rank, step: step + 1, microDone: 0)

            // Gradients only from here to the optimizer: a rescue may write the state meanwhile.
            rescue?.release()
            let stepStart = now()
            let globalLabelled = max(1, counts[0])
            model.zeroGrads()
            reducer?.beginStep()
            var lossSum = 0.0, localTokens = 0
            for (i, examples) in micro.enumerated() {
                builder.fill(&microBatch, for: examples, from: data.train)
                model.dropoutKey = CounterRandom.key(cfg.seed, 0x44524F50, UInt64(progress.epoch), UInt64(step))
                model.layerBackwardDone = (i == micro.count - 1 && reducer != nil) ? { [reducer] l in reducer!.layerDone(l) } : nil
                let loss = model.trainStep(microBatch, lossScale: Float(1 / globalLabelled))
                lossSum += loss.sum
                localTokens += examples.reduce(0) { $0 + data.train[$1].ids.count }
                try fault?.trigger(rank: comm.rank, step: step + 1, microDone: i + 1)
            }
            model.layerBackwardDone = nil
            reducer?.finish()
            let grads = reducer?.reduced ?? trainable.grads
            // One all-reduce: the loss and token sums, and each rank's backward end time.
            var totals = [lossSum, Double(localTokens)] + (reducer?.backwardEndSlots ?? [])
            comm.allReduceSum(&totals)
            reducer?.recordBackwardEnds(totals[2...])
            rescue?.hold()
            let norm = AdamWState.norm(grads)
            let clip: Float = cfg.optim.gradClip > 0 && norm > Double(cfg.optim.gradClip) ? cfg.optim.gradClip / Float(norm) : 1
            let lr = cfg.schedule.lr(step: step + 1, total: totalSteps, peak: cfg.optim.lr)
            optimizer.update(params: trainable.weights, grads: grads, lr: lr, hyper: cfg.optim.hyper, gradScale: clip)
            progress.step += 1
            progress.stepInEpoch += 1
            progress.learningRate = Double(lr)
            progress.valLoss = .nan
            sessionSteps += 1
            let dt = now() - stepStart
            // The first step of a session pays for first-touch page faults: leave it out of the ETA.
            if sessionSteps > 1 { timedSeconds += dt; timedTokens += totals[1] }
            summary.tokens += Int(totals[1])
            let loss = totals[0] / globalLabelled
            let tokPerSec = totals[1] / dt
            let elapsed = elapsedBefore + now() - sessionStart
            metrics?.step(step: progress.step, loss: loss, lr: Double(lr), gradNorm: norm, tokensPerSecond: tokPerSec,
                          extra: ["tokens": Double(summary.tokens), "elapsed_s": elapsed, "epoch": Double(progress.epoch)])
            if isRoot && (progress.step % max(1, cfg.logging.everySteps) == 0 || progress.step == totalSteps) {
                let eta = ProgressLine.estimatedRemaining(stepsLeft: totalSteps - progress.step, stepsTimed: max(sessionSteps - 1, 1),
                                                          secondsTimed: sessionSteps > 1 ? timedSeconds : dt)
                console.report(ProgressLine(step: progress.step, totalSteps: totalSteps, loss: loss, learningRate: Double(lr), gradNorm: norm,
                                            stepSeconds: dt, tokensPerSecond: tokPerSec, etaSeconds: eta, elapsedSeconds: elapsed))
            }

            // Validation and the early-stopping decision.
            var stopEarly = false
            let evalDue = cfg.eval.everySteps > 0 && progress.step % cfg.eval.everySteps == 0
            if !data.validation.isEmpty && (evalDue || progress.step == totalSteps) {
                let v = validate(model, data.validation, builder)
                summary.finalValLoss = v
                progress.valLoss = v
                metrics?.validation(step: progress.step, valLoss: v, valPerplexity: exp(v))
                var decision = [0.0, 0.0] // [improved, stop]
                if isRoot {
                    let metric = cfg.eval.metric == "val_ppl" ? exp(v) : v
                    let best = cfg.eval.metric == "val_ppl" ? exp(progress.bestMetric) : progress.bestMetric
                    if metric < best - cfg.eval.minDelta || progress.bestStep < 0 && metric <= best {
                        decision[0] = 1
                    }
                    if decision[0] == 0 { progress.sinceImprovement += 1 } else { progress.sinceImprovement = 0 }
                    if cfg.eval.patience > 0 && progress.sinceImprovement >= cfg.eval.patience && progress.step < totalSteps { decision[1] = 1 }
                }
                comm.broadcast(&decision, root: 0)
                if decision[0] == 1 {
                    progress.bestMetric = v
                    progress.bestStep = progress.step
                    summary.bestValLoss = v
                    summary.bestStep = progress.step
                    if isRoot { try saveWeights(model, loaded, to: outDir.appendingPathComponent("best").path) }
                }
                let note = decision[0] == 1 ? " (best)" : String(format: " (best %.4f at step %d)", progress.bestMetric, max(progress.bestStep, 0))
                say(String(format: "validation at step %d: loss %.4f | ppl %.3f", progress.step, v, exp(v)) + note)
                if decision[1] == 1 {
                    summary.stoppedEarly = true
                    say("early stopping: no improvement of more than \(cfg.eval.minDelta) in \(cfg.eval.patience) validations")
                    stopEarly = true
                }
            }
            if cfg.checkpoint.everySteps > 0 && progress.step % cfg.checkpoint.everySteps == 0 { try saveCheckpoint() }
            rescue?.publish(boundaryProgress())
            if stopEarly { break }
        }
        rescue?.retire()
        // The end of the run (or of this session) always has a checkpoint.
        if progress.step > checkpoints.lastStep && (progress.step > 0 || summary.stoppedBySignal == nil) { try saveCheckpoint() }
        summary.steps = progress.step
        summary.seconds = elapsedBefore + now() - sessionStart
        if timedSeconds > 0 { summary.steadyTokensPerSecond = timedTokens / timedSeconds }
        if let reducer, sessionSteps > 0 {
            // The reference for "hidden": the same reduction, blocking, after training (collective).
            let reps = 3
            comm.barrier()
            let t0 = now()
            for _ in 0..<reps { comm.allReduceSum(reducer.reduced.base, count: reducer.reduced.count) }
            summary.allReduce = (reducer.payloadBytes, reducer.exposedSeconds / Double(sessionSteps),
                                 reducer.unhiddenSeconds / Double(sessionSteps), (now() - t0) / Double(reps))
        }
        summary.paramHash = Self.hash(trainable.weights)
        if isRoot {
            console.finish()
            if summary.stoppedBySignal == nil {
                try saveWeights(model, loaded, to: outDir.appendingPathComponent("final").path)
            }
            metrics?.close()
            tensorBoard?.close()
            printSummary(summary)
        }
        return summary
    }

    /// Mean loss over every labelled token of the validation set, computed across all ranks and
    /// reduced in float64 (no logits are kept).
    func validate(_ model: LlamaModel, _ examples: [SequenceExample], _ builder: BatchBuilder) -> Double {
        let per = (examples.count + comm.worldSize - 1) / comm.worldSize
        let lo = min(examples.count, comm.rank * per), hi = min(examples.count, lo + per)
        var sums = [0.0, 0.0]
        var batch = TokenBatch.empty
        for start in stride(from: lo, to: hi, by: config.batch.micro) {
            builder.fill(&batch, for: Array(start..<min(hi, start + config.batch.micro)), from: examples)
            let loss = model.evaluate(batch)
            sums[0] += loss.sum
            sums[1] += Double(loss.count)
        }
        comm.allReduceSum(&sums)
        return sums[1] > 0 ? sums[0] / sums[1] : .nan
    }

    /// Every rank must start from the same weights: compare each rank's hash with rank 0's.
    func agreeOnWeights(_ model: LlamaModel, baseHash: UInt64) throws {
        var mine = baseHash
        if let lora = model.lora { mine ^= CounterRandom.mix(Self.hash(lora.weights)) }
        let lanes = Double(Vectors.kernels.lanes)
        var root = [Double(mine >> 32), Double(mine & 0xFFFF_FFFF), lanes]
        comm.broadcast(&root, root: 0)
        let rootHash = UInt64(root[0]) << 32 | UInt64(root[1])
        // The vector width decides the order of some sums (the gradient norm that clipping
        // uses among them): ranks at different widths would drift apart by rounding.
        var mismatch = [rootHash == mine ? 0.0 : Double(comm.rank + 1), root[2] == lanes ? 0.0 : Double(comm.rank + 1)]
        comm.allReduceMax(&mismatch)
        if mismatch[1] > 0 {
            throw SetupFailure(message: "rank \(Int(mismatch[1]) - 1) runs its vector kernels at another width than rank 0 "
                + "(\(Int(root[2])) float32 lanes there); set DTRAIN_VECTOR_BITS=256 for every rank of a job whose nodes' CPUs differ")
        }
        if mismatch[0] > 0 {
            throw SetupFailure(message: "\(ConfigError.invalid(key: "model", message: "rank \(Int(mismatch[0]) - 1) loaded different weights than rank 0 from \(config.model); every node must see the same file"))")
        }
    }

    /// Runs `body`, this rank's share of setting up (no collectives inside), and then has every
    /// rank agree on the outcome: when `body` failed on any rank, every rank throws the same
    /// `SetupFailure`, with the message of the lowest failing rank, instead of the ranks that
    /// succeeded waiting in their next collective for the ones that did not.
    func agreeOnSetup<T>(_ body: () throws -> T) throws -> T {
        var result: Result<T, Error>
        do { result = .success(try body()) } catch { result = .failure(error) }
        var failed: Double = 0
        if case .failure = result { failed = Double(comm.worldSize - comm.rank) }
        var flag = [failed]
        comm.allReduceMax(&flag)
        guard flag[0] > 0 else { return try result.get() }
        let first = comm.worldSize - Int(flag[0])
        var message = ""
        if case .failure(let error) = result, comm.rank == first { message = "\(error)" }
        comm.broadcast(&message, root: first)
        throw SetupFailure(message: first == 0 ? message : "rank \(first): \(message)")
    }

    /// FNV-1a over the bit patterns of a buffer.
    public static func hash(_ buffer: FloatBuffer) -> UInt64 {
        var h = FNV1a()
        let words = UnsafeRawPointer(buffer.base).assumingMemoryBound(to: UInt32.self)
        for i in 0..<buffer.count { h.mix(UInt64(words[i])) }
        return h.value
    }

    /// Writes final/ or best/: self-contained (the tokenizer files and the chat template the data
    /// was rendered with go beside the weights).
    func saveWeights(_ model: LlamaModel, _ loaded: LoadedModel, to dir: String) throws {
        let template = try loaded.assets.chatTemplate(overridePath: config.data.chatTemplate)?.template.source
        if let lora = model.lora {
            try ModelExport.writeAdapter(lora, assets: loaded.assets, modelPath: config.model, chatTemplate: template, to: dir)
        } else {
            try ModelExport.writeModel(config: model.config, layout: model.layout, params: model.params, assets: loaded.assets,
                                       chatTemplate: template, to: dir)
        }
    }

    func printSummary(_ s: TrainSummary) {
        print("")
        if let signal = s.stoppedBySignal {
            print("stopped by \(StopRequest.name(signal)) at step \(s.steps)/\(s.totalSteps); "
                  + (s.checkpoint.map { "checkpoint \($0)" } ?? "no checkpoint (nothing trained yet)")
                  + "; continue with --resume auto (exit status \(stoppedForResumeExitCode))")
            return
        }
        print("done: \(s.steps)/\(s.totalSteps) steps\(s.stoppedEarly ? " (stopped early)" : ""), \(s.tokens) tokens in \(formatDuration(s.seconds))"
              + String(format: " (%.0f tok/s)", Double(s.tokens) / max(s.seconds, 1e-9)))
        if let a = s.initialValLoss { print(String(format: "validation loss before: %.4f (ppl %.2f)", a, exp(a))) }
        if let b = s.finalValLoss { print(String(format: "validation loss after:  %.4f (ppl %.2f)", b, exp(b))) }
        if let best = s.bestValLoss, let step = s.bestStep { print(String(format: "best validation loss %.4f at step %d", best, step)) }
        if let tps = s.steadyTokensPerSecond { print(String(format: "throughput: %.1f tok/s over the steps after the first", tps)) }
        if let a = s.allReduce {
            let n = Double(comm.worldSize), mb = Double(a.payloadBytes) / 1e6
            let hidden = a.blockingSeconds > 0 ? max(0, 1 - a.unhiddenSeconds / a.blockingSeconds) : 1
            print(String(format: "all-reduce: %.2f MB of gradients per rank per step (a ring sends %.2f MB per rank); it ran on %.1f ms per step after the slowest rank's backward, against %.1f ms for a blocking all-reduce of the same buffer: %.0f%% hidden behind backward (waiting for slower ranks: %.1f ms per step)",
                         mb, mb * 2 * (n - 1) / n, a.unhiddenSeconds * 1e3, a.blockingSeconds * 1e3, hidden * 100,
                         max(0, a.exposedSeconds - a.unhiddenSeconds) * 1e3))
        }
        if let c = s.checkpoint { print("checkpoint: \(c)") }
        print("outputs: \(s.outputDir)/final (\(config.method == .lora ? "PEFT adapter" : "Hugging Face model") with the tokenizer files), \(s.outputDir)/best, \(s.outputDir)/metrics.jsonl, TensorBoard events in \(s.outputDir)")
    }
}

/// A config, model, data or checkpoint problem found before the first step. Every rank throws it
/// alike; the train command exits with status 2 on every rank and rank 0 alone prints `message`.
public struct SetupFailure: Error, CustomStringConvertible {
    public let message: String
    public init(message: String) { self.message = message }
    public var description: String { message }
}
