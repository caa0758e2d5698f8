// The trainer module: the run config, a run's setup, step, validation, checkpoints and logs,
// loss evaluation and the benchmarks. The commands that drive it are in DTrainCLI.

/// dtrain's version, written into every checkpoint's manifest.
public let dtrainVersion = "0.2.0"
