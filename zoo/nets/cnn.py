"""Convolutional net: `depth` conv+ReLU layers of `width` channels, global average pooling, linear head.

1D convolutions for inputs (C, L) such as MNIST-1D, 2D for images (C, H, W). The first conv keeps
the resolution; every later one halves it (stride 2).
"""
from __future__ import annotations

from collections import OrderedDict

import torch.nn as nn


def cnn(
    input_shape: tuple[int, ...], n_classes: int, width: int = 16, depth: int = 3, kernel_size: int = 3
) -> nn.Module:
    if width < 1 or depth < 1:
        raise ValueError(f"cnn needs width >= 1 and depth >= 1 (got width={width}, depth={depth})")
    spatial = len(input_shape) - 1
    if spatial not in (1, 2):
        raise ValueError(f"cnn takes inputs (C, L) or (C, H, W); got shape {tuple(input_shape)}")
    conv = nn.Conv1d if spatial == 1 else nn.Conv2d
    pool = nn.AdaptiveAvgPool1d(1) if spatial == 1 else nn.AdaptiveAvgPool2d(1)
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    for i in range(depth):
        layers[f"conv{i}"] = conv(
            input_shape[0] if i == 0 else width, width, kernel_size,
            stride=1 if i == 0 else 2, padding=kernel_size // 2,
        )
        layers[f"act{i}"] = nn.ReLU()
    layers["pool"] = pool
    layers["flatten"] = nn.Flatten()
    layers["head"] = nn.Linear(width, n_classes)
    return nn.Sequential(layers)
