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
///
/// Like a torchtune recipe, a run is set up (`setUp`: config, model, data, resume), stepped
/// (`step`: gradients over the micro-batches, all-reduce, clipping, AdamW), validated
/// (`validateIfDue`: the validation loss, early stopping, best/), checkpointed
/// (`saveCheckpoint`, `CheckpointState`) and logged (`RunLog`); `run` strings them together.
public final class Trainer {
    public let config: RunConfig
    public let comm: Communicator
    /// Where to resume from, if anywhere.
    public let resume: ResumeSource?
    var isRoot: Bool { comm.rank == 0 }
    let log: RunLog

    public init(config: RunConfig, comm: Communicator, resume: ResumeSource? = nil) {
        self.config = config
        self.comm = comm
        self.resume = resume
        log = RunLog(isRoot: comm.rank == 0)
    }

    /// Threads per rank: the config's, or the cores of this node shared among its ranks.
    public static func threadsPerRank(_ config: RunConfig) -> Int {
        config.threads ?? ComputeThreads.perRank
    }

    func say(_ text: String) { log.say(text) }

    /// Runs training to the end (or early stop, or a stop request) and returns the summary on every rank.
    public func run() throws -> TrainSummary {
        let run = try setUp()
        // Validation before training: the "before" figure.
        if !run.resumed && !run.data.validation.isEmpty && config.eval.atStart {
            let v = validate(run)
            let tasks = try taskMetrics(run, step: 0)
            run.summary.initialValLoss = v
            run.progress.initialValLoss = v
            run.progress.bestMetric = stoppingScore(loss: v, tasks: tasks) ?? .infinity
            log.validation(step: 0, loss: v, tasks: tasks)
        }

        // Stop-request handlers are installed by the train command before anything loads.
        let fault = FaultInjection.fromEnvironment()
        run.startSession()
        // Rank 0 checkpoints the last completed step at once on SIGTERM or SIGCONT (see
        // RescueCheckpointer). The loop holds its lock except while computing gradients.
        let rescue = isRoot && StopRequest.installed ? RescueCheckpointer { [unowned run] p, signal in
            run.checkpoints.rescue(progress: p, signal: signal)
        } : nil
        rescue?.hold()
        rescue?.publish(run.boundaryProgress())
        rescue?.start()

        var order = run.plan.order(epoch: run.progress.epoch)
        var bounds = run.plan.stepBoundaries(order: order)
        while run.progress.step < run.totalSteps {
            if run.progress.stepInEpoch == bounds.count - 1 {
                run.progress.epoch += 1
                run.progress.stepInEpoch = 0
                order = run.plan.order(epoch: run.progress.epoch)
                bounds = run.plan.stepBoundaries(order: order)
            }
            let micro = run.plan.microBatches(order: order, bounds: bounds, step: run.progress.stepInEpoch, rank: comm.rank)
            guard let globalLabelled = try agreeAtStepBoundary(run, micro: micro, fault: fault) else { break }
            // Gradients only from here to the optimizer: a rescue may write the state meanwhile.
            rescue?.release()
            try step(run, micro: micro, globalLabelled: globalLabelled, fault: fault) { rescue?.hold() }
            let stopEarly = try validateIfDue(run)
            if config.checkpoint.everySteps > 0 && run.progress.step % config.checkpoint.everySteps == 0 {
                try saveCheckpoint(run, fault: fault)
            }
            rescue?.publish(run.boundaryProgress())
            if stopEarly { break }
        }
        rescue?.retire()
        return try finish(run, fault: fault)
    }

    /// The end of the run (or of this session): the last checkpoint, the all-reduce figures,
    /// final/, the summary.
    func finish(_ run: TrainingRun, fault: FaultInjection?) throws -> TrainSummary {
        let progress = run.progress
        if progress.step > run.checkpoints.lastStep && (progress.step > 0 || run.summary.stoppedBySignal == nil) {
            try saveCheckpoint(run, fault: fault)
        }
        var summary = run.summary
        summary.steps = run.progress.step
        summary.seconds = run.elapsedBefore + now() - run.sessionStart
        if run.timedSeconds > 0 { summary.steadyTokensPerSecond = run.timedTokens / run.timedSeconds }
        if let reducer = run.reducer, run.sessionSteps > 0 {
            // The reference for "hidden": the same reduction, blocking, after training (collective).
            let reps = 3
            comm.barrier()
            let t0 = now()
            for _ in 0..<reps { comm.allReduceSum(reducer.reduced.base, count: reducer.reduced.count) }
            summary.allReduce = (reducer.payloadBytes, reducer.exposedSeconds / Double(run.sessionSteps),
                                 reducer.unhiddenSeconds / Double(run.sessionSteps), (now() - t0) / Double(reps))
        }
        summary.paramHash = Self.hash(run.trainable.weights)
        if isRoot {
            log.finishProgress()
            if summary.stoppedBySignal == nil {
                try saveWeights(run.model, run.loaded, to: run.outputDirectory.appendingPathComponent("final").path)
            }
            log.close()
            printSummary(summary)
        }
        return summary
    }

    /// Saves the state after `run.progress.step` steps (rank 0 writes; the others wait for it).
    func saveCheckpoint(_ run: TrainingRun, fault: FaultInjection?) throws {
        run.progress = run.boundaryProgress()
        let hook = fault?.checkpointHook(rank: comm.rank, step: run.progress.step)
        run.summary.checkpoint = try run.checkpoints.write(progress: run.progress, hook: hook)
        comm.barrier()
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

/// A step whose loss or global gradient norm is not finite. Every rank sees the same all-reduced
/// numbers and throws it at the same step, before the optimizer update: the weights, the
/// checkpoints (`latest` names the last good one), `best/` and `final/` stay as they were.
public struct NonFiniteStep: Error, CustomStringConvertible {
    public let step: Int
    public let loss: Double
    public let gradNorm: Double
    /// The first trainable tensor, in layout order, whose gradient holds a NaN or an infinity.
    public let firstNonFiniteGradient: String?
    /// The step of the newest checkpoint, 0 when none was written.
    public let lastCheckpointStep: Int

    public var description: String {
        let tensor = firstNonFiniteGradient.map { " (first non-finite gradient: \($0))" } ?? ""
        let kept = lastCheckpointStep > 0 ? "checkpoints/latest is still step \(lastCheckpointStep)" : "no checkpoint had been written yet"
        return "step \(step): the loss is \(loss) and the gradient norm is \(gradNorm)\(tensor); training stopped before the update, "
            + "nothing of this step was written and \(kept). HINT: lower optim.lr, set optim.grad_clip, or raise schedule.warmup_steps"
    }
}

/// A config, model, data or checkpoint problem found before the first step. Every rank throws it
/// alike; the train command exits with status 2 on every rank and rank 0 alone prints `message`.
public struct SetupFailure: Error, CustomStringConvertible {
    public let message: String
    public init(message: String) { self.message = message }
    public var description: String { message }
}
