import ArgumentParser
import DTrainCore
import DTrainData
import DTrainDistributed
import DTrainIO
import DTrainTrainer
import Foundation

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Fine-tune a model as a YAML run config says; run under mpirun/srun for data parallelism.",
        discussion: """
            Exit status: 0 done; 1 failed during training (naming the rank, or the step whose loss or \
            gradient norm was not finite); 2 bad config, model, data or \
            checkpoint found before the first step (nothing trained), and usage errors; \
            75 stopped by SIGUSR1/SIGTERM/SIGINT (Ctrl-C) after writing a checkpoint (run again with --resume auto). \
            SIGTERM sent to mpirun itself makes mpirun kill the ranks within 2 s and exit 1; rank 0 then \
            writes a rescue checkpoint of the last completed step, and --resume auto continues from it.
            """)
    @Option(help: "The run config (YAML); see cluster-configs/.") var config: String
    @Option(help: "Continue from a checkpoint: `auto` (the newest under <output_dir>/checkpoints that verifies; a fresh start if none) or a .h5 path.")
    var resume: String?
    @Option(name: .customLong("set"), help: "Override a config key: --set optim.lr=1e-4 (repeatable).") var overrides: [String] = []

    func run() throws {
        // Before anything slow: SIGUSR1's default action would kill a rank still loading.
        StopRequest.install()
        let comm = World.make()
        StopRequest.announceRepeatedInterrupts(comm.rank == 0)
        let runConfig: RunConfig
        do {
            runConfig = try RunConfig.load(path: config, overrides: overrides)
            try runConfig.validate(worldSize: comm.worldSize)
            try runConfig.checkFiles()
        } catch {
            // Every rank reads the same config and fails the same way; rank 0 speaks for all.
            if comm.rank == 0 { printError("error: \(userFacingDescription(error))") }
            throw ExitCode(2)
        }
        let summary: TrainSummary
        do {
            summary = try Trainer(config: runConfig, comm: comm, resume: resume.map(ResumeSource.init(argument:))).run()
        } catch let failure as SetupFailure {
            // A bad model, data file or checkpoint, found before the first step: every rank
            // agreed on it and leaves alike (MPI finalised at exit, so mpirun shows no abort).
            if comm.rank == 0 { printError("error: \(failure)") }
            throw ExitCode(2)
        } catch let failure as NonFiniteStep {
            // Every rank saw the same all-reduced loss and norm and stopped at the same step.
            if comm.rank == 0 { printError("error: \(failure)") }
            throw ExitCode(1)
        } catch {
            if comm.worldSize > 1 { comm.abort(code: 1, message: userFacingDescription(error)) }
            printError("error: \(userFacingDescription(error))")
            throw ExitCode(1)
        }
        // Every rank leaves the same way after the same checkpoint; mpirun passes the status on.
        if summary.stoppedBySignal != nil {
            StopRequest.restoreDefaults()
            throw ExitCode(stoppedForResumeExitCode)
        }
    }
}

