"""Physics-informed MLP on coordinates (N, D), e.g. D = 2 for (t, x): `depth` Linear+Tanh layers, Linear head.

Tanh rather than ReLU because the PDE residual in the loss takes derivatives of the output with
respect to the input (u_t, u_xx, ...): they must be smooth and nonzero, ReLU's second derivative is 0.
n_classes is the output dimension (1 for a scalar PDE).
"""
from __future__ import annotations

from collections import OrderedDict

import torch.nn as nn


def pinn(input_shape: tuple[int, ...], n_classes: int, width: int = 32, depth: int = 3) -> nn.Module:
    """depth = number of hidden layers; width = units per hidden layer (the load knob)."""
    if width < 1 or depth < 1:
        raise ValueError(f"pinn needs width >= 1 and depth >= 1 (got width={width}, depth={depth})")
    if len(input_shape) != 1:
        raise ValueError(f"pinn takes coordinates (D,); got shape {tuple(input_shape)}")
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    for i in range(depth):
        layers[f"fc{i}"] = nn.Linear(input_shape[0] if i == 0 else width, width)
        layers[f"act{i}"] = nn.Tanh()
    layers["head"] = nn.Linear(width, n_classes)
    return nn.Sequential(layers)
