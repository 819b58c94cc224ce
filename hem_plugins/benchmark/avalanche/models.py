"""Small models for the shipped benchmarks, with Avalanche's dynamic heads."""

from __future__ import annotations

from collections.abc import Sequence

from avalanche.models import IncrementalClassifier, MultiHeadClassifier, MultiTaskModule
from torch import nn

__all__ = ["IncrementalMLP", "MLP", "MultiHeadMLP"]


def _features(input_size: int, hidden_sizes: Sequence[int], dropout: float) -> nn.Sequential:
    if input_size < 1 or not hidden_sizes or any(h < 1 for h in hidden_sizes):
        raise ValueError(
            f"input_size and hidden_sizes must be positive, got {input_size}, {list(hidden_sizes)}"
        )
    layers: list[nn.Module] = []
    width = input_size
    for h in hidden_sizes:
        layers += [nn.Linear(width, h), nn.ReLU(inplace=True)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = h
    return nn.Sequential(nn.Flatten(), *layers)


class MLP(nn.Module):
    """MLP with a fixed ``num_classes``-unit head (domain-incremental benchmarks)."""

    def __init__(
        self,
        input_size: int = 64,
        hidden_sizes: Sequence[int] = (256,),
        num_classes: int = 10,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.features = _features(input_size, hidden_sizes, dropout)
        self.classifier = nn.Linear(hidden_sizes[-1], num_classes)

    def forward(self, x):
        return self.classifier(self.features(x))


class IncrementalMLP(nn.Module):
    """MLP whose head is an ``IncrementalClassifier`` (class-incremental benchmarks).

    The head grows with the classes of each experience; with ``masking`` the
    units of classes not trained yet output ``mask_value``.
    """

    def __init__(
        self,
        input_size: int = 64,
        hidden_sizes: Sequence[int] = (256,),
        initial_out_features: int = 2,
        masking: bool = True,
        mask_value: float = -1000,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.features = _features(input_size, hidden_sizes, dropout)
        self.classifier = IncrementalClassifier(
            hidden_sizes[-1],
            initial_out_features=initial_out_features,
            masking=masking,
            mask_value=mask_value,
        )

    def forward(self, x):
        return self.classifier(self.features(x))


class MultiHeadMLP(MultiTaskModule):
    """MLP with a ``MultiHeadClassifier`` (task-incremental benchmarks: one head per task)."""

    def __init__(
        self,
        input_size: int = 64,
        hidden_sizes: Sequence[int] = (256,),
        initial_out_features: int = 2,
        masking: bool = True,
        mask_value: float = -1000,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.features = _features(input_size, hidden_sizes, dropout)
        self.classifier = MultiHeadClassifier(
            hidden_sizes[-1],
            initial_out_features=initial_out_features,
            masking=masking,
            mask_value=mask_value,
        )

    def forward_single_task(self, x, task_label):
        return self.classifier(self.features(x), task_label)
