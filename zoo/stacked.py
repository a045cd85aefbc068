"""Hand-batched forward passes for populations of Sequential nets (Linear, Conv, ReLU, Tanh, pooling).

`torch.func.vmap` over `functional_call` works for any module but pays a per-call dispatch cost
that dominates small nets. For the common case, a Sequential of plain layers, this module runs
the members as batched kernels directly: Linear -> `baddbmm` over (members, batch, features),
ConvNd -> one grouped convolution with `groups = members`. Same math as the plain layer, member
by member (the population tests check it against one-model-at-a-time training).
Returns None for a net it cannot batch; the caller then falls back to vmap.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

_CONV = {nn.Conv1d: F.conv1d, nn.Conv2d: F.conv2d}
_POOL = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)


def _supported(net: nn.Module) -> bool:
    if not isinstance(net, nn.Sequential) or any(True for _ in net.buffers()):
        return False
    for m in net:
        if isinstance(m, nn.Linear | nn.ReLU | nn.Tanh | nn.Flatten):
            if isinstance(m, nn.Flatten) and (m.start_dim, m.end_dim) != (1, -1):
                return False
            continue
        if type(m) in _CONV:
            if m.groups != 1 or m.padding_mode != "zeros" or isinstance(m.padding, str):
                return False
            continue
        if isinstance(m, _POOL) and m.output_size in (1, (1,), (1, 1)):
            continue
        return False
    return True


def stacked_forward(net: nn.Module) -> Callable | None:
    """f(params, buffers, x) -> logits, x: (M, B, *input), params: name -> (M, *shape)."""
    if not _supported(net):
        return None
    layers = list(net.named_children())

    def forward(params: dict[str, torch.Tensor], buffers: dict, x: torch.Tensor) -> torch.Tensor:
        M, B = x.shape[:2]
        grouped = False  # False: (M, B, C, ...); True: (B, M*C, ...) for grouped convolutions
        fresh = False  # x was created by the previous layer (safe to modify in place)
        for name, m in layers:
            if isinstance(m, nn.Linear):
                if grouped:
                    x, grouped = _ungroup(x, M), False
                w = params[f"{name}.weight"]  # (M, out, in)
                b = params.get(f"{name}.bias")
                if b is not None:
                    x = torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2))  # (M, B, out)
                else:
                    x = torch.bmm(x, w.transpose(1, 2))
            elif isinstance(m, nn.ReLU):
                x = torch.relu_(x) if fresh else torch.relu(x)  # in place: one tensor fewer per step
            elif isinstance(m, nn.Tanh):
                x = torch.tanh(x)  # not in place: its backward needs the output, and a PINN differentiates twice
            elif isinstance(m, nn.Flatten):
                if grouped:
                    x, grouped = _ungroup(x, M), False
                x = x.flatten(2)  # (M, B, features)
            elif type(m) in _CONV:
                if not grouped:
                    x, grouped = x.transpose(0, 1).flatten(1, 2), True  # (B, M*C, ...)
                w = params[f"{name}.weight"]  # (M, out, in, *k)
                b = params.get(f"{name}.bias")
                x = _CONV[type(m)](x, w.flatten(0, 1), None if b is None else b.flatten(),
                                   m.stride, m.padding, m.dilation, groups=M)
            elif isinstance(m, _POOL):
                if grouped:
                    x = x.mean(dim=tuple(range(2, x.dim())), keepdim=True)  # (B, M*C, 1, ...)
                else:
                    x = x.mean(dim=tuple(range(3, x.dim())), keepdim=True)
            fresh = isinstance(m, (nn.Linear, nn.ReLU)) or type(m) in _CONV
        if grouped:
            x = _ungroup(x, M)
        return x

    return forward


def _ungroup(x: torch.Tensor, M: int) -> torch.Tensor:
    """(B, M*C, ...) -> (M, B, C, ...)."""
    B = x.shape[0]
    return x.view(B, M, -1, *x.shape[2:]).transpose(0, 1)
