import DTrainCore
import Foundation

// One training checkpoint is one HDF5 file (layout documented in the README, readable with h5dump):
//
//   /config                     string   the run's effective config (YAML)
//   /tensors                    string   the trainable tensors in flat-buffer order, "name shape offset" per line
//   /weights/<tensor name>      float32  trainable weights (LoRA adapters in PEFT names, or the whole model in HF names)
//   /adam_m/<tensor name>       float32  AdamW first moment
//   /adam_v/<tensor name>       float32  AdamW second moment
//   /state                      group    attributes: step, epoch, step_in_epoch, total_steps, tokens_seen,
//                                        optimizer_step, learning_rate, seed, data_fingerprint, best_metric,
//                                        best_step, since_improvement, initial_val_loss, val_loss, elapsed_s
//   /manifest                   group    attributes: format_version, dtrain_version, model, model_hash, method,
//                                        adapter, world_size, threads, precision, created, param_sha256
//   /manifest/checksums         string   "sha256  /dataset" per line (sha256sum's format), one per dataset above

/// Who wrote a checkpoint, from what, and how (the `/manifest` group's attributes).
public struct CheckpointManifest: Equatable, Sendable {
    /// Version of this layout; readers refuse newer ones.
    public static let currentFormat = 1
    public var formatVersion = CheckpointManifest.currentFormat
    public var dtrainVersion: String
    /// The base model's path as the run config gave it.
    public var model: String
    /// A hash of the base model's weights as loaded: the model's identity, whatever its path.
    public var modelHash: String
    /// `full` or `lora`.
    public var method: String
    /// The adapter's shape for LoRA (`r=8 alpha=16 rslora=false targets=q_proj,...`), empty for full.
    public var adapter: String
    public var worldSize: Int
    public var threads: Int
    public var precision = "float32"
    /// ISO-8601 time of writing.
    public var created: String
    /// SHA-256 of the trainable weights' float32 bytes, concatenated in `/tensors` order.
    public var paramSHA256 = ""

    public init(dtrainVersion: String, model: String, modelHash: String, method: String, adapter: String,
                worldSize: Int, threads: Int, created: String = ISO8601DateFormatter().string(from: Date())) {
        self.dtrainVersion = dtrainVersion
        self.model = model
        self.modelHash = modelHash
        self.method = method
        self.adapter = adapter
        self.worldSize = worldSize
        self.threads = threads
        self.created = created
    }
}

/// Where training stands (the `/state` group's attributes): with the weights and moments, all a
/// run needs to continue exactly where it stopped.
public struct TrainingProgress: Equatable, Sendable, Codable {
    /// Optimizer steps completed.
    public var step = 0
    /// The epoch the next step belongs to, and the steps of it already taken: the position in
    /// the data order, which derives from (seed, epoch).
    public var epoch = 0
    public var stepInEpoch = 0
    /// The run's length when the checkpoint was written (the schedule's horizon).
    public var totalSteps = 0
    public var tokensSeen = 0
    /// AdamW's bias-correction counter.
    public var optimizerStep = 0
    /// Scheduler state: the learning rate of the last step (the schedule itself is a function of
    /// the step and the config).
    public var learningRate = 0.0
    /// RNG state: every random draw derives from (seed, epoch, step, index), so the seed is all of it.
    public var seed: UInt64 = 0
    /// A hash of the tokenized training examples; resuming on other data is an error.
    public var dataFingerprint = ""
    /// Early-stopping state.
    public var bestMetric = Double.infinity
    public var bestStep = -1
    public var sinceImprovement = 0
    public var initialValLoss = Double.nan
    /// Validation loss measured at this step (NaN when there was none): ranks the "best" checkpoint.
    public var valLoss = Double.nan
    public var elapsedSeconds = 0.0
    /// The gradient all-reduce's bucket size (floats), chosen from the links at the run's first
    /// start and kept on resume: the bucket sizes decide the MPI algorithm, and so the order of
    /// summation, of each bucket. Nil in checkpoints written before it was recorded, and for one rank.
    public var allReduceBucketFloats: Int? = nil

    public init() {}
}

/// A checkpoint file that is not what it should be.
public struct CheckpointError: Error, CustomStringConvertible {
    public let path: String
    public let message: String
    public init(path: String, message: String) {
        self.path = path
        self.message = message
    }
    public var description: String { "checkpoint \(path): \(message)" }
}

/// Writes and reads checkpoint files.
public enum CheckpointFile {
    /// What `write` measured.
    public struct WriteReport {
        public let paramSHA256: String
        public let bytes: Int
        public let seconds: Double
        /// Phases: writing the tensor bytes, then waiting for the digests computed meanwhile, then
        /// making the file durable (HDF5 close, fsync, rename, directory fsync).
        public var phases: (write: Double, hashWait: Double, sync: Double) = (0, 0, 0)
    }

    /// Writes a checkpoint atomically: to a temporary file beside `path`, closed, fsynced, renamed
    /// into place, directory fsynced. A crash at any moment leaves either no file at `path` or a
    /// complete one (plus perhaps a `.tmp` file, which readers ignore). SHA-256 digests of every
    /// dataset are computed on a second thread while the first writes. `afterDataset(i, n)` is
    /// called after each tensor dataset (fault-injection tests stop the writer there).
    @discardableResult
    public static func write(to path: String, manifest: CheckpointManifest, progress: TrainingProgress, config: String,
                             specs: [ParameterSpec], weights: FloatBuffer, adamM: FloatBuffer, adamV: FloatBuffer,
                             afterDataset: ((Int, Int) -> Void)? = nil) throws -> WriteReport {
        let start = Date()
        let url = URL(fileURLWithPath: path)
        let dir = url.deletingLastPathComponent().path
        try FileOperation.createDirectory(dir)
        let tmp = AtomicFile.temporaryPath(for: path)
        let groups = [("weights", weights), ("adam_m", adamM), ("adam_v", adamV)]
        let tensorTable = specs.map { "\($0.name) \($0.shape.map(String.init).joined(separator: "x")) \($0.offset)" }.joined(separator: "\n")

        // Digests on two more threads while this one writes (nothing changes the buffers
        // meanwhile): the weights' overall digest, and one per dataset.
        let digests = Digests(count: groups.count * specs.count)
        let hashing = DispatchGroup()
        DispatchQueue.global().async(group: hashing) {
            digests.params = SHA256Digest.hex(floats: weights.base, count: weights.count)
        }
        DispatchQueue.global().async(group: hashing) {
            for (g, group) in groups.enumerated() {
                for (i, s) in specs.enumerated() {
                    digests.tensors[g * specs.count + i] = SHA256Digest.hex(floats: group.1.pointer(at: s.offset), count: s.count)
                }
            }
        }

        var phases: (write: Double, hashWait: Double, sync: Double) = (0, 0, 0)
        do {
            // HDF5 lays out the file and allocates every tensor's space (block-aligned, never
            // filled); the tensor bytes go straight to the disk (RawFileWriter) at those offsets,
            // and HDF5 writes its metadata, with the checksums, when it closes the file.
            let file = try HDF5File.create(path: tmp, alignment: RawFileWriter.block)
            try file.writeString("/config", config)
            try file.writeString("/tensors", tensorTable)
            var offsets: [Int] = []
            for (name, _) in groups {
                try file.createGroup("/" + name)
                for s in specs { offsets.append(try file.reserveFloats("/\(name)/\(s.name)", shape: s.shape)) }
            }
            let writeStart = Date()
            let raw = try RawFileWriter(path: tmp)
            var written = 0
            for (g, group) in groups.enumerated() {
                for (i, s) in specs.enumerated() {
                    try raw.write(UnsafeRawPointer(group.1.pointer(at: s.offset)), count: s.count * MemoryLayout<Float>.stride,
                                  at: offsets[g * specs.count + i])
                    written += 1
                    afterDataset?(written, groups.count * specs.count)
                }
            }
            phases.write = Date().timeIntervalSince(writeStart)
            hashing.wait()
            phases.hashWait = Date().timeIntervalSince(writeStart) - phases.write
            var lines = ["\(SHA256Digest.hex(string: config))  /config", "\(SHA256Digest.hex(string: tensorTable))  /tensors"]
            for (g, group) in groups.enumerated() {
                for (i, s) in specs.enumerated() { lines.append("\(digests.tensors[g * specs.count + i])  /\(group.0)/\(s.name)") }
            }
            var m = manifest
            m.paramSHA256 = digests.params
            try writeManifest(m, checksums: lines.joined(separator: "\n"), to: file)
            try writeProgress(progress, to: file)
            try file.close()
            let syncStart = Date()
            try AtomicFile.commit(temporary: tmp, to: path)
            phases.sync = Date().timeIntervalSince(syncStart)
        } catch {
            hashing.wait()
            unlink(tmp)
            throw error
        }
        let bytes = groups.count * weights.count * MemoryLayout<Float>.stride
        var report = WriteReport(paramSHA256: digests.params, bytes: bytes, seconds: Date().timeIntervalSince(start))
        report.phases = phases
        return report
    }

    /// Results of the hashing thread; read only after its group is waited on.
    private final class Digests: @unchecked Sendable {
        var tensors: [String]
        var params = ""
        init(count: Int) { tensors = Array(repeating: "", count: count) }
    }

    private static func writeManifest(_ m: CheckpointManifest, checksums: String, to file: HDF5File) throws {
        try file.createGroup("/manifest")
        let attributes: [(String, HDF5File.Value)] = [
            ("format_version", .int(Int64(m.formatVersion))), ("dtrain_version", .string(m.dtrainVersion)),
            ("model", .string(m.model)), ("model_hash", .string(m.modelHash)), ("method", .string(m.method)),
            ("adapter", .string(m.adapter)), ("world_size", .int(Int64(m.worldSize))), ("threads", .int(Int64(m.threads))),
            ("precision", .string(m.precision)), ("created", .string(m.created)), ("param_sha256", .string(m.paramSHA256)),
        ]
        for (k, v) in attributes { try file.setAttribute("/manifest", k, v) }
        try file.writeString("/manifest/checksums", checksums)
    }

    private static func writeProgress(_ p: TrainingProgress, to file: HDF5File) throws {
        try file.createGroup("/state")
        let attributes: [(String, HDF5File.Value)] = [
            ("step", .int(Int64(p.step))), ("epoch", .int(Int64(p.epoch))), ("step_in_epoch", .int(Int64(p.stepInEpoch))),
            ("total_steps", .int(Int64(p.totalSteps))), ("tokens_seen", .int(Int64(p.tokensSeen))),
            ("optimizer_step", .int(Int64(p.optimizerStep))), ("learning_rate", .double(p.learningRate)),
            ("seed", .int(Int64(bitPattern: p.seed))), ("data_fingerprint", .string(p.dataFingerprint)),
            ("best_metric", .double(p.bestMetric)), ("best_step", .int(Int64(p.bestStep))),
            ("since_improvement", .int(Int64(p.sinceImprovement))), ("initial_val_loss", .double(p.initialValLoss)),
            ("val_loss", .double(p.valLoss)), ("elapsed_s", .double(p.elapsedSeconds)),
        ]
        for (k, v) in attributes { try file.setAttribute("/state", k, v) }
        if let floats = p.allReduceBucketFloats { try file.setAttribute("/state", "allreduce_bucket_floats", .int(Int64(floats))) }
    }
}

/// An open checkpoint: its manifest, progress and config are read at once; tensors on demand,
/// each checked against its checksum.
public final class CheckpointReader {
    public let path: String
    public let manifest: CheckpointManifest
    public let progress: TrainingProgress
    public let config: String
    /// The trainable tensors as written (names, shapes, flat offsets).
    public let specs: [ParameterSpec]
    /// Dataset path → SHA-256 hex.
    public let checksums: [String: String]
    private let file: HDF5File

    public init(path: String) throws {
        self.path = path
        do {
            file = try HDF5File.open(path: path)
        } catch let e as HDF5Error {
            throw CheckpointError(path: path, message: e.message)
        }
        do {
            let format = try file.int("/manifest", "format_version")
            guard format <= CheckpointManifest.currentFormat else {
                throw CheckpointError(path: path, message: "format version \(format) is newer than this dtrain reads (\(CheckpointManifest.currentFormat)); upgrade dtrain")
            }
            var m = CheckpointManifest(
                dtrainVersion: try file.string("/manifest", "dtrain_version"), model: try file.string("/manifest", "model"),
                modelHash: try file.string("/manifest", "model_hash"), method: try file.string("/manifest", "method"),
                adapter: try file.string("/manifest", "adapter"), worldSize: try file.int("/manifest", "world_size"),
                threads: try file.int("/manifest", "threads"), created: try file.string("/manifest", "created"))
            m.formatVersion = format
            m.precision = try file.string("/manifest", "precision")
            m.paramSHA256 = try file.string("/manifest", "param_sha256")
            manifest = m

            var p = TrainingProgress()
            p.step = try file.int("/state", "step")
            p.epoch = try file.int("/state", "epoch")
            p.stepInEpoch = try file.int("/state", "step_in_epoch")
            p.totalSteps = try file.int("/state", "total_steps")
            p.tokensSeen = try file.int("/state", "tokens_seen")
            p.optimizerStep = try file.int("/state", "optimizer_step")
            p.learningRate = try file.double("/state", "learning_rate")
            p.seed = UInt64(bitPattern: Int64(try file.int("/state", "seed")))
            p.dataFingerprint = try file.string("/state", "data_fingerprint")
            p.bestMetric = try file.double("/state", "best_metric")
            p.bestStep = try file.int("/state", "best_step")
            p.sinceImprovement = try file.int("/state", "since_improvement")
            p.initialValLoss = try file.double("/state", "initial_val_loss")
            p.valLoss = try file.double("/state", "val_loss")
            p.elapsedSeconds = try file.double("/state", "elapsed_s")
            // Absent from checkpoints of one rank and from those written before it was recorded.
            p.allReduceBucketFloats = try? file.int("/state", "allreduce_bucket_floats")
            progress = p

            config = try file.readString("/config")
            let table = try file.readString("/tensors")
            var sums: [String: String] = [:]
            for line in try file.readString("/manifest/checksums").split(separator: "\n") {
                let parts = line.split(separator: " ", maxSplits: 1)
                guard parts.count == 2 else { throw CheckpointError(path: path, message: "malformed checksum line '\(line)'") }
                sums[parts[1].trimmingCharacters(in: .whitespaces)] = String(parts[0])
            }
            checksums = sums
            specs = try table.split(separator: "\n").map { line in
                let f = line.split(separator: " ")
                guard f.count == 3, let offset = Int(f[2]) else { throw CheckpointError(path: path, message: "malformed tensor table line '\(line)'") }
                return ParameterSpec(name: String(f[0]), shape: f[1].split(separator: "x").compactMap { Int($0) }, offset: offset)
            }
            try check("/config", SHA256Digest.hex(string: config))
            try check("/tensors", SHA256Digest.hex(string: table))
        } catch let e as HDF5Error {
            throw CheckpointError(path: path, message: e.message + " (incomplete or corrupted checkpoint)")
        }
    }

    /// Number of trainable values.
    public var parameterCount: Int { specs.reduce(0) { $0 + $1.count } }

    private func check(_ dataset: String, _ digest: String) throws {
        guard let expected = checksums[dataset] else {
            throw CheckpointError(path: path, message: "no checksum for \(dataset) in /manifest/checksums")
        }
        guard expected == digest else {
            throw CheckpointError(path: path, message: "dataset \(dataset) does not match its checksum (corrupted)")
        }
    }

    /// Reads weights and AdamW moments into flat buffers laid out as `expected` says, checking
    /// that the checkpoint holds exactly those tensors with those shapes, and every dataset
    /// against its checksum; then the weights against `param_sha256`. Without `adamM` / `adamV`
    /// (evaluating, not resuming) only the weights are read.
    public func load(expected: [ParameterSpec], weights: FloatBuffer, adamM: FloatBuffer?, adamV: FloatBuffer?) throws {
        let mine = Dictionary(uniqueKeysWithValues: specs.map { ($0.name, $0.shape) })
        for s in expected {
            guard let shape = mine[s.name] else {
                throw CheckpointError(path: path, message: "has no tensor \(s.name): it was written for another method or LoRA shape (\(manifest.method) \(manifest.adapter))")
            }
            guard shape == s.shape else {
                throw CheckpointError(path: path, message: "tensor \(s.name) has shape \(shape), this run's is \(s.shape)")
            }
        }
        if specs.count != expected.count {
            throw CheckpointError(path: path, message: "holds \(specs.count) trainable tensors, this run has \(expected.count) (\(manifest.method) \(manifest.adapter))")
        }
        do {
            for (group, buffer) in [("weights", weights), ("adam_m", adamM), ("adam_v", adamV)] {
                guard let buffer else { continue }
                for s in expected {
                    let name = "/\(group)/\(s.name)"
                    try file.readFloats(name, into: buffer.pointer(at: s.offset), count: s.count)
                    try check(name, SHA256Digest.hex(floats: buffer.pointer(at: s.offset), count: s.count))
                }
            }
        } catch let e as HDF5Error {
            throw CheckpointError(path: path, message: e.message)
        }
        // The digest covers the flat buffer in the writer's order; it applies when the layouts agree.
        if expected.map(\.offset) == specs.map(\.offset),
           SHA256Digest.hex(floats: weights.base, count: weights.count) != manifest.paramSHA256 {
            throw CheckpointError(path: path, message: "weights do not match param_sha256 (corrupted)")
        }
    }

    /// Reads every tensor, checking each against its checksum and the weights against
    /// `param_sha256`; returns the number of datasets checked.
    @discardableResult
    public func verify() throws -> Int {
        let count = parameterCount
        let w = FloatBuffer(count: count), m = FloatBuffer(count: count), v = FloatBuffer(count: count)
        try load(expected: specs, weights: w, adamM: m, adamV: v)
        return 2 + 3 * specs.count
    }
}

extension SHA256Digest {
    /// SHA-256 of a string's UTF-8 bytes, as hex.
    static func hex(string: String) -> String {
        var bytes = Array(string.utf8)
        return hex(&bytes, count: bytes.count)
    }
}
