import DTrainIO
import Foundation

/// The checkpoints of one run: `<output_dir>/checkpoints/step-00000120.h5`, plus `latest`, a
/// one-line file naming the newest complete checkpoint (rewritten atomically after each write).
///
/// Only rank 0 touches it. Files are written atomically by `CheckpointFile.write`; what a killed
/// writer leaves behind is a hidden `.step-….h5.tmp-<pid>` file, which listing ignores and
/// `removeTemporaries` deletes.
public struct CheckpointDirectory {
    public let url: URL

    public init(outputDir: String) {
        url = URL(fileURLWithPath: outputDir).appendingPathComponent("checkpoints")
    }

    /// The file for the checkpoint after `step` optimizer steps.
    public func path(step: Int) -> String {
        url.appendingPathComponent(String(format: "step-%08d.h5", step)).path
    }

    /// Complete checkpoint files, newest (highest step) first.
    public func list() -> [(step: Int, path: String)] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: url.path)) ?? []
        return names.compactMap { name -> (Int, String)? in
            guard name.hasPrefix("step-"), name.hasSuffix(".h5"),
                  let step = Int(name.dropFirst("step-".count).dropLast(".h5".count)) else { return nil }
            return (step, url.appendingPathComponent(name).path)
        }.sorted { $0.0 > $1.0 }
    }

    /// Deletes temporary files left by a writer that was killed.
    public func removeTemporaries() {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: url.path)) ?? []
        for name in names where name.hasPrefix(".step-") && name.contains(".h5.tmp-") {
            try? FileManager.default.removeItem(at: url.appendingPathComponent(name))
        }
    }

    /// Records `path` as the newest complete checkpoint.
    public func markLatest(_ path: String) throws {
        try AtomicFile.write(Data((URL(fileURLWithPath: path).lastPathComponent + "\n").utf8),
                             to: url.appendingPathComponent("latest").path)
    }

    /// Deletes all but the newest `keepLast` checkpoints and the best one (lowest validation
    /// loss recorded in a checkpoint). `justWritten` is never deleted, so there is always at
    /// least one good checkpoint. Returns the deleted paths.
    @discardableResult
    public func prune(keepLast: Int, justWritten: String) -> [String] {
        let all = list()
        guard all.count > keepLast else { return [] }
        var keep = Set(all.prefix(max(1, keepLast)).map(\.path))
        keep.insert(justWritten)
        var best: (loss: Double, path: String)? = nil
        for c in all {
            guard let loss = try? CheckpointReader(path: c.path).progress.valLoss, loss.isFinite else { continue }
            if best == nil || loss < best!.loss { best = (loss, c.path) }
        }
        if let best { keep.insert(best.path) }
        var removed: [String] = []
        for c in all where !keep.contains(c.path) {
            if (try? FileManager.default.removeItem(atPath: c.path)) != nil { removed.append(c.path) }
        }
        return removed
    }
}
