import DTrainIO
import DTrainTestSupport
import Foundation
import Testing

/// A finished (or stopped) run's checkpoint, read back through `dtrain inspect --json`.
struct CheckpointInfo {
    let step: Int
    let worldSize: Int
    let paramSHA256: String

    /// The checkpoint `latest` names in a run's output directory.
    static func latest(_ out: String, verify: Bool = false) throws -> CheckpointInfo {
        let name = try String(contentsOfFile: out + "/checkpoints/latest", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        return try inspect(out + "/checkpoints/" + name, verify: verify)
    }

    static func inspect(_ path: String, verify: Bool = false) throws -> CheckpointInfo {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: try dtrainBinary())
        p.arguments = ["inspect", path, "--json"] + (verify ? [] : ["--no-verify"])
        let pipe = Pipe()
        p.standardOutput = pipe
        try p.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0, let json = try JSONSerialization.jsonObject(with: data) as? [String: Any],
              let step = json["step"] as? Int, let world = json["world_size"] as? Int, let sha = json["param_sha256"] as? String else {
            throw FixtureError(message: "dtrain inspect \(path) failed (exit \(p.terminationStatus))")
        }
        return CheckpointInfo(step: step, worldSize: world, paramSHA256: sha)
    }
}

/// The `train` lines of a run's metrics.jsonl, without the timing fields: what must be identical
/// between a resumed run and one that never stopped.
func trainingLog(_ out: String) throws -> [String] {
    try String(contentsOfFile: out + "/metrics.jsonl", encoding: .utf8).split(separator: "\n")
        .filter { $0.contains("\"kind\":\"train\"") }
        .map { line in line.split(separator: ",").filter { !$0.contains("elapsed_s") && !$0.contains("tokens_per_s") }.joined(separator: ",") }
}

/// The `train` lines a run's metrics.jsonl holds so far (0 before the first is written).
func trainStepsLogged(_ out: String) -> Int {
    ((try? String(contentsOfFile: out + "/metrics.jsonl", encoding: .utf8))?.components(separatedBy: "\"kind\":\"train\"").count ?? 1) - 1
}

/// The per-step losses of a run's metrics.jsonl.
func losses(_ out: String) throws -> [Double] {
    try trainingLog(out).map { line in
        let field = line.split(separator: ",").first { $0.hasPrefix("\"loss\":") }!
        return Double(field.dropFirst("\"loss\":".count))!
    }
}

/// Uninterrupted reference runs, shared by the tests of this suite (key: method, ranks, steps).
nonisolated(unsafe) private var referenceRuns: [String: (sha: String, out: String)] = [:]

/// A 6-step run (two epochs of 3 steps: 24 examples, 8 per step) of the small test config.
func resumableRun(_ name: String, method: String, steps: Int = 6) throws -> (config: String, out: String, args: [String]) {
    let run = try smallRun(name, method: method)
    return (run.config, run.out, ["--set", "train.epochs=\(steps / 3)", "--set", "train.max_steps=\(steps)", "--set", "batch.micro=2"])
}

/// Full fine-tuning references are not kept (each is used once and holds 2 GB of outputs); the
/// caller removes them.
func reference(method: String, ranks: Int, steps: Int = 6) throws -> (sha: String, out: String) {
    let key = "\(method)-\(ranks)-\(steps)"
    if let r = referenceRuns[key] { return r }
    let run = try resumableRun("ref-\(key)", method: method, steps: steps)
    let r = try runDTrain(ranks: ranks, ["train", "--config", run.config] + run.args)
    guard r.status == 0 else { throw FixtureError(message: "reference run \(key) failed: \(r.err)") }
    let info = try CheckpointInfo.latest(run.out)
    guard info.step == steps else { throw FixtureError(message: "reference run \(key) ended at step \(info.step)") }
    if method == "full" { return (info.paramSHA256, run.out) }
    referenceRuns[key] = (info.paramSHA256, run.out)
    return referenceRuns[key]!
}

@Suite(.serialized) struct CheckpointResumeTests {
    /// Stopped by a stop request that arrives mid-accumulation in step 5 (epoch 1, mid-epoch),
    /// checkpointed at the step boundary, resumed: the same weights, bit for bit, and the same log.
    @Test(arguments: [("lora", 1), ("lora", 2), ("full", 1), ("full", 2)])
    func resumeIsBitExact(method: String, ranks: Int) throws {
        let ref = try reference(method: method, ranks: ranks)
        let run = try resumableRun("exact-\(method)-\(ranks)", method: method)
        let stopped = try runDTrain(ranks: ranks, ["train", "--config", run.config] + run.args, env: ["DTRAIN_FAULT": "signal:0:5:1"])
        #expect(stopped.status == 75, "exit \(stopped.status)\n\(stopped.err)")
        #expect(stopped.out.contains("stopped by SIGUSR1 at step 5/6"), "\(stopped.out)")
        #expect(try CheckpointInfo.latest(run.out).step == 5)
        let resumed = try runDTrain(ranks: ranks, ["train", "--config", run.config, "--resume", "auto"] + run.args)
        #expect(resumed.status == 0, "\(resumed.err)")
        #expect(resumed.out.contains("after step 5, epoch 1"), "\(resumed.out)")
        let info = try CheckpointInfo.latest(run.out, verify: true)
        #expect(info.step == 6 && info.worldSize == ranks)
        #expect(info.paramSHA256 == ref.sha, "\(method), \(ranks) rank(s): resumed weights differ from the uninterrupted run's")
        #expect(try trainingLog(run.out) == trainingLog(ref.out))
        removeRun(config: run.config)
        if method == "full" { removeRun(config: URL(fileURLWithPath: ref.out).deletingLastPathComponent().appendingPathComponent("run.yaml").path) }
    }

    /// With 2 threads a rank's products and loops run on its compute team. A LoRA run stopped
    /// mid-accumulation and resumed, both on 2 threads, equals the uninterrupted 2-thread run bit
    /// for bit; and the 2-thread weights stay within float32 reduction-order differences of the
    /// 1-thread run's (the loops' chunks, and so some sums' order, follow the thread count).
    @Test func twoThreadsResumeBitExactAndAgreeWithOne() throws {
        let two = ["--set", "threads=2"]
        let ref = try reference(method: "lora", ranks: 1)
        let whole = try resumableRun("threads2-whole", method: "lora")
        let wholeRun = try runDTrain(ranks: 1, ["train", "--config", whole.config] + whole.args + two)
        #expect(wholeRun.status == 0, "\(wholeRun.err)")
        #expect(wholeRun.out.contains("1 rank(s) x 2 thread(s)"), "\(wholeRun.out)")
        let wholeInfo = try CheckpointInfo.latest(whole.out)

        let run = try resumableRun("threads2-exact", method: "lora")
        let stopped = try runDTrain(ranks: 1, ["train", "--config", run.config] + run.args + two, env: ["DTRAIN_FAULT": "signal:0:5:1"])
        #expect(stopped.status == 75, "exit \(stopped.status)\n\(stopped.err)")
        let resumed = try runDTrain(ranks: 1, ["train", "--config", run.config, "--resume", "auto"] + run.args + two)
        #expect(resumed.status == 0, "\(resumed.err)")
        #expect(try CheckpointInfo.latest(run.out).paramSHA256 == wholeInfo.paramSHA256, "2 threads: resumed weights differ from the uninterrupted run's")
        #expect(try trainingLog(run.out) == trainingLog(whole.out))

        let one = try SafetensorsFile(path: ref.out + "/final/adapter_model.safetensors")
        let twoThreads = try SafetensorsFile(path: whole.out + "/final/adapter_model.safetensors")
        var worst = 0.0, apart = 0, total = 0
        for name in one.tensors.keys {
            let a = try twoThreads.floats(name), b = try one.floats(name)
            worst = max(worst, compare(a, b, label: name).maxAbs)
            apart += zip(a, b).filter { abs($0 - $1) > 1e-4 }.count
            total += b.count
        }
        let lossGap = zip(try losses(whole.out), try losses(ref.out)).map { abs($0 - $1) / abs($1) }.max() ?? .infinity
        print("LoRA, 2 threads vs 1 thread after 6 steps: max abs weight difference \(worst), \(apart) of \(total) weights apart by more than 1e-4, max relative loss difference \(lossGap)")
        // Every product's sums now run in another order, and AdamW's first steps move a weight by
        // about lr whatever the size of its gradient, so a gradient near zero whose sign the order
        // flips moves its weight the other way: bound a few such weights by two steps at lr 1e-3,
        // and the rest, with the losses, by a tenth of one step.
        #expect(worst < 2e-3, "2 threads differ from 1 thread by \(worst)")
        #expect(Double(apart) < 1e-3 * Double(total), "\(apart) of \(total) weights differ by more than 1e-4")
        #expect(lossGap < 1e-4, "2 threads' losses differ from 1 thread's by \(lossGap) (relative)")
        removeRun(config: whole.config)
        removeRun(config: run.config)
    }

    /// A checkpoint written by 2 ranks continues on 1, and one written by 1 continues on 2: the
    /// global batch and data order stay, so the losses and weights follow the uninterrupted run
    /// to within float32 reduction-order differences.
    @Test(arguments: [(2, 1), (1, 2)])
    func resumeOnAnotherRankCount(before: Int, after: Int) throws {
        let ref = try reference(method: "lora", ranks: before)
        let run = try resumableRun("ranks-\(before)-\(after)", method: "lora")
        let stopped = try runDTrain(ranks: before, ["train", "--config", run.config] + run.args, env: ["DTRAIN_FAULT": "signal:0:4:0"])
        #expect(stopped.status == 75, "\(stopped.err)")
        let resumed = try runDTrain(ranks: after, ["train", "--config", run.config, "--resume", "auto"] + run.args)
        #expect(resumed.status == 0, "\(resumed.err)")
        #expect(resumed.out.contains("written by \(before) rank(s), now \(after)"), "\(resumed.out)")
        let mine = try losses(run.out), theirs = try losses(ref.out)
        #expect(mine.count == 6 && theirs.count == 6)
        let lossDiff = zip(mine, theirs).map { abs($0 - $1) }.max() ?? .infinity
        let a = try SafetensorsFile(path: run.out + "/final/adapter_model.safetensors")
        let b = try SafetensorsFile(path: ref.out + "/final/adapter_model.safetensors")
        var worst = 0.0
        for name in b.tensors.keys { worst = max(worst, compare(try a.floats(name), try b.floats(name), label: name).maxAbs) }
        print("resume \(before) -> \(after) ranks: max loss difference \(lossDiff), max weight difference \(worst)")
        #expect(lossDiff < 1e-4 && worst < 1e-5, "loss diff \(lossDiff), weight diff \(worst)")
    }

    /// A rank killed (SIGKILL) at a random point, including while rank 0 writes a checkpoint:
    /// `--resume auto` loses at most one checkpoint interval and ends with the uninterrupted
    /// run's weights.
    @Test(arguments: [1, 2, 3, 4])
    func killedRankResumesExactly(seed: UInt64) throws {
        let ref = try reference(method: "lora", ranks: 2)
        var state = seed &* 0x9E37_79B9_7F4A_7C15
        func draw(_ n: Int) -> Int {
            state = (state ^ (state >> 31)) &* 0xBF58_476D_1CE4_E5B9
            return Int((state >> 33) % UInt64(n))
        }
        // Seeds alternate between a kill during training and one inside a checkpoint write.
        let fault = seed % 2 == 1
            ? "kill:\(draw(2)):\(1 + draw(6)):\(draw(2))"
            : "kill-in-checkpoint:0:\(2 * (1 + draw(3))):\(1 + draw(1200))"
        let run = try resumableRun("kill-\(seed)", method: "lora")
        let args = run.args + ["--set", "checkpoint.every_steps=2"]
        let killed = try runDTrain(ranks: 2, ["train", "--config", run.config] + args, env: ["DTRAIN_FAULT": fault])
        #expect(killed.status != 0, "\(fault): the job did not fail")
        let killStep = Int(fault.split(separator: ":")[2])!
        let resumed = try runDTrain(ranks: 2, ["train", "--config", run.config, "--resume", "auto"] + args)
        #expect(resumed.status == 0, "\(fault): \(resumed.err)")
        // What resume started from: at most one interval (2 steps) before the step that was killed.
        let from = resumed.out.range(of: "after step ").map { Int(resumed.out[$0.upperBound...].prefix { $0.isNumber }) ?? 0 } ?? 0
        #expect(from >= killStep - 2 - (fault.hasPrefix("kill-in") ? 0 : 1), "\(fault): resumed from step \(from)")
        #expect(try CheckpointInfo.latest(run.out).paramSHA256 == ref.sha, "\(fault): weights differ from the uninterrupted run's")
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: run.out + "/checkpoints").filter { $0.contains(".tmp-") }
        #expect(leftovers.isEmpty, "\(leftovers)")
    }

    /// A damaged newest checkpoint: named by `inspect` and by `--resume PATH`; `--resume auto`
    /// warns, falls back to the one before, and still ends with the uninterrupted run's weights.
    @Test func damagedCheckpointIsDetected() throws {
        let ref = try reference(method: "lora", ranks: 2)
        let run = try resumableRun("damaged", method: "lora")
        let args = run.args + ["--set", "checkpoint.every_steps=2"]
        let first = try runDTrain(ranks: 2, ["train", "--config", run.config] + args, env: ["DTRAIN_FAULT": "signal:0:5:0"])
        #expect(first.status == 75)
        let newest = run.out + "/checkpoints/step-00000005.h5"
        // Flip one byte in the middle of the file (inside a tensor's data).
        var bytes = try Data(contentsOf: URL(fileURLWithPath: newest))
        bytes[bytes.count / 2] ^= 0x10
        try bytes.write(to: URL(fileURLWithPath: newest))
        #expect(throws: (any Error).self) { try CheckpointInfo.inspect(newest, verify: true) }
        let explicit = try runDTrain(ranks: 2, ["train", "--config", run.config, "--resume", newest] + args)
        #expect(explicit.status != 0 && explicit.err.contains(newest), "\(explicit.err)")
        let auto = try runDTrain(ranks: 2, ["train", "--config", run.config, "--resume", "auto"] + args)
        #expect(auto.status == 0, "\(auto.err)")
        #expect(auto.err.contains("skipping \(newest)"), "\(auto.err)")
        #expect(auto.out.contains("after step 4"), "\(auto.out)")
        #expect(try CheckpointInfo.latest(run.out).paramSHA256 == ref.sha)
        // A truncated file is named too.
        let last = run.out + "/checkpoints/step-00000006.h5"
        truncate(last, 4096)
        let truncated = try runDTrain(ranks: 1, ["train", "--config", run.config, "--resume", last] + args)
        #expect(truncated.status != 0 && truncated.err.contains(last), "\(truncated.err)")
    }

    /// What cannot change is refused with the key named; what may change is accepted and reported.
    @Test func changedConfigOnResume() throws {
        let run = try resumableRun("changed", method: "lora")
        let first = try runDTrain(ranks: 1, ["train", "--config", run.config] + run.args, env: ["DTRAIN_FAULT": "signal:0:2:0"])
        #expect(first.status == 75)
        let shape = try runDTrain(ranks: 1, ["train", "--config", run.config, "--resume", "auto", "--set", "lora.r=8"] + run.args)
        #expect(shape.status != 0 && shape.err.contains("lora.r"), "\(shape.err)")
        let method = try runDTrain(ranks: 1, ["train", "--config", run.config, "--resume", "auto", "--set", "method=full"] + run.args)
        #expect(method.status != 0 && method.err.contains("method is full"), "\(method.err)")
        let seed = try runDTrain(ranks: 1, ["train", "--config", run.config, "--resume", "auto", "--set", "seed=6"] + run.args)
        #expect(seed.status != 0 && seed.err.contains("seed changed"), "\(seed.err)")
        let fine = try runDTrain(ranks: 1, ["train", "--config", run.config, "--resume", "auto", "--set", "eval.every_steps=3",
                                            "--set", "logging.every_steps=2"] + run.args)
        #expect(fine.status == 0, "\(fine.err)")
        #expect(fine.out.contains("changed since the checkpoint: eval.every_steps: 0 -> 3; logging.every_steps: 1 -> 2"), "\(fine.out)")
    }

    /// A real SIGUSR1 to mpirun: forwarded to the ranks, which agree at the next step boundary,
    /// checkpoint, and exit 75; the resumed run ends with the uninterrupted run's weights.
    @Test func sigusr1ToMpirunStopsAndResumes() throws {
        let ref = try reference(method: "lora", ranks: 2, steps: 12)
        let run = try resumableRun("sigusr1", method: "lora", steps: 12)
        var sent = false
        let stopped = try runDTrain(ranks: 2, ["train", "--config", run.config] + run.args) { pid in
            // Signal once three steps are logged: mid-run, at whatever point of a step that falls.
            guard !sent, trainStepsLogged(run.out) >= 3 else { return }
            kill(pid, SIGUSR1)
            sent = true
        }
        #expect(sent && stopped.status == 75, "exit \(stopped.status)\n\(stopped.err)")
        let at = try CheckpointInfo.latest(run.out).step
        #expect(at >= 2 && at < 12)
        let resumed = try runDTrain(ranks: 2, ["train", "--config", run.config, "--resume", "auto"] + run.args)
        #expect(resumed.status == 0, "\(resumed.err)")
        #expect(try CheckpointInfo.latest(run.out).paramSHA256 == ref.sha)
        #expect(try trainingLog(run.out) == trainingLog(ref.out))
    }

    /// A real SIGTERM to mpirun, mid-step: Open MPI does not forward it but kills the ranks itself
    /// (SIGCONT at once, SIGTERM 1 s later, SIGKILL 1 s after that) and exits 1. Rank 0's rescue
    /// thread checkpoints the last completed step on the SIGCONT; the step in flight (stalled here,
    /// as a long step would be) is lost, and the resumed run ends with the uninterrupted run's weights.
    @Test func sigtermToMpirunLeavesARescueCheckpoint() throws {
        let ref = try reference(method: "lora", ranks: 2, steps: 12)
        let run = try resumableRun("sigterm", method: "lora", steps: 12)
        var sent = false
        let stopped = try runDTrain(ranks: 2, ["train", "--config", run.config] + run.args,
                                    env: ["DTRAIN_FAULT": "stall:0:3:1"]) { pid in
            // Two steps logged: rank 0 is stalled in step 3.
            guard !sent, trainStepsLogged(run.out) >= 2 else { return }
            kill(pid, SIGTERM)
            sent = true
        }
        #expect(sent && stopped.status == 1, "mpirun's own status after SIGTERM is 1; got \(stopped.status)\n\(stopped.err)")
        #expect(stopped.err.contains("SIGCONT: rescue checkpoint of step 2"), "\(stopped.err)")
        #expect(try CheckpointInfo.latest(run.out, verify: true).step == 2)
        let resumed = try runDTrain(ranks: 2, ["train", "--config", run.config, "--resume", "auto"] + run.args)
        #expect(resumed.status == 0, "\(resumed.err)")
        #expect(resumed.out.contains("after step 2, epoch 0"), "\(resumed.out)")
        #expect(try CheckpointInfo.latest(run.out).paramSHA256 == ref.sha)
        #expect(try trainingLog(run.out) == trainingLog(ref.out))
        // The kill left a half-written temporary behind at most; the resumed run removed it.
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: run.out + "/checkpoints").filter { $0.contains(".tmp") }
        #expect(leftovers.isEmpty, "\(leftovers)")
    }
}
