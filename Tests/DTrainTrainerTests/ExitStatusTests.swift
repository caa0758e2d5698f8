import DTrainCore
import DTrainTestSupport
import Foundation
import Testing

/// `dtrain train`'s exit statuses under mpirun: 2 for a bad config, model, data file or
/// checkpoint found before the first step (every rank, one message, no MPI abort), 1 for a
/// failure during training (naming the rank).
@Suite(.serialized) struct ExitStatusTests {
    func errorLines(_ text: String) -> [Substring] { text.split(separator: "\n").filter { $0.contains("error:") } }

    func expectCleanSetupFailure(_ r: (status: Int32, out: String, err: String), mentioning needle: String,
                                 sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(r.status == 2, "exit \(r.status)\n\(r.err)", sourceLocation: sourceLocation)
        #expect(errorLines(r.err).count == 1 && r.err.contains(needle), "\(r.err)", sourceLocation: sourceLocation)
        #expect(!r.err.contains("MPI_ABORT") && !r.err.contains("MPI_Abort") && !r.err.contains("exiting improperly"),
                "\(r.err)", sourceLocation: sourceLocation)
        #expect(!r.out.contains("step 1/"), sourceLocation: sourceLocation)
    }

    /// An invalid record (data.on_error: error) stops both ranks before training: status 2, one message naming file:line.
    @Test func dataErrorExitsTwoOnEveryRank() throws {
        let run = try smallRun("exit-data", method: "lora")
        let train = URL(fileURLWithPath: run.config).deletingLastPathComponent().appendingPathComponent("train.jsonl")
        let handle = try FileHandle(forWritingTo: train)
        handle.seekToEndOfFile()
        handle.write(Data("\n{\"text\": \"unterminated\n".utf8))
        try handle.close()
        let r = try runDTrain(ranks: 2, ["train", "--config", run.config], timeout: 300)
        expectCleanSetupFailure(r, mentioning: "train.jsonl:25")
        removeRun(config: run.config)
    }

    /// A model file that is not a model: status 2, one message naming the file.
    @Test func modelErrorExitsTwoOnEveryRank() throws {
        let run = try smallRun("exit-model", method: "lora")
        let junk = URL(fileURLWithPath: run.config).deletingLastPathComponent().appendingPathComponent("junk.gguf")
        try Data("this is not a GGUF file".utf8).write(to: junk)
        let r = try runDTrain(ranks: 2, ["train", "--config", run.config, "--set", "model=\(junk.path)"], timeout: 300)
        expectCleanSetupFailure(r, mentioning: "junk.gguf")
        removeRun(config: run.config)
    }

    /// A checkpoint rejected at resume (another LoRA rank): status 2 on every rank.
    @Test func rejectedResumeExitsTwo() throws {
        let run = try smallRun("exit-resume", method: "lora")
        let first = try runDTrain(ranks: 2, ["train", "--config", run.config, "--set", "train.max_steps=1"], timeout: 300)
        #expect(first.status == 0, "\(first.err)")
        let r = try runDTrain(ranks: 2, ["train", "--config", run.config, "--resume", "auto", "--set", "lora.r=16"], timeout: 300)
        expectCleanSetupFailure(r, mentioning: "lora.r")
        removeRun(config: run.config)
    }

    /// A failure during training ends the job with status 1 and names the rank.
    @Test func failureDuringTrainingExitsOne() throws {
        let run = try smallRun("exit-fail", method: "lora")
        let r = try runDTrain(ranks: 2, ["train", "--config", run.config], env: ["DTRAIN_FAULT": "fail:1:2"], timeout: 300)
        #expect(r.status == 1, "exit \(r.status)\n\(r.err)")
        #expect(r.err.contains("rank 1"), "\(r.err)")
        removeRun(config: run.config)
    }

    /// Ranks whose vector kernels differ in width (mixed CPUs) would drift apart by rounding:
    /// on an AVX-512 CPU, one rank forced to AVX2 stops the job before training (status 2).
    @Test func ranksAtDifferentVectorWidthsStop() throws {
        let run = try smallRun("exit-width", method: "lora")
        let dtrain = try dtrainBinary()
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        let args = ["train", "--config", run.config, "--set", "train.max_steps=1"]
        p.arguments = ["mpirun", "--oversubscribe", "--bind-to", "none", "-n", "1", dtrain] + args
            + [":", "-n", "1", "/usr/bin/env", "DTRAIN_VECTOR_BITS=256", dtrain] + args
        var env = ProcessInfo.processInfo.environment
        env["OMPI_ALLOW_RUN_AS_ROOT"] = "1"
        env["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
        env["DTRAIN_VECTOR_BITS"] = nil
        p.environment = env
        let errPipe = Pipe()
        p.standardError = errPipe
        p.standardOutput = FileHandle.nullDevice
        let err = try MemoryGate.admit(ranks: 2, args: args) {
            try p.run()
            defer { p.waitUntilExit() }
            return String(decoding: errPipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        }
        if MachineKernels.cpu.level >= .avx512 {
            #expect(p.terminationStatus == 2, "exit \(p.terminationStatus)\n\(err)")
            #expect(err.contains("rank 1 runs its vector kernels at another width") && err.contains("DTRAIN_VECTOR_BITS=256"), "\(err)")
        } else {
            // Without AVX-512 both ranks run AVX2 already: the job trains.
            print("ranksAtDifferentVectorWidthsStop: no AVX-512 on this CPU, so both ranks run 8 lanes and the job must train")
            #expect(p.terminationStatus == 0, "exit \(p.terminationStatus)\n\(err)")
        }
        removeRun(config: run.config)
    }
}
