"""Multilayer perceptron: flatten -> `depth` hidden layers of `width` units -> Linear head.

A hidden layer is fc -> [norm] -> act (the norm, when on, normalizes the pre-activations):

    h_1     = act(norm(fc_0(x)))                       # fan_in -> width: never residual
    h_{i+1} = act(norm(fc_i(h_i)))            (residual=False)
    h_{i+1} = h_i + act(norm(fc_i(h_i)))      (residual=True, i >= 1)
    logits  = head(h_depth)

Names (state-dict keys follow them): flatten, fc0, [norm0], act0, then per later layer either
fc{i}, [norm{i}], act{i} or one block res{i} holding fc, [norm], act; then head. The defaults
(relu, no residual, no norm) give exactly flatten, fc0, act0, ..., head, so the nets, state dicts
and model ids of zoos built before these knobs existed do not change. With depth <= 1 there is
no width -> width layer, so `residual` changes nothing.
"""
from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn as nn

ACTIVATIONS = ("relu", "gelu", "tanh", "silu")
NORMS = ("none", "layernorm")
_ACT = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU}


class Residual(nn.Sequential):
    """x + layers(x): a Sequential with a skip connection, so zoo.stacked can batch it layer by
    layer and torch.fx sees the `+`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + super().forward(x)


def _check(knob: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"mlp {knob} {value!r} is not valid; valid: {', '.join(valid)}")


def mlp(input_shape: tuple[int, ...], n_classes: int, width: int = 32, depth: int = 2,
        activation: str = "relu", residual: bool = False, norm: str = "none") -> nn.Module:
    """depth = number of hidden layers; width = units per hidden layer (the load knob);
    activation, residual, norm: the architecture knobs a zoo can sample (GHN-2's DeepNets)."""
    if width < 1 or depth < 0:
        raise ValueError(f"mlp needs width >= 1 and depth >= 0 (got width={width}, depth={depth})")
    _check("activation", activation, ACTIVATIONS)
    _check("norm", norm, NORMS)
    if not isinstance(residual, bool):
        raise ValueError(f"mlp residual {residual!r} is not valid; valid: True, False")
    fan_in = math.prod(input_shape)

    def hidden(n_in: int, i: str) -> OrderedDict[str, nn.Module]:
        layer: OrderedDict[str, nn.Module] = OrderedDict({f"fc{i}": nn.Linear(n_in, width)})
        if norm == "layernorm":
            layer[f"norm{i}"] = nn.LayerNorm(width)
        layer[f"act{i}"] = _ACT[activation]()
        return layer

    layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
    for i in range(depth):
        if residual and i > 0:
            layers[f"res{i}"] = Residual(hidden(width, ""))
        else:
            layers.update(hidden(fan_in if i == 0 else width, str(i)))
    layers["head"] = nn.Linear(fan_in if depth == 0 else width, n_classes)
    return nn.Sequential(layers)
