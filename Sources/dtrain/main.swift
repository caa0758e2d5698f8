import DTrainTrainer
print("dtrain")
