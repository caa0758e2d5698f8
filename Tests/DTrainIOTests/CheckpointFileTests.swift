import DTrainCore
import DTrainIO
import DTrainTestSupport
import Foundation
import Testing

/// The checkpoint file: round trip, atomic write, and every kind of damage detected.
@Suite struct CheckpointFileTests {
    let specs = [ParameterSpec(name: "model.layers.0.self_attn.q_proj.lora_A.weight", shape: [4, 6], offset: 0),
                 ParameterSpec(name: "model.layers.0.self_attn.q_proj.lora_B.weight", shape: [6, 4], offset: 24),
                 ParameterSpec(name: "model.norm.weight", shape: [5], offset: 48)]
    var count: Int { 53 }

    func filled(_ seed: Float) -> FloatBuffer {
        let b = FloatBuffer(count: count)
        for i in 0..<count { b.base[i] = seed + Float(i) * 0.25 - Float(i % 7) * 1e-3 }
        return b
    }

    func writeSample(_ dir: URL, step: Int = 7) throws -> (path: String, report: CheckpointFile.WriteReport, progress: TrainingProgress) {
        var progress = TrainingProgress()
        progress.step = step; progress.epoch = 1; progress.stepInEpoch = 2; progress.totalSteps = 20; progress.tokensSeen = 12345
        progress.optimizerStep = step; progress.learningRate = 2.5e-4; progress.seed = 0xFEED_FACE_CAFE_BEEF
        progress.dataFingerprint = "fnv1a64:0123"; progress.bestMetric = 1.25; progress.bestStep = 5; progress.sinceImprovement = 1
        progress.initialValLoss = 3.5; progress.valLoss = .nan; progress.elapsedSeconds = 61.5
        let manifest = CheckpointManifest(dtrainVersion: "test", model: "tiny.gguf", modelHash: "fnv1a64:ab", method: "lora",
                                          adapter: "r=4", worldSize: 2, threads: 1)
        let path = dir.appendingPathComponent("step-\(step).h5").path
        let report = try CheckpointFile.write(to: path, manifest: manifest, progress: progress, config: "seed: 3\nmethod: lora\n",
                                              specs: specs, weights: filled(1), adamM: filled(2), adamV: filled(3))
        return (path, report, progress)
    }

    func scratch() throws -> URL {
        try TestScratch.directory("ckpt")
    }

    @Test func roundTripIsExact() throws {
        let dir = try scratch()
        let (path, report, progress) = try writeSample(dir)
        let reader = try CheckpointReader(path: path)
        #expect(reader.progress.step == progress.step && reader.progress.seed == progress.seed)
        #expect(reader.progress.bestMetric == 1.25 && reader.progress.valLoss.isNaN && reader.progress.tokensSeen == 12345)
        #expect(reader.manifest.worldSize == 2 && reader.manifest.paramSHA256 == report.paramSHA256)
        #expect(reader.config == "seed: 3\nmethod: lora\n")
        #expect(reader.specs == specs)
        let w = FloatBuffer(count: count), m = FloatBuffer(count: count), v = FloatBuffer(count: count)
        try reader.load(expected: specs, weights: w, adamM: m, adamV: v)
        for (got, want) in [(w, filled(1)), (m, filled(2)), (v, filled(3))] {
            let c = compare(Array(UnsafeBufferPointer(start: got.base, count: count)), Array(UnsafeBufferPointer(start: want.base, count: count)), label: "round trip")
            #expect(c.maxAbs == 0, "\(c)")
        }
        let weights = filled(1)
        withExtendedLifetime(weights) { #expect(report.paramSHA256 == SHA256Digest.hex(floats: weights.base, count: count)) }
        // Nothing but the checkpoint is left in the directory: the temporary file was renamed.
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path) == ["step-7.h5"])
    }

    @Test func shaMatchesKnownVector() {
        var abc = Array("abc".utf8)
        #expect(SHA256Digest.hex(&abc, count: 3) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    }

    @Test func truncatedFileIsNamed() throws {
        let dir = try scratch()
        let (path, _, _) = try writeSample(dir)
        let size = try FileManager.default.attributesOfItem(atPath: path)[.size] as! Int
        truncate(path, off_t(size / 2))
        #expect { try CheckpointReader(path: path).verify() } throws: { error in
            "\(error)".contains(path) && (error is CheckpointError)
        }
    }

    @Test func flippedByteIsCaughtByItsChecksum() throws {
        let dir = try scratch()
        let (path, _, _) = try writeSample(dir)
        // Find the adam_v tensor's bytes in the file (contiguous float32) and damage one.
        var bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        let v = filled(3)
        let needle = withUnsafeBytes(of: v.base[30]) { Data($0) } + withUnsafeBytes(of: v.base[31]) { Data($0) }
        let at = try #require(bytes.range(of: needle))
        bytes[at.lowerBound] ^= 0x40
        try bytes.write(to: URL(fileURLWithPath: path))
        let reader = try CheckpointReader(path: path)
        #expect { try reader.verify() } throws: { error in
            "\(error)".contains("/adam_v/model.layers.0.self_attn.q_proj.lora_B.weight") && "\(error)".contains("checksum")
        }
    }

    @Test func wrongShapeAndMissingTensorAreNamed() throws {
        let dir = try scratch()
        let (path, _, _) = try writeSample(dir)
        let reader = try CheckpointReader(path: path)
        let b = FloatBuffer(count: 100)
        var other = specs
        other[2] = ParameterSpec(name: "model.norm.weight", shape: [6], offset: 48)
        #expect { try reader.load(expected: other, weights: b, adamM: b, adamV: b) } throws: { "\($0)".contains("model.norm.weight has shape [5]") }
        other[2] = ParameterSpec(name: "lm_head.weight", shape: [5], offset: 48)
        #expect { try reader.load(expected: other, weights: b, adamM: b, adamV: b) } throws: { "\($0)".contains("has no tensor lm_head.weight") }
    }

    @Test func notAFileOrNotHDF5() throws {
        let dir = try scratch()
        #expect { try CheckpointReader(path: dir.appendingPathComponent("none.h5").path) } throws: { "\($0)".contains("no such file") }
        let junk = dir.appendingPathComponent("junk.h5")
        try Data("not a checkpoint".utf8).write(to: junk)
        #expect { try CheckpointReader(path: junk.path) } throws: { "\($0)".contains("not an HDF5 file") }
    }

    @Test func failedWriteLeavesNothingBehind() throws {
        let dir = try scratch()
        let (path, _, _) = try writeSample(dir)
        // A write into a directory that is a file fails cleanly, and the good checkpoint stays.
        let blocked = dir.appendingPathComponent("step-7.h5/step-8.h5").path
        #expect(throws: (any Error).self) {
            try CheckpointFile.write(to: blocked, manifest: CheckpointManifest(dtrainVersion: "t", model: "m", modelHash: "h", method: "full", adapter: "", worldSize: 1, threads: 1),
                                     progress: TrainingProgress(), config: "", specs: specs, weights: filled(1), adamM: filled(1), adamV: filled(1))
        }
        #expect(try CheckpointReader(path: path).verify() == 11)
    }
}
