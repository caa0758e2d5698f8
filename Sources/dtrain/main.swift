// The dtrain executable: the commands live in DTrainCLI.
import DTrainCLI

DTrain.run()
