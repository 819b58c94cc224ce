"""The benchmark's models: an MLP for vectors, small CNNs for signals and images.

Inputs arrive in ``[0, 1]`` (what attack libraries expect); the model
standardises them with the training set's mean and std (buffers). Every model has
a normalisation layer (BatchNorm) before each ReLU, as the paper's networks do:
without it HEM's late, large steps (its loss is a mean over the few errors still
kept) kill the ReLUs of a plain MLP and the logits grow without limit (see
:mod:`hem_plugins.benchmark.protocol` and the README's benchmark protocol).
"""

from __future__ import annotations

import torch
from torch import nn


class Standardize(nn.Module):
    def __init__(self, x_train: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", x_train.mean(0, keepdim=True))
        self.register_buffer("std", x_train.std(0, keepdim=True).clamp_min(1e-3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def build_model(
    x_train: torch.Tensor,
    num_classes: int,
    kind: str = "auto",
    hidden=(256, 256),
    channels: int = 16,
    *,
    standardize: bool = True,
    norm: bool = True,
) -> nn.Module:
    """``mlp``: standardise, flatten, ``Linear-BatchNorm-ReLU`` per hidden width, linear head.
    ``cnn`` (images ``N, C, H, W``): two conv-BN-ReLU blocks and a linear head.
    ``cnn1d`` (signals ``N, L``, e.g. MNIST-1D): three 1-D conv-BN-ReLU layers of
    ``channels`` and a linear head.
    ``auto``: ``cnn`` for images (MNIST, CIFAR from ``--data-root``), else ``mlp``.
    ``standardize=False`` feeds the inputs as they are; ``norm=False`` drops the MLP's
    BatchNorm (a replay loader can hand over one-sample batches)."""
    if kind == "auto":
        kind = "cnn" if x_train.dim() == 4 else "mlp"
    if kind == "mlp":
        layers: list[nn.Module] = [Standardize(x_train)] if standardize else []
        layers.append(nn.Flatten())
        width = x_train[0].numel()
        for h in hidden:
            layers += [nn.Linear(width, int(h))]
            layers += [nn.BatchNorm1d(int(h))] if norm else []
            layers += [nn.ReLU()]
            width = int(h)
        return nn.Sequential(*layers, nn.Linear(width, num_classes))
    if kind == "cnn1d":
        if x_train.dim() != 2:
            raise ValueError(f"model 'cnn1d' needs signals (N, L), got {tuple(x_train.shape)}")
        ch, length = int(channels), x_train.shape[1]
        return nn.Sequential(
            Standardize(x_train),
            nn.Unflatten(1, (1, length)),
            nn.Conv1d(1, ch, 5, padding=2),
            nn.BatchNorm1d(ch),
            nn.ReLU(),
            nn.Conv1d(ch, ch, 3, padding=1, stride=2),
            nn.BatchNorm1d(ch),
            nn.ReLU(),
            nn.Conv1d(ch, ch, 3, padding=1, stride=2),
            nn.BatchNorm1d(ch),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(ch * ((length + 3) // 4), num_classes),
        )
    if kind == "cnn":
        if x_train.dim() != 4:
            raise ValueError(f"model 'cnn' needs images (N, C, H, W), got {tuple(x_train.shape)}")
        ch = x_train.shape[1]
        return nn.Sequential(
            Standardize(x_train),
            nn.Conv2d(ch, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
            nn.Linear(64 * 16, num_classes),
        )
    raise ValueError(f"unknown model kind {kind!r}; choose 'auto', 'mlp', 'cnn1d' or 'cnn'")
