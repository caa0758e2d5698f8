import DTrainCore
import DTrainData
import DTrainDistributed
import DTrainIO
import Foundation

/// Where `dtrain train --resume` continues from.
public enum ResumeSource: Equatable, Sendable {
    /// The newest checkpoint under `<output_dir>/checkpoints/` that verifies; a fresh start if
    /// there is none.
    case auto
    /// That file.
    case path(String)

    /// `auto` or a path.
    public init(argument: String) { self = argument == "auto" ? .auto : .path(argument) }
}

/// A checkpoint that exists and verifies but cannot continue this run (another model, method,
/// adapter shape, training data or data order).
public struct ResumeMismatch: Error, CustomStringConvertible {
    public let path: String
    public let message: String
    public var description: String { "cannot resume from \(path): \(message)" }
}

/// The checkpoints a run writes: when, where, and what is kept. Rank 0 writes; every rank
/// keeps the same `lastStep`.
final class CheckpointState {
    let directory: CheckpointDirectory
    /// Hash of the base weights as loaded: the model's identity in every manifest.
    let modelHash: String
    let threads: Int
    /// Step of the newest checkpoint written or resumed from (-1: none), the same on every rank.
    var lastStep = -1
    /// Step of the newest checkpoint rank 0's rescue thread wrote (-1: none); `write` does not
    /// write that step again.
    private(set) var rescuedStep = -1
    private var lastTime = now()

    init(directory: CheckpointDirectory, modelHash: UInt64, threads: Int) {
        self.directory = directory
        self.modelHash = String(format: "fnv1a64:%016llx", modelHash)
        self.threads = threads
    }

    /// Whether `checkpoint.every_minutes` has passed since the last checkpoint (or the start).
    func dueByTime(everyMinutes: Double) -> Bool {
        everyMinutes > 0 && now() - lastTime >= everyMinutes * 60
    }

    /// Writes the checkpoint of `progress.step` (rank 0), marks it latest, prunes old ones, and
    /// returns its path (on every rank).
    func write(progress: TrainingProgress, trainer: Trainer, model: LlamaModel, optimizer: AdamWState,
               hook: ((Int, Int) -> Void)?) throws -> String {
        let path = directory.path(step: progress.step)
        if trainer.comm.rank == 0 && rescuedStep != progress.step {
            let (report, removed) = try writeFile(path, progress: progress, trainer: trainer, model: model, optimizer: optimizer, hook: hook)
            trainer.say(String(format: "checkpoint: step %d -> %@ (%.0f MB in %.2f s, %.0f MB/s)%@", progress.step, path,
                               Double(report.bytes) / 1e6, report.seconds, Double(report.bytes) / 1e6 / max(report.seconds, 1e-9),
                               removed.isEmpty ? "" : "; removed \(removed.map { URL(fileURLWithPath: $0).lastPathComponent }.joined(separator: ", "))"))
        }
        lastStep = progress.step
        lastTime = now()
        return path
    }

    /// Rank 0's rescue (see `RescueCheckpointer`): writes the checkpoint of `progress.step` unless
    /// one of that step exists, without the other ranks. Errors are reported, not thrown: the
    /// stop at the next step boundary may still write one.
    func rescue(progress: TrainingProgress, signal: Int32, trainer: Trainer, model: LlamaModel, optimizer: AdamWState) {
        guard progress.step > max(lastStep, rescuedStep), progress.step > 0 else { return }
        let path = directory.path(step: progress.step)
        do {
            let (report, _) = try writeFile(path, progress: progress, trainer: trainer, model: model, optimizer: optimizer, hook: nil)
            rescuedStep = progress.step
            printError(String(format: "dtrain: %@: rescue checkpoint of step %d (the last completed) -> %@ in %.2f s",
                              StopRequest.name(signal), progress.step, path, report.seconds))
        } catch {
            printError("dtrain: \(StopRequest.name(signal)): rescue checkpoint of step \(progress.step) failed: \(error)")
        }
    }

    /// Writes, marks latest and prunes (rank 0); returns the write's report and the files removed.
    private func writeFile(_ path: String, progress: TrainingProgress, trainer: Trainer, model: LlamaModel,
                           optimizer: AdamWState, hook: ((Int, Int) -> Void)?) throws -> (CheckpointFile.WriteReport, [String]) {
        let trainable = model.trainable!
        let manifest = CheckpointManifest(
            dtrainVersion: dtrainVersion, model: trainer.config.model, modelHash: modelHash,
            method: trainer.config.method.rawValue, adapter: Trainer.adapterDescription(model),
            worldSize: trainer.comm.worldSize, threads: threads)
        let report = try CheckpointFile.write(
            to: path, manifest: manifest, progress: progress, config: trainer.config.yaml(), specs: trainable.specs,
            weights: trainable.weights, adamM: optimizer.m, adamV: optimizer.v, afterDataset: hook)
        try directory.markLatest(path)
        return (report, directory.prune(keepLast: trainer.config.checkpoint.keepLast, justWritten: path))
    }
}

extension Trainer {
    /// `r=8 alpha=16 rslora=false targets=q_proj,k_proj` for LoRA, empty for full fine-tuning:
    /// what must match for a checkpoint's adapters to load.
    static func adapterDescription(_ model: LlamaModel) -> String {
        guard let c = model.lora?.config else { return "" }
        return "r=\(c.rank) alpha=\(c.alpha) rslora=\(c.useRSLoRA) targets=\(c.targets.map(\.rawValue).joined(separator: ","))"
    }

    /// FNV-1a over every training example's ids and loss mask, in file order: the same data
    /// tokenized the same way gives the same fingerprint.
    static func fingerprint(_ examples: [SequenceExample]) -> String {
        var h = FNV1a()
        for e in examples {
            h.mix(UInt64(e.ids.count))
            for id in e.ids { h.mix(UInt64(UInt32(bitPattern: id))) }
            for m in e.lossMask { h.mix(UInt64(m)) }
        }
        return String(format: "fnv1a64:%016llx", h.value)
    }

    /// Keys whose change would make the checkpoint's position in the data order meaningless.
    static let dataOrderKeys = ["seed", "batch.global_examples", "batch.global_tokens"]

    /// Why `reader` cannot continue this run, if it cannot.
    func checkCompatible(_ reader: CheckpointReader, modelHash: String, model: LlamaModel, fingerprint: String) throws {
        let m = reader.manifest
        func mismatch(_ message: String) -> ResumeMismatch { ResumeMismatch(path: reader.path, message: message) }
        if m.modelHash != modelHash {
            throw mismatch("it was trained from another base model (\(m.model), \(m.modelHash)); this run's model \(config.model) is \(modelHash)")
        }
        if m.method != config.method.rawValue {
            throw mismatch("it was written by a \(m.method) run; this run's method is \(config.method.rawValue)")
        }
        let adapter = Self.adapterDescription(model)
        if m.adapter != adapter {
            throw mismatch("its LoRA adapter is \(m.adapter); this run's is \(adapter) (lora.r, lora.alpha, lora.rslora and lora.targets cannot change)")
        }
        if reader.progress.dataFingerprint != fingerprint {
            throw mismatch("the training data differ from the checkpoint's (data.train, data.format, data.max_seq_len, the template or the tokenizer changed)")
        }
        let changes = ConfigDiff.changes(from: reader.config, to: config.yaml())
        if let fixed = changes.first(where: { Self.dataOrderKeys.contains($0.key) }) {
            throw mismatch("\(fixed.key) changed (\(fixed.old) -> \(fixed.new)); it fixes the data order the checkpoint's position refers to")
        }
        if !changes.isEmpty {
            say("resume: changed since the checkpoint: " + changes.map(\.description).joined(separator: "; "))
        }
    }

    /// Loads the checkpoint `source` names into the model, optimizer and `progress` on every
    /// rank (rank 0 reads and verifies it, then broadcasts). Returns false when `auto` finds no
    /// checkpoint (a fresh start). Under `auto`, files that do not verify are skipped with a
    /// warning; a checkpoint that verifies but belongs to another run is an error either way.
    func restore(from source: ResumeSource, into progress: inout TrainingProgress, model: LlamaModel,
                 optimizer: AdamWState, checkpoints: CheckpointState) throws -> Bool {
        let trainable = model.trainable!
        // found, step, epoch, step_in_epoch, tokens, optimizer step, best metric, best step,
        // since improvement, initial val loss, elapsed, learning rate.
        var state = [Double](repeating: 0, count: 12)
        // Rank 0 alone reads; when it rejects the checkpoint, every rank stops with its message.
        var rejection = ""
        if comm.rank == 0 {
            do {
                checkpoints.directory.removeTemporaries()
                let candidates: [String]
                switch source {
                case .auto: candidates = checkpoints.directory.list().map(\.path)
                case .path(let p): candidates = [p]
                }
                if candidates.isEmpty { say("resume: no checkpoint in \(checkpoints.directory.url.path); starting from step 0") }
                var skipped = 0
                for path in candidates {
                    let reader: CheckpointReader
                    do {
                        reader = try CheckpointReader(path: path)
                        try checkCompatible(reader, modelHash: checkpoints.modelHash, model: model, fingerprint: progress.dataFingerprint)
                        try reader.load(expected: trainable.specs, weights: trainable.weights, adamM: optimizer.m, adamV: optimizer.v)
                    } catch let error as CheckpointError where source == .auto {
                        printError("warning: resume: skipping \(path): \(error.message)")
                        skipped += 1
                        continue
                    }
                    let p = reader.progress
                    state = [1, Double(p.step), Double(p.epoch), Double(p.stepInEpoch), Double(p.tokensSeen), Double(p.optimizerStep),
                             p.bestMetric, Double(p.bestStep), Double(p.sinceImprovement), p.initialValLoss, p.elapsedSeconds, p.learningRate]
                    let ranks = reader.manifest.worldSize == comm.worldSize ? "" :
                        " (written by \(reader.manifest.worldSize) rank(s), now \(comm.worldSize): gradient accumulation adapts, the global batch stays)"
                    say("resume: continuing from \(path) after step \(p.step), epoch \(p.epoch)\(ranks)")
                    break
                }
                if state[0] == 0 && skipped > 0 {
                    throw CheckpointError(path: checkpoints.directory.url.path, message: "none of the \(skipped) checkpoint(s) verifies (see the warnings); nothing to resume from")
                }
            } catch {
                state[0] = -1
                rejection = "\(error)"
            }
        }
        comm.broadcast(&state, root: 0)
        if state[0] == -1 {
            comm.broadcast(&rejection, root: 0)
            throw SetupFailure(message: rejection)
        }
        guard state[0] == 1 else { return false }
        if comm.worldSize > 1 {
            for buffer in [trainable.weights, optimizer.m, optimizer.v] { comm.broadcast(buffer.base, count: buffer.count, root: 0) }
        }
        progress.step = Int(state[1])
        progress.epoch = Int(state[2])
        progress.stepInEpoch = Int(state[3])
        progress.tokensSeen = Int(state[4])
        optimizer.step = Int(state[5])
        progress.optimizerStep = optimizer.step
        progress.bestMetric = state[6]
        progress.bestStep = Int(state[7])
        progress.sinceImprovement = Int(state[8])
        progress.initialValLoss = state[9]
        progress.elapsedSeconds = state[10]
        progress.learningRate = state[11]
        checkpoints.lastStep = progress.step
        return true
    }
}
