import DTrainTestSupport
import Foundation
import Testing

/// Runs a command to completion; returns its status and combined output. Spawned and reaped
/// directly (posix_spawn, waitpid): Foundation's Process can miss the exit of a child whose own
/// children (daemons) outlive it.
@discardableResult
func shell(_ command: String, _ args: [String]) throws -> (status: Int32, out: String) {
    let log = TestScratch.file("shell.log").path
    defer { unlink(log) }
    let argv = ["/bin/sh", "-c", "exec \"$0\" \"$@\" </dev/null >'\(log)' 2>&1", command] + args
    var cArgs = argv.map { strdup($0) } + [nil]
    defer { for a in cArgs { free(a) } }
    var pid: pid_t = 0
    guard posix_spawn(&pid, "/bin/sh", nil, nil, &cArgs, environ) == 0 else {
        throw FixtureError(message: "cannot start \(command)")
    }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    let out = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
    // WIFEXITED / WEXITSTATUS, which Swift does not import (macros).
    return ((status & 0x7F) == 0 ? (status >> 8) & 0xFF : 128 + (status & 0x7F), out)
}

/// A real Slurm cluster on this machine (Debian's slurmctld, slurmd and munge, installed and
/// started by launch/slurm/local-cluster.sh): the sbatch script is signalled before its time
/// limit, its ranks checkpoint and exit 75, it requeues itself and resumes until done, and the
/// final weights equal those of a run that was never interrupted.
@Suite(.serialized) struct SlurmRequeueTests {
    @Test func signalledRequeuedJobEndsWithUninterruptedWeights() throws {
        let root = Fixtures.packageRoot.path
        let up = try shell("bash", [root + "/launch/slurm/local-cluster.sh", "up"])
        try #require(up.status == 0, "the local Slurm cluster did not start:\n\(up.out)")
        defer { _ = try? shell("bash", [root + "/launch/slurm/local-cluster.sh", "down"]) }

        // 81 steps of about half a second: longer than the 10-40 s before Slurm's warning signal
        // (it checks limits every 30 s), so the first run is always stopped; usually 1-3 requeues.
        let steps = 81
        let run = try resumableRun("slurm", method: "lora", steps: steps)
        let args = run.args + ["--set", "checkpoint.every_steps=20"]
        let dir = URL(fileURLWithPath: run.out).deletingLastPathComponent().path
        // The job's 2 ranks count against the tests' memory budget until it ends.
        let (job, state, restarts) = try MemoryGate.admit(ranks: 2, args: args) { () throws -> (String, String, Int) in
            let submit = try shell("sbatch", ["--parsable", "--job-name=dtrain-test", "--ntasks=2", "--time=1", "--signal=B:USR1@20",
                                              "--output=\(dir)/slurm-%j.out", "--chdir=\(dir)", "--export=ALL,DTRAIN_BIN=\(try dtrainBinary())",
                                              root + "/launch/slurm/train.sbatch", run.config] + args)
            try #require(submit.status == 0, "sbatch failed: \(submit.out)")
            let job = submit.out.trimmingCharacters(in: .whitespacesAndNewlines)

            // Poll the controller until the job completes (each requeue waits ~15 s to restart).
            let deadline = Date().addingTimeInterval(900)
            var state = "", restarts = 0
            while Date() < deadline {
                let info = try shell("scontrol", ["-o", "show", "job", job]).out
                state = info.range(of: "JobState=").map { String(info[$0.upperBound...].prefix { $0.isLetter || $0 == "_" }) } ?? ""
                restarts = info.range(of: "Restarts=").flatMap { Int(info[$0.upperBound...].prefix { $0.isNumber }) } ?? 0
                if ["COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"].contains(state) || state.isEmpty { break }
                sleep(2)
            }
            return (job, state, restarts)
        }
        let log = (try? String(contentsOfFile: "\(dir)/slurm-\(job).out", encoding: .utf8)) ?? "(no job output)"
        if state != "COMPLETED" { _ = try? shell("scancel", [job]) }
        try #require(state == "COMPLETED", "job \(job) ended \(state.isEmpty ? "unseen" : state)\n\(log.suffix(4000))")
        #expect(restarts >= 1, "the job was never requeued\n\(log.suffix(4000))")
        #expect(log.contains("stopped by SIGUSR1"), "\(log.suffix(4000))")
        #expect(log.contains("resume: continuing from"), "\(log.suffix(4000))")

        let ref = try reference(method: "lora", ranks: 2, steps: steps)
        let final = try CheckpointInfo.latest(run.out, verify: true)
        print("slurm: job \(job) completed after \(restarts) requeue(s), step \(final.step)")
        #expect(final.step == steps)
        #expect(final.paramSHA256 == ref.sha, "weights after \(restarts) requeue(s) differ from the uninterrupted run's")
    }
}
