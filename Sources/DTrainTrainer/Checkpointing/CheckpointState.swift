import DTrainCore
import DTrainDistributed
import DTrainIO
import Foundation

/// The checkpoints a run writes: when, where, and what is kept. Rank 0 writes; every rank
/// keeps the same `lastStep`.
final class CheckpointState {
    let directory: CheckpointDirectory
    /// Hash of the base weights as loaded: the model's identity in every manifest.
    let modelHash: String
    /// What every manifest records besides the state: the run's config (stored whole), the
    /// world, the threads per rank, the adapter shape.
    private let config: RunConfig
    private let comm: Communicator
    private let threads: Int
    private let model: LlamaModel
    private let optimizer: AdamWState
    /// Prints a line on rank 0's console.
    private let say: (String) -> Void
    /// Step of the newest checkpoint written or resumed from (-1: none), the same on every rank.
    var lastStep = -1
    /// Step of the newest checkpoint rank 0's rescue thread wrote (-1: none); `write` does not
    /// write that step again.
    private(set) var rescuedStep = -1
    private var lastTime = now()

    init(config: RunConfig, comm: Communicator, threads: Int, model: LlamaModel, optimizer: AdamWState, modelHash: UInt64,
         say: @escaping (String) -> Void) {
        directory = CheckpointDirectory(outputDir: config.outputDir)
        self.modelHash = Self.modelIdentity(modelHash)
        self.config = config
        self.comm = comm
        self.threads = threads
        self.model = model
        self.optimizer = optimizer
        self.say = say
    }

    /// How a manifest names the base weights a run trained from (`Trainer.hash` of them).
    static func modelIdentity(_ hash: UInt64) -> String { String(format: "fnv1a64:%016llx", hash) }

    /// Whether `checkpoint.every_minutes` has passed since the last checkpoint (or the start).
    func dueByTime() -> Bool {
        config.checkpoint.everyMinutes > 0 && now() - lastTime >= config.checkpoint.everyMinutes * 60
    }

    /// Writes the checkpoint of `progress.step` (rank 0), marks it latest, prunes old ones, and
    /// returns its path (on every rank).
    func write(progress: TrainingProgress, hook: ((Int, Int) -> Void)?) throws -> String {
        let path = directory.path(step: progress.step)
        if comm.rank == 0 && rescuedStep != progress.step {
            let (report, removed) = try writeFile(path, progress: progress, hook: hook)
            say(String(format: "checkpoint: step %d -> %@ (%.0f MB in %.2f s, %.0f MB/s)%@", progress.step, path,
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
    func rescue(progress: TrainingProgress, signal: Int32) {
        guard progress.step > max(lastStep, rescuedStep), progress.step > 0 else { return }
        let path = directory.path(step: progress.step)
        do {
            let (report, _) = try writeFile(path, progress: progress, hook: nil)
            rescuedStep = progress.step
            printError(String(format: "dtrain: %@: rescue checkpoint of step %d (the last completed) -> %@ in %.2f s",
                              StopRequest.name(signal), progress.step, path, report.seconds))
        } catch {
            printError("dtrain: \(StopRequest.name(signal)): rescue checkpoint of step \(progress.step) failed: \(error)")
        }
    }

    /// Writes, marks latest and prunes (rank 0); returns the write's report and the files removed.
    private func writeFile(_ path: String, progress: TrainingProgress,
                           hook: ((Int, Int) -> Void)?) throws -> (CheckpointFile.WriteReport, [String]) {
        let trainable = model.trainable!
        let manifest = CheckpointManifest(
            dtrainVersion: dtrainVersion, model: config.model, modelHash: modelHash,
            method: config.method.rawValue, adapter: Trainer.adapterDescription(model.lora?.config),
            worldSize: comm.worldSize, threads: threads)
        let report = try CheckpointFile.write(
            to: path, manifest: manifest, progress: progress, config: config.yaml(), specs: trainable.specs,
            weights: trainable.weights, adamM: optimizer.m, adamV: optimizer.v, afterDataset: hook)
        try directory.markLatest(path)
        return (report, directory.prune(keepLast: config.checkpoint.keepLast, justWritten: path))
    }
}
