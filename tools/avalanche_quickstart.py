import torch
from avalanche.evaluation.metrics import accuracy_metrics
from avalanche.logging import TextLogger
from avalanche.training import Replay
from avalanche.training.plugins import EvaluationPlugin, LRSchedulerPlugin

from hem_plugins import HEMPlusLoss
from hem_plugins.avalanche import ExperienceMarginsPlugin
from hem_plugins.benchmark.avalanche import IncrementalMLP, SplitDigits

torch.manual_seed(0)
benchmark = SplitDigits(n_experiences=5, seed=0)  # scikit-learn's digits, 2 classes per experience
model = IncrementalMLP(input_size=64, hidden_sizes=[256])  # the head grows with the classes
optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
epochs = 10
cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
strategy = Replay(
    model=model,
    optimizer=optimizer,
    criterion=HEMPlusLoss(),
    mem_size=200,
    train_mb_size=32,
    train_epochs=epochs,
    eval_mb_size=512,
    plugins=[
        ExperienceMarginsPlugin(),  # HEM+ margins from each experience's class counts
        LRSchedulerPlugin(cosine, reset_scheduler=True, reset_lr=True),  # restarted per experience
    ],
    evaluator=EvaluationPlugin(
        accuracy_metrics(epoch=True, stream=True),
        loggers=[TextLogger(open("avalanche_log.txt", "w"))],  # the full log
    ),
)
for experience in benchmark.train_stream:
    strategy.train(experience)
    results = strategy.eval(benchmark.test_stream)
    accuracy = results["Top1_Acc_Stream/eval_phase/test_stream/Task000"]
    print(f"after experience {experience.current_experience}: test accuracy {accuracy:.3f}")
