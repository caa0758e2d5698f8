import DTrainCore
import DTrainData
import DTrainIO
import DTrainDistributed
// The trainer module: command implementations.

/// dtrain's version, written into every checkpoint's manifest.
public let dtrainVersion = "0.2.0"
