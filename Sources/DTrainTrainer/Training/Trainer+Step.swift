import DTrainCore
import DTrainData
import DTrainDistributed
import DTrainIO
import Foundation

extension Trainer {
    /// The step boundary. One all-reduce carries the step's labelled-token count (the loss is the
    /// mean over every labelled token of the global batch), any rank's stop request, and rank 0's
    /// verdict on a time-based checkpoint, so that all ranks act alike. Returns the global
    /// labelled-token count, or nil when a stop request ends the run here (after a checkpoint).
    func agreeAtStepBoundary(_ run: TrainingRun, micro: [[Int]], fault: FaultInjection?) throws -> Int? {
        let timeDue = isRoot && run.checkpoints.dueByTime()
        var counts = [micro.joined().reduce(0) { $0 + run.data.train[$1].labelledCount }, Int(StopRequest.pending), timeDue ? 1 : 0]
        comm.allReduceSum(&counts)
        if counts[1] > 0 {
            var signal = [Int(StopRequest.pending)]
            comm.allReduceMax(&signal)
            run.summary.stoppedBySignal = Int32(signal[0])
            if run.progress.step > run.checkpoints.lastStep { try saveCheckpoint(run, fault: fault) }
            return nil
        }
        if counts[2] > 0 && run.progress.step > run.checkpoints.lastStep { try saveCheckpoint(run, fault: fault) }
        try fault?.trigger(rank: comm.rank, step: run.progress.step + 1, microDone: 0)
        return counts[0]
    }

    /// One optimizer step: the gradients of this rank's micro-batches (accumulated, scaled by
    /// the global labelled-token count), their all-reduce overlapped with backward, then
    /// `beforeUpdate` (the rescue lock is taken again there), global-norm clipping and AdamW.
    /// Advances `run.progress` and logs the step.
    func step(_ run: TrainingRun, micro: [[Int]], globalLabelled labelled: Int, fault: FaultInjection?,
              beforeUpdate: () -> Void) throws {
        let cfg = config, model = run.model, step = run.progress.step
        let stepStart = now()
        let globalLabelled = Double(max(1, labelled))
        model.zeroGrads()
        if let fault, fault.action == .nan, fault.rank == comm.rank, fault.step == step + 1 {
            // Backward adds into the gradients, so the NaN survives into the norm (and, through
            // the all-reduce, reaches every rank).
            let layers = GradientReducer.layerRanges(model: model)
            run.trainable.grads.base[layers[min(fault.count, layers.count - 1)].lowerBound] = .nan
        }
        run.reducer?.beginStep()
        var lossSum = 0.0, localTokens = 0
        for (i, examples) in micro.enumerated() {
            run.builder.fill(&run.microBatch, for: examples, from: run.data.train)
            model.dropoutKey = CounterRandom.key(cfg.seed, 0x44524F50, UInt64(run.progress.epoch), UInt64(step))
            let reducer = i == micro.count - 1 ? run.reducer : nil
            model.layerBackwardDone = reducer.map { r in { l in r.layerDone(l) } }
            model.headBackwardDone = reducer.map { r in { r.headDone() } }
            model.embeddingGradientRows = reducer?.embeddingRows == nil ? nil : { [r = reducer!] rows, tokens, n in r.takeEmbeddingRows(rows, tokens, n) }
            let loss = model.trainStep(run.microBatch, lossScale: Float(1 / globalLabelled))
            lossSum += loss.sum
            localTokens += examples.reduce(0) { $0 + run.data.train[$1].ids.count }
            try fault?.trigger(rank: comm.rank, step: step + 1, microDone: i + 1)
        }
        model.layerBackwardDone = nil
        model.headBackwardDone = nil
        model.embeddingGradientRows = nil
        run.reducer?.finish()
        let grads = run.reducer?.reduced ?? run.trainable.grads
        // One all-reduce: the loss and token sums, and each rank's backward end time.
        var totals = [lossSum, Double(localTokens)] + (run.reducer?.backwardEndSlots ?? [])
        comm.allReduceSum(&totals)
        run.reducer?.recordBackwardEnds(totals[2...])
        beforeUpdate()
        let norm = AdamWState.norm(grads)
        // The loss and the norm are all-reduced, the same on every rank: all stop here alike.
        let meanLoss = totals[0] / globalLabelled
        if !meanLoss.isFinite || !norm.isFinite {
            let first = run.trainable.specs.first { spec in
                UnsafeBufferPointer(start: grads.pointer(at: spec.offset), count: spec.count).contains { !$0.isFinite }
            }
            throw NonFiniteStep(step: step + 1, loss: meanLoss, gradNorm: norm, firstNonFiniteGradient: first?.name,
                                lastCheckpointStep: run.checkpoints.lastStep)
        }
        let clip: Float = cfg.optim.gradClip > 0 && norm > Double(cfg.optim.gradClip) ? cfg.optim.gradClip / Float(norm) : 1
        let lr = cfg.schedule.lr(step: step + 1, total: run.totalSteps, peak: cfg.optim.lr)
        run.optimizer.update(params: run.trainable.weights, grads: grads, lr: lr, hyper: cfg.optim.hyper, gradScale: clip)
        run.progress.step += 1
        run.progress.stepInEpoch += 1
        run.progress.learningRate = Double(lr)
        run.progress.valLoss = .nan
        run.sessionSteps += 1
        let dt = now() - stepStart
        // The first step of a session pays for first-touch page faults: leave it out of the ETA.
        if run.sessionSteps > 1 { run.timedSeconds += dt; run.timedTokens += totals[1] }
        run.summary.tokens += Int(totals[1])
        let eta = ProgressLine.estimatedRemaining(stepsLeft: run.totalSteps - run.progress.step, stepsTimed: max(run.sessionSteps - 1, 1),
                                                  secondsTimed: run.sessionSteps > 1 ? run.timedSeconds : dt)
        let line = ProgressLine(step: run.progress.step, totalSteps: run.totalSteps, loss: meanLoss,
                                learningRate: Double(lr), gradNorm: norm, stepSeconds: dt, tokensPerSecond: totals[1] / dt,
                                etaSeconds: eta, elapsedSeconds: run.elapsedBefore + now() - run.sessionStart)
        log.step(line, tokens: run.summary.tokens, epoch: run.progress.epoch, everySteps: cfg.logging.everySteps)
    }
}
