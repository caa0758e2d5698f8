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

extension Trainer {
    /// `r=8 alpha=16 rslora=false targets=q_proj,k_proj` for LoRA, empty for full fine-tuning:
    /// what must match for a checkpoint's adapters to load.
    static func adapterDescription(_ lora: LoRAConfig?) -> String {
        guard let c = lora else { return "" }
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
    func checkCompatible(_ reader: CheckpointReader, modelHash: String, fingerprint: String) throws {
        let m = reader.manifest
        func mismatch(_ message: String) -> ResumeMismatch { ResumeMismatch(path: reader.path, message: message) }
        if m.modelHash != modelHash {
            throw mismatch("it was trained from another base model (\(m.model), \(m.modelHash)); this run's model \(config.model) is \(modelHash)")
        }
        let changes = try checkConfigCompatible(reader)
        if reader.progress.dataFingerprint != fingerprint {
            throw mismatch("the training data differ from the checkpoint's (data.train, data.format, data.max_seq_len, the template or the tokenizer changed)")
        }
        if !changes.isEmpty {
            say("resume: changed since the checkpoint: " + changes.map(\.description).joined(separator: "; "))
        }
    }

    /// The part of `checkCompatible` that needs neither the model nor the data (method, adapter
    /// shape, data order), so that `--resume PATH` is judged before they load. Returns the
    /// config keys that changed and may.
    func checkConfigCompatible(_ reader: CheckpointReader) throws -> [ConfigDiff.Change] {
        let m = reader.manifest
        func mismatch(_ message: String) -> ResumeMismatch { ResumeMismatch(path: reader.path, message: message) }
        if m.method != config.method.rawValue {
            throw mismatch("it was written by a \(m.method) run; this run's method is \(config.method.rawValue)")
        }
        let adapter = Self.adapterDescription(config.method == .lora ? config.lora.coreConfig : nil)
        if m.adapter != adapter {
            throw mismatch("its LoRA adapter is \(m.adapter); this run's is \(adapter) (lora.r, lora.alpha, lora.rslora and lora.targets cannot change)")
        }
        let changes = ConfigDiff.changes(from: reader.config, to: config.yaml())
        if let fixed = changes.first(where: { Self.dataOrderKeys.contains($0.key) }) {
            throw mismatch("\(fixed.key) changed (\(fixed.old) -> \(fixed.new)); it fixes the data order the checkpoint's position refers to")
        }
        return changes
    }

    /// `--resume PATH`, judged on rank 0 before the model and data load: the file exists, is a
    /// dtrain checkpoint, and fits this run's method, adapter and data order.
    func precheckResume(_ path: String) throws {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw CheckpointError(path: path, message: "no such file (--resume takes `auto` or a checkpoint .h5 file)")
        }
        if isDirectory.boolValue {
            throw CheckpointError(path: path, message: "is a directory; --resume takes `auto` or a checkpoint .h5 file (e.g. \(path)/latest's target)")
        }
        _ = try checkConfigCompatible(try CheckpointReader(path: path))
    }

    /// Loads the checkpoint `source` names into the model, optimizer and `progress` on every
    /// rank (rank 0 reads and verifies it, then broadcasts). Returns false when `auto` finds no
    /// checkpoint (a fresh start). Under `auto`, files that do not verify are skipped with a
    /// warning; a checkpoint that verifies but belongs to another run is an error either way.
    func restore(from source: ResumeSource, into progress: inout TrainingProgress, model: LlamaModel,
                 optimizer: AdamWState, checkpoints: CheckpointState) throws -> Bool {
        let trainable = model.trainable!
        // Rank 0 alone reads; when it rejects the checkpoint, every rank stops with its message.
        var outcome = RestoreOutcome()
        if comm.rank == 0 {
            do {
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
                        try checkCompatible(reader, modelHash: checkpoints.modelHash, fingerprint: progress.dataFingerprint)
                        try reader.load(expected: trainable.specs, weights: trainable.weights, adamM: optimizer.m, adamV: optimizer.v)
                    } catch let error as CheckpointError where source == .auto {
                        printError("warning: resume: skipping \(path): \(error.message)")
                        skipped += 1
                        continue
                    }
                    let p = reader.progress
                    outcome.progress = p
                    let ranks = reader.manifest.worldSize == comm.worldSize ? "" :
                        " (written by \(reader.manifest.worldSize) rank(s), now \(comm.worldSize): gradient accumulation adapts, the global batch stays)"
                    say("resume: continuing from \(path) after step \(p.step), epoch \(p.epoch)\(ranks)")
                    break
                }
                if outcome.progress == nil && skipped > 0 {
                    throw CheckpointError(path: checkpoints.directory.url.path, message: "none of the \(skipped) checkpoint(s) verifies (see the warnings); nothing to resume from")
                }
                // Accepted: only now is anything in the output directory touched (the partial
                // files of a write that was killed).
                checkpoints.directory.removeTemporaries()
            } catch {
                outcome = RestoreOutcome(progress: nil, rejection: userFacingDescription(error))
            }
        }
        try comm.broadcast(&outcome, root: 0)
        if let rejection = outcome.rejection { throw SetupFailure(message: rejection) }
        guard let p = outcome.progress else { return false }
        if comm.worldSize > 1 {
            for buffer in [trainable.weights, optimizer.m, optimizer.v] { comm.broadcast(buffer.base, count: buffer.count, root: 0) }
        }
        // Where training stands comes from the checkpoint; the run's own seed, data fingerprint
        // and length stay (checkCompatible held the first two equal; the length may have grown),
        // and no validation has run in this process yet.
        let own = progress
        progress = p
        progress.seed = own.seed
        progress.dataFingerprint = own.dataFingerprint
        progress.totalSteps = own.totalSteps
        progress.valLoss = own.valLoss
        optimizer.step = p.optimizerStep
        checkpoints.lastStep = progress.step
        return true
    }
}

/// What rank 0 made of the checkpoint to resume from, sent to every rank as one record: the
/// progress it holds (nil: none found, a fresh start), or why it was rejected.
struct RestoreOutcome: Codable {
    var progress: TrainingProgress?
    var rejection: String?
}
