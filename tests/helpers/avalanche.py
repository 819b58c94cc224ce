"""Helpers of the Avalanche adapter tests: a tiny MLP, a quiet evaluator, a recording plugin."""

from __future__ import annotations

import torch
from avalanche.core import SupervisedPlugin
from avalanche.evaluation.metrics import accuracy_metrics
from avalanche.training.plugins import EvaluationPlugin

from hem_plugins.benchmark.avalanche import IncrementalMLP


def tiny_model(seed: int = 0, **kwargs) -> IncrementalMLP:
    torch.manual_seed(seed)
    return IncrementalMLP(hidden_sizes=[16], **kwargs)


def quiet_evaluator() -> EvaluationPlugin:
    return EvaluationPlugin(accuracy_metrics(stream=True), loggers=[])


def sgd(model, lr=0.01):
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)


class Recorder(SupervisedPlugin):
    """Keeps the last minibatch output/targets and the loss before and after other plugins."""

    def __init__(self):
        super().__init__()
        self.criterion_losses: list[float] = []
        self.total_losses: list[float] = []
        self.outputs: list[tuple[torch.Tensor, torch.Tensor, float]] = []

    def before_backward(self, strategy, **kwargs):
        # Runs before the plugins the strategy appends after the user's (LwF, EWC penalties).
        loss = float(strategy.loss.detach())
        self.criterion_losses.append(loss)
        self.outputs.append((strategy.mb_output.detach().clone(), strategy.mb_y.clone(), loss))

    def after_backward(self, strategy, **kwargs):
        self.total_losses.append(float(strategy.loss.detach()))
