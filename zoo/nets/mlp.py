"""Multilayer perceptron: flatten -> `depth` hidden Linear+ReLU layers of `width` -> Linear head."""
from __future__ import annotations

import math
from collections import OrderedDict

import torch.nn as nn


def mlp(input_shape: tuple[int, ...], n_classes: int, width: int = 32, depth: int = 2) -> nn.Module:
    """depth = number of hidden layers; width = units per hidden layer (the load knob)."""
    if width < 1 or depth < 0:
        raise ValueError(f"mlp needs width >= 1 and depth >= 0 (got width={width}, depth={depth})")
    fan_in = math.prod(input_shape)
    layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
    for i in range(depth):
        layers[f"fc{i}"] = nn.Linear(fan_in if i == 0 else width, width)
        layers[f"act{i}"] = nn.ReLU()
    layers["head"] = nn.Linear(fan_in if depth == 0 else width, n_classes)
    return nn.Sequential(layers)
