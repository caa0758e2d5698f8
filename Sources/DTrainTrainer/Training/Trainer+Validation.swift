import DTrainCore
import DTrainData
import DTrainDistributed
import Foundation

extension Trainer {
    /// Mean loss over every labelled token of the validation set, computed across all ranks and
    /// reduced in float64 (no logits are kept).
    func validate(_ run: TrainingRun) -> Double {
        let model = run.model, examples = run.data.validation, builder = run.builder
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


    /// The task metrics of the validation answers when `eval.generate_every` says so at this
    /// step (a multiple of it, the start and the end), the same on every rank (each answers a
    /// share of the records); nil otherwise.
    func taskMetrics(_ run: TrainingRun, step: Int) throws -> [String: Double]? {
        let cfg = config.eval
        guard cfg.generateEvery > 0, !run.questions.isEmpty,
              step % cfg.generateEvery == 0 || step == run.totalSteps else { return nil }
        let assets = run.loaded.assets
        let scores = try TaskEvaluation.generated(model: run.model, tokenizer: assets.tokenizer, questions: run.questions,
                                                  stopTokens: assets.stopTokenIDs, maxNewTokens: cfg.maxNewTokens,
                                                  batch: max(8, config.batch.micro), comm: comm)
        var out: [String: Double] = [:]
        for (key, value) in scores.json where cfg.metrics.contains(key) { out[key] = value as? Double }
        return out
    }

    /// The early-stopping score of a validation, lower is better: the loss (val_loss, val_ppl)
    /// or minus a task metric; nil when the metric was not computed at this validation.
    func stoppingScore(loss: Double, tasks: [String: Double]?) -> Double? {
        config.eval.metricIsTask ? tasks?[config.eval.metric].map { -$0 } : loss
    }

    /// Validates when `eval.every_steps` says so and at the end, and decides early stopping:
    /// rank 0 judges the metric and broadcasts [improved, stop]; an improvement writes best/.
    /// Returns whether the run stops early here.
    func validateIfDue(_ run: TrainingRun) throws -> Bool {
        let cfg = config, step = run.progress.step
        let due = cfg.eval.everySteps > 0 && step % cfg.eval.everySteps == 0
        guard !run.data.validation.isEmpty && (due || step == run.totalSteps) else { return false }
        let v = validate(run)
        let tasks = try taskMetrics(run, step: step)
        run.summary.finalValLoss = v
        run.progress.valLoss = v
        var decision = [0, 0] // [improved, stop]
        if isRoot, let score = stoppingScore(loss: v, tasks: tasks) {
            let metric = cfg.eval.metric == "val_ppl" ? exp(score) : score
            let best = cfg.eval.metric == "val_ppl" ? exp(run.progress.bestMetric) : run.progress.bestMetric
            if metric < best - cfg.eval.minDelta || run.progress.bestStep < 0 && metric <= best {
                decision[0] = 1
            }
            if decision[0] == 0 { run.progress.sinceImprovement += 1 } else { run.progress.sinceImprovement = 0 }
            if cfg.eval.patience > 0 && run.progress.sinceImprovement >= cfg.eval.patience && step < run.totalSteps { decision[1] = 1 }
        }
        comm.broadcast(&decision, root: 0)
        if decision[0] == 1 {
            run.progress.bestMetric = stoppingScore(loss: v, tasks: tasks) ?? v
            run.progress.bestStep = step
            run.summary.bestValLoss = v
            run.summary.bestStep = step
            if isRoot { try saveWeights(run.model, run.loaded, to: run.outputDirectory.appendingPathComponent("best").path) }
        }
        let bestShown = cfg.eval.metricIsTask ? -run.progress.bestMetric : run.progress.bestMetric
        let note = decision[0] == 1 ? " (best)" : String(format: " (best %@ %.4f at step %d)", cfg.eval.metric, bestShown, max(run.progress.bestStep, 0))
        log.validation(step: step, loss: v, tasks: tasks, note: note)
        guard decision[1] == 1 else { return false }
        run.summary.stoppedEarly = true
        say("early stopping: no improvement of more than \(cfg.eval.minDelta) in \(cfg.eval.patience) validations")
        return true
    }
}
