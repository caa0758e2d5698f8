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
    public var outputDir = ""
    /// Bitwise hash of the trainable parameters at the end (identical on every rank).
    public var paramHash: UInt64 = 0
}

/// The data-parallel training loop. Every rank runs it; rank 0 validates, decides early
/// stopping, logs and writes outputs, and every decision reaches the other ranks through the
/// communicator, so all ranks leave the loop at the same step.
public final class Trainer {
    public let config: RunConfig
    public let comm: Communicator
    private var isRoot: Bool { comm.rank == 0 }
    /// Redraws one line on a terminal; under an MPI launcher (whose pty is not the user's
    /// terminal) prints plain lines.
    private let console = World.launchedByMPI
        ? ConsoleReporter(isTerminal: false) { fputs($0, stdout); fflush(stdout) } : ConsoleReporter()

    public init(config: RunConfig, comm: Communicator) {
        self.config = config
        self.comm = comm
    }

    /// Threads per rank: the config's, or the cores of this node shared among its ranks.
    public static func threadsPerRank(_ config: RunConfig) -> Int {
        if let t = config.threads { return t }
        let env = ProcessInfo.processInfo.environment
        let local = Int(env["OMPI_COMM_WORLD_LOCAL_SIZE"] ?? env["SLURM_NTASKS_PER_NODE"] ?? "1") ?? 1
        return max(1, ComputeThreads.available / max(local, 1))
    }

    private func say(_ text: String) { if isRoot { console.message(text) } }

    /// Runs training to the end (or early stop) and returns the summary on every rank.
    public func run() throws -> TrainSummary {
        let cfg = config
        let threads = Self.threadsPerRank(cfg)
        ComputeThreads.configure(threads)
        let outDir = URL(fileURLWithPath: cfg.outputDir)
        if isRoot {
            print("dtrain: \(comm.worldSize) rank(s) x \(threads) thread(s); effective config:")
            print(cfg.yaml())
            try FileManager.default.createDirectory(at: outDir, withIntermediateDirectories: true)
            try AtomicFile.write(Data(cfg.yaml().utf8), to: outDir.appendingPathComponent("config.yaml").path)
        }

        // Model and data: every rank loads both (deterministically), then checks it holds what rank 0 holds.
        let t0 = now()
        let loaded = try ModelLoader.load(path: cfg.model)
        let data = try TrainingDataLoader.load(config: cfg, model: loaded)
        guard !data.train.isEmpty else {
            throw ConfigError.invalid(key: "data.train", message: "no training examples remain (after the validation split and length policy)")
        }
        let model = LlamaModel(config: loaded.config, params: loaded.params)
        model.enableTraining(cfg.method == .full ? .full : .lora(cfg.lora.coreConfig), seed: cfg.seed)
        model.prepare(batchSize: cfg.batch.micro, seqLen: cfg.data.maxSeqLen, recompute: cfg.recompute)
        let trainable = model.trainable!
        try agreeOnWeights(model)
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
        let reducer = comm.worldSize > 1
            ? GradientReducer(comm: comm, grads: trainable.grads, layerRanges: GradientReducer.layerRanges(model: model)) : nil
        let optimizer = AdamWState(count: trainable.weights.count)
        say("training: \(totalSteps) steps (\(stepsPerEpoch) per epoch), \(cfg.batch.globalExamples.map { "\($0) examples" } ?? "\(cfg.batch.globalTokens!) tokens") per step, micro-batch \(cfg.batch.micro) per rank")

        var tensorBoard: TensorBoardWriter? = nil
        var metrics: MetricsLog? = nil
        if isRoot {
            if cfg.logging.tensorboard { tensorBoard = try TensorBoardWriter(directory: outDir) }
            metrics = try MetricsLog(directory: outDir, mode: .fresh, tensorBoard: tensorBoard)
        }

        var summary = TrainSummary(totalSteps: totalSteps, outputDir: cfg.outputDir)
        var bestMetric = Double.infinity
        var sinceImprovement = 0

        // Validation before training: the "before" figure.
        if !data.validation.isEmpty && cfg.eval.atStart {
            let v = validate(model, data.validation, builder)
            summary.initialValLoss = v
            bestMetric = v
            metrics?.validation(step: 0, valLoss: v, valPerplexity: exp(v))
            say(String(format: "validation at step 0: loss %.4f | ppl %.3f", v, exp(v)))
        }

        let fault = FaultInjection.fromEnvironment()
        let trainStart = now()
        var timedSeconds = 0.0
        var step = 0
        var epoch = 0
        var order = plan.order(epoch: 0)
        var bounds = plan.stepBoundaries(order: order)
        var stepInEpoch = 0
        while step < totalSteps {
            if stepInEpoch == bounds.count - 1 {
                epoch += 1
                stepInEpoch = 0
                order = plan.order(epoch: epoch)
                bounds = plan.stepBoundaries(order: order)
            }
            if let fault, fault.rank == comm.rank, fault.step == step + 1 {
                throw FaultInjection.Failure(rank: comm.rank, step: step + 1)
            }
            let stepStart = now()
            let micro = plan.microBatches(order: order, bounds: bounds, step: stepInEpoch, rank: comm.rank)
            // The loss is the mean over every labelled token of the global batch: agree on that count first.
            var counts = [Double(micro.joined().reduce(0) { $0 + data.train[$1].labelledCount })]
            comm.allReduceSum(&counts)
            let globalLabelled = max(1, counts[0])
            model.zeroGrads()
            reducer?.beginStep()
            var lossSum = 0.0, localTokens = 0
            for (i, examples) in micro.enumerated() {
                let batch = builder.batch(for: examples, from: data.train)
                model.dropoutKey = CounterRandom.key(cfg.seed, 0x44524F50, UInt64(epoch), UInt64(step))
                model.layerBackwardDone = (i == micro.count - 1 && reducer != nil) ? { [reducer] l in reducer!.layerDone(l) } : nil
                let loss = model.trainStep(batch, lossScale: Float(1 / globalLabelled))
                lossSum += loss.sum
                localTokens += examples.reduce(0) { $0 + data.train[$1].ids.count }
            }
            model.layerBackwardDone = nil
            reducer?.finish()
            let grads = reducer?.reduced ?? trainable.grads
            var totals = [lossSum, Double(localTokens)]
            comm.allReduceSum(&totals)
            let norm = AdamWState.norm(grads)
            let clip: Float = cfg.optim.gradClip > 0 && norm > Double(cfg.optim.gradClip) ? cfg.optim.gradClip / Float(norm) : 1
            let lr = cfg.schedule.lr(step: step + 1, total: totalSteps, peak: cfg.optim.lr)
            optimizer.update(params: trainable.weights, grads: grads, lr: lr, hyper: cfg.optim.hyper, gradScale: clip)
            step += 1
            stepInEpoch += 1
            let dt = now() - stepStart
            if step > 1 || totalSteps == 1 { timedSeconds += dt }
            summary.tokens += Int(totals[1])
            let loss = totals[0] / globalLabelled
            let tokPerSec = totals[1] / dt
            metrics?.step(step: step, loss: loss, lr: Double(lr), gradNorm: norm, tokensPerSecond: tokPerSec,
                          extra: ["tokens": Double(summary.tokens), "elapsed_s": now() - trainStart, "epoch": Double(epoch)])
            if isRoot && (step % max(1, cfg.logging.everySteps) == 0 || step == totalSteps) {
                let eta = ProgressLine.estimatedRemaining(stepsLeft: totalSteps - step, stepsTimed: max(step - 1, 1), secondsTimed: step > 1 ? timedSeconds : dt)
                console.report(ProgressLine(step: step, totalSteps: totalSteps, loss: loss, learningRate: Double(lr), gradNorm: norm,
                                            stepSeconds: dt, tokensPerSecond: tokPerSec, etaSeconds: eta, elapsedSeconds: now() - trainStart))
            }

            // Validation and the early-stopping decision.
            let evalDue = cfg.eval.everySteps > 0 && step % cfg.eval.everySteps == 0
            if !data.validation.isEmpty && (evalDue || step == totalSteps) {
                let v = validate(model, data.validation, builder)
                summary.finalValLoss = v
                metrics?.validation(step: step, valLoss: v, valPerplexity: exp(v))
                var decision = [0.0, 0.0] // [improved, stop]
                if isRoot {
                    let metric = cfg.eval.metric == "val_ppl" ? exp(v) : v
                    let best = cfg.eval.metric == "val_ppl" ? exp(bestMetric) : bestMetric
                    if metric < best - cfg.eval.minDelta || summary.bestStep == nil && metric <= best {
                        decision[0] = 1
                    }
                    if decision[0] == 0 { sinceImprovement += 1 } else { sinceImprovement = 0 }
                    if cfg.eval.patience > 0 && sinceImprovement >= cfg.eval.patience && step < totalSteps { decision[1] = 1 }
                }
                comm.broadcast(&decision, root: 0)
                if decision[0] == 1 {
                    bestMetric = v
                    summary.bestValLoss = v
                    summary.bestStep = step
                    if isRoot { try saveWeights(model, loaded, to: outDir.appendingPathComponent("best").path) }
                }
                let note = decision[0] == 1 ? " (best)" : String(format: " (best %.4f at step %d)", bestMetric, summary.bestStep ?? 0)
                say(String(format: "validation at step %d: loss %.4f | ppl %.3f", step, v, exp(v)) + note)
                if decision[1] == 1 {
                    summary.stoppedEarly = true
                    say("early stopping: no improvement of more than \(cfg.eval.minDelta) in \(cfg.eval.patience) validations")
                    break
                }
            }
        }
        summary.steps = step
        summary.seconds = now() - trainStart
        summary.paramHash = Self.hash(trainable.weights)
        if isRoot {
            console.finish()
            try saveWeights(model, loaded, to: outDir.appendingPathComponent("final").path)
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
        for start in stride(from: lo, to: hi, by: config.batch.micro) {
            let batch = builder.batch(for: Array(start..<min(hi, start + config.batch.micro)), from: examples)
            let loss = model.evaluate(batch)
            sums[0] += loss.sum
            sums[1] += Double(loss.count)
        }
        comm.allReduceSum(&sums)
        return sums[1] > 0 ? sums[0] / sums[1] : .nan
    }

    /// Every rank must start from the same weights: compare each rank's hash with rank 0's.
    func agreeOnWeights(_ model: LlamaModel) throws {
        var mine = Self.hash(model.params)
        if let lora = model.lora { mine ^= CounterRandom.mix(Self.hash(lora.weights)) }
        var root = [Double(mine >> 32), Double(mine & 0xFFFF_FFFF)]
        comm.broadcast(&root, root: 0)
        let rootHash = UInt64(root[0]) << 32 | UInt64(root[1])
        var mismatch = [rootHash == mine ? 0.0 : Double(comm.rank + 1)]
        comm.allReduceMax(&mismatch)
        if mismatch[0] > 0 {
            throw ConfigError.invalid(key: "model", message: "rank \(Int(mismatch[0]) - 1) loaded different weights than rank 0 from \(config.model); every node must see the same file")
        }
    }

    /// FNV-1a over the bit patterns of a buffer.
    public static func hash(_ buffer: FloatBuffer) -> UInt64 {
        var h: UInt64 = 0xCBF2_9CE4_8422_2325
        let words = UnsafeRawPointer(buffer.base).assumingMemoryBound(to: UInt32.self)
        for i in 0..<buffer.count { h = (h ^ UInt64(words[i])) &* 0x100_0000_01B3 }
        return h
    }

    func saveWeights(_ model: LlamaModel, _ loaded: LoadedModel, to dir: String) throws {
        if let lora = model.lora {
            try ModelExport.writePEFTAdapter(lora, baseModel: config.model, to: dir)
        } else {
            try ModelExport.writeModel(config: model.config, layout: model.layout, params: model.params, to: dir)
        }
    }

    func printSummary(_ s: TrainSummary) {
        print("")
        print("done: \(s.steps)/\(s.totalSteps) steps\(s.stoppedEarly ? " (stopped early)" : ""), \(s.tokens) tokens in \(formatDuration(s.seconds))"
              + String(format: " (%.0f tok/s)", Double(s.tokens) / max(s.seconds, 1e-9)))
        if let a = s.initialValLoss { print(String(format: "validation loss before: %.4f (ppl %.2f)", a, exp(a))) }
        if let b = s.finalValLoss { print(String(format: "validation loss after:  %.4f (ppl %.2f)", b, exp(b))) }
        if let best = s.bestValLoss, let step = s.bestStep { print(String(format: "best validation loss %.4f at step %d", best, step)) }
        print("outputs: \(s.outputDir)/final (\(config.method == .lora ? "PEFT adapter" : "safetensors model")), \(s.outputDir)/best, \(s.outputDir)/metrics.jsonl, TensorBoard events in \(s.outputDir)")
    }
}

/// A deliberate failure for tests of failure handling: `DTRAIN_FAULT=rank:step` makes that rank
/// throw at the start of that (1-based) step.
public struct FaultInjection {
    public let rank: Int, step: Int
    public struct Failure: Error, CustomStringConvertible {
        public let rank: Int, step: Int
        public var description: String { "injected failure at step \(step) (DTRAIN_FAULT)" }
    }
    static func fromEnvironment() -> FaultInjection? {
        guard let v = ProcessInfo.processInfo.environment["DTRAIN_FAULT"] else { return nil }
        let parts = v.split(separator: ":").compactMap { Int($0) }
        return parts.count == 2 ? FaultInjection(rank: parts[0], step: parts[1]) : nil
    }
}
