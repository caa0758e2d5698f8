import DTrainCore
import DTrainIO
import Foundation

/// `dtrain bench checkpoint`: write and read throughput of a checkpoint holding a model's full
/// training state (every weight and both AdamW moments), as a full fine-tune would write it.
public enum CheckpointBenchmark {
    public struct Result {
        public var bytes = 0
        public var writeSeconds: [Double] = []
        public var readSeconds: [Double] = []
        public var directory = ""
        /// Best-of write throughput in bytes per second.
        public var writeBytesPerSecond: Double { Double(bytes) / (writeSeconds.min() ?? .infinity) }
        public var readBytesPerSecond: Double { Double(bytes) / (readSeconds.min() ?? .infinity) }
        /// Training time lost at one checkpoint every `minutes` (the median write stalls training).
        public func lostShare(everyMinutes minutes: Double) -> Double {
            let sorted = writeSeconds.sorted()
            return sorted.isEmpty ? 0 : sorted[sorted.count / 2] / (minutes * 60)
        }
    }

    public static func measure(modelPath: String, directory: String, repeats: Int, progress: (String) -> Void) throws -> Result {
        let loaded = try ModelLoader.load(path: modelPath)
        let layout = ParameterLayout(config: loaded.config)
        let n = layout.count
        // Moments with realistic, incompressible values; first touch paid here, not in the timing.
        let m = FloatBuffer(count: n), v = FloatBuffer(count: n)
        for i in 0..<n { m.base[i] = loaded.params.base[i] * 1e-3; v.base[i] = loaded.params.base[i] * loaded.params.base[i] * 1e-6 }
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        var result = Result(bytes: 3 * n * MemoryLayout<Float>.stride, directory: directory)
        var progressState = TrainingProgress()
        progressState.step = 1
        let manifest = CheckpointManifest(dtrainVersion: dtrainVersion, model: modelPath, modelHash: "benchmark", method: "full",
                                          adapter: "", worldSize: 1, threads: ComputeThreads.available)
        let path = directory + "/bench-checkpoint.h5"
        let check = FloatBuffer(count: n), checkM = FloatBuffer(count: n), checkV = FloatBuffer(count: n)
        defer { try? FileManager.default.removeItem(atPath: path) }
        for r in 0..<repeats {
            let w = try CheckpointFile.write(to: path, manifest: manifest, progress: progressState, config: "benchmark: true\n",
                                             specs: layout.specs, weights: loaded.params, adamM: m, adamV: v)
            result.writeSeconds.append(w.seconds)
            progress(String(format: "run %d/%d: wrote %.2f GB in %.2f s (tensor bytes %.2f s, then waiting for SHA-256 %.2f s, HDF5 close + fsync + rename %.2f s)",
                            r + 1, repeats, Double(result.bytes) / 1e9, w.seconds, w.phases.write, w.phases.hashWait, w.phases.sync))
            // Reading back through the page cache would measure memory, not the disk: drop it.
            dropCache(path)
            let t0 = Date()
            try CheckpointReader(path: path).load(expected: layout.specs, weights: check, adamM: checkM, adamV: checkV)
            result.readSeconds.append(Date().timeIntervalSince(t0))
            progress(String(format: "run %d/%d: read and verified in %.2f s", r + 1, repeats, result.readSeconds.last!))
        }
        return result
    }

    /// Asks the kernel to evict a file's pages (after they are on disk) so a read hits the disk.
    static func dropCache(_ path: String) {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { return }
        fdatasync(fd)
        posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED)
        close(fd)
    }

    public static func report(_ r: Result, json: Bool) {
        if json {
            let object: [String: Any] = [
                "bytes": r.bytes, "write_seconds": r.writeSeconds, "read_seconds": r.readSeconds,
                "write_bytes_per_s": r.writeBytesPerSecond, "read_bytes_per_s": r.readBytesPerSecond,
                "lost_share_every_10_min": r.lostShare(everyMinutes: 10), "directory": r.directory,
            ]
            if let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) { print(String(decoding: data, as: UTF8.self)) }
            return
        }
        print(String(format: "checkpoint of the full training state: %.2f GB (weights + AdamW m and v, float32) in %@", Double(r.bytes) / 1e9, r.directory))
        print(String(format: "write (temporary file, fsync, rename, directory fsync; SHA-256 of every dataset): best %.2f s = %.2f GB/s; all: %@",
                     r.writeSeconds.min() ?? 0, r.writeBytesPerSecond / 1e9, r.writeSeconds.map { String(format: "%.2f", $0) }.joined(separator: ", ")))
        print(String(format: "read + verify (page cache dropped): best %.2f s = %.2f GB/s", r.readSeconds.min() ?? 0, r.readBytesPerSecond / 1e9))
        print(String(format: "training time lost at one checkpoint per 10 minutes: %.2f%% (median write)", 100 * r.lostShare(everyMinutes: 10)))
    }
}
