"""Hand-batched forward passes for populations of Sequential nets (Linear, Conv, LayerNorm,
ReLU / GELU / SiLU / Tanh, pooling, and zoo.nets.mlp.Residual blocks of these).

`torch.func.vmap` over `functional_call` works for any module but pays a per-call dispatch cost
that dominates small nets. For the common case, a Sequential of plain layers, this module runs
the members as batched kernels directly: Linear -> `baddbmm` over (members, batch, features),
ConvNd -> one grouped convolution with `groups = members`, LayerNorm -> the normalization without
affine, then each member's own weight and bias. Same math as the plain layer, member by member
(the population tests check it against one-model-at-a-time training).
Returns None for a net it cannot batch; the caller then falls back to vmap.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from zoo.nets.mlp import Residual

_CONV = {nn.Conv1d: F.conv1d, nn.Conv2d: F.conv2d}
_POOL = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)


def _supported(net: nn.Sequential) -> bool:
    for m in net:
        if isinstance(m, Residual):
            if not _supported(m):
                return False
            continue
        if isinstance(m, nn.Linear | nn.LayerNorm | nn.ReLU | nn.GELU | nn.SiLU | nn.Tanh | nn.Flatten):
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
    if not isinstance(net, nn.Sequential) or any(True for _ in net.buffers()) or not _supported(net):
        return None

    def forward(params: dict[str, torch.Tensor], buffers: dict, x: torch.Tensor) -> torch.Tensor:
        M = x.shape[0]
        x, grouped = _run(net, "", params, x, M, False)
        return _ungroup(x, M) if grouped else x

    return forward


def _run(net: nn.Sequential, prefix: str, params: dict[str, torch.Tensor], x: torch.Tensor, M: int,
         grouped: bool) -> tuple[torch.Tensor, bool]:
    """The layers of `net` (parameter names under `prefix`) on the stacked x of M members;
    grouped: x is (B, M*C, ...) for grouped convolutions, else (M, B, C, ...). Returns (x, grouped)."""
    fresh = False  # x was created by the previous layer here (safe to modify in place; never the input)
    for name, m in net.named_children():
        name = prefix + name
        if isinstance(m, Residual):
            if grouped:
                x, grouped = _ungroup(x, M), False
            y, y_grouped = _run(m, f"{name}.", params, x, M, False)
            x = x + (_ungroup(y, M) if y_grouped else y)
        elif isinstance(m, nn.Linear):
            if grouped:
                x, grouped = _ungroup(x, M), False
            w = params[f"{name}.weight"]  # (M, out, in)
            b = params.get(f"{name}.bias")
            if b is not None:
                x = torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2))  # (M, B, out)
            else:
                x = torch.bmm(x, w.transpose(1, 2))
        elif isinstance(m, nn.LayerNorm):
            if grouped:
                x, grouped = _ungroup(x, M), False
            x = F.layer_norm(x, m.normalized_shape, eps=m.eps)
            w, b = params.get(f"{name}.weight"), params.get(f"{name}.bias")  # (M, *normalized_shape)
            lead = (1,) * (x.dim() - 1 - len(m.normalized_shape))  # batch (and any other leading) dims
            if w is not None:
                x = x * w.view(M, *lead, *w.shape[1:])
            if b is not None:
                x = x + b.view(M, *lead, *b.shape[1:])
        elif isinstance(m, nn.ReLU):
            x = torch.relu_(x) if fresh else torch.relu(x)  # in place: one tensor fewer per step
        elif isinstance(m, nn.Tanh):
            x = torch.tanh(x)  # not in place: its backward needs the output, and a PINN differentiates twice
        elif isinstance(m, nn.GELU):
            x = F.gelu(x, approximate=m.approximate)
        elif isinstance(m, nn.SiLU):
            x = F.silu(x)
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
        fresh = isinstance(m, nn.Linear | nn.LayerNorm | nn.ReLU | Residual) or type(m) in _CONV
    return x, grouped


def _ungroup(x: torch.Tensor, M: int) -> torch.Tensor:
    """(B, M*C, ...) -> (M, B, C, ...)."""
    B = x.shape[0]
    return x.view(B, M, -1, *x.shape[2:]).transpose(0, 1)
