import ArgumentParser
import DTrainIO
import DTrainTrainer
import Foundation

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print a checkpoint's manifest, training state and trainable-parameter SHA-256, after verifying its checksums.")
    @Argument(help: "A checkpoint file (<output_dir>/checkpoints/step-*.h5).") var checkpoint: String
    @Flag(help: "Print one JSON object on stdout (keys include step, world_size, param_sha256).") var json = false
    @Flag(help: "Skip reading the tensors against their checksums (only the headers are read).") var noVerify = false

    func run() throws {
        try runReportingErrors { try inspect() }
    }

    /// What the checkpoint holds, after verifying every dataset unless --no-verify.
    func inspect() throws {
        let reader = try CheckpointReader(path: checkpoint)
        let verified = !noVerify ? try reader.verify() : 0
        let m = reader.manifest, p = reader.progress
        func finite(_ v: Double) -> Any { v.isFinite ? v : NSNull() }
        if json {
            let object: [String: Any] = [
                "path": checkpoint, "step": p.step, "epoch": p.epoch, "step_in_epoch": p.stepInEpoch, "total_steps": p.totalSteps,
                "world_size": m.worldSize, "threads": m.threads, "param_sha256": m.paramSHA256,
                "parameters": reader.parameterCount, "tensors": reader.specs.count, "verified": !noVerify,
                "manifest": [
                    "format_version": m.formatVersion, "dtrain_version": m.dtrainVersion, "model": m.model, "model_hash": m.modelHash,
                    "method": m.method, "adapter": m.adapter, "precision": m.precision, "created": m.created,
                ] as [String: Any],
                "state": [
                    "tokens_seen": p.tokensSeen, "optimizer_step": p.optimizerStep, "learning_rate": p.learningRate,
                    "seed": p.seed, "data_fingerprint": p.dataFingerprint, "best_metric": finite(p.bestMetric),
                    "best_step": p.bestStep, "since_improvement": p.sinceImprovement, "initial_val_loss": finite(p.initialValLoss),
                    "val_loss": finite(p.valLoss), "elapsed_s": p.elapsedSeconds,
                ] as [String: Any],
            ]
            let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
            print(String(decoding: data, as: UTF8.self))
            return
        }
        print("checkpoint \(checkpoint)")
        print("  step \(p.step)/\(p.totalSteps) (epoch \(p.epoch), \(p.stepInEpoch) steps into it), \(p.tokensSeen) tokens, lr \(p.learningRate)")
        print("  model \(m.model) (\(m.modelHash)), method \(m.method)\(m.adapter.isEmpty ? "" : " \(m.adapter)")")
        print("  written by dtrain \(m.dtrainVersion) (format \(m.formatVersion)) with \(m.worldSize) rank(s) x \(m.threads) thread(s), \(m.precision), \(m.created)")
        print("  \(reader.specs.count) trainable tensors, \(reader.parameterCount) values; param_sha256 \(m.paramSHA256)")
        if p.bestStep >= 0 { print(String(format: "  best validation loss %.4f at step %d", p.bestMetric, p.bestStep)) }
        if p.valLoss.isFinite { print(String(format: "  validation loss at this step %.4f", p.valLoss)) }
        print(!noVerify ? "  verified: \(verified) datasets match their SHA-256 checksums" : "  not verified (--no-verify)")
    }
}
