import DTrainCore
import DTrainData
import DTrainIO
import DTrainDistributed
// The trainer module: command implementations.
