"""Initialization baselines a weight generator must beat, as plain functions on a module.

- `orthogonal(net, seed)`: every Linear / Conv weight a (scaled) orthogonal matrix (Saxe et al.
  2014), gain sqrt(2) for ReLU nets, biases 0.
- `lsuv(net, x, seed)`: "All you need is a good init" (Mishkin & Matas 2016): orthonormal init,
  then layer by layer in forward order each weight is rescaled until that layer's output has unit
  variance on the data batch x.
- `zero(net)`: "ZerO Initialization" (Zhao et al. 2022): deterministic, from zeros, identities and
  Hadamard matrices: a square weight is the identity, a narrowing one a partial identity, a
  widening one c·H·I* (H a Hadamard matrix, c = 2^(-(m-1)/2)), the last layer zero, biases 0.
- `weight_selection(net, larger)`: "Initializing Models with Larger Ones" (Xu et al. 2024): every
  tensor of the smaller net takes the elements of the larger trained net's tensor at evenly spaced
  indices along each dimension (the same indices for a dimension wherever it recurs, so the
  selected units stay wired to each other).

Each fills `net` in place and returns it; nothing here touches disk. Norm layers get weight 1 and
bias 0 (what every scheme of zoo.nets.init_ does); other parameters are left as they are.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from zoo.errors import ZooError
from zoo.nets import NORMS, reset_norm

LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d)
__all__ = ["LAYERS", "hadamard", "lsuv", "orthogonal", "selection_indices", "weight_selection", "zero"]


def _layers(net: nn.Module) -> list[nn.Module]:
    return [m for m in net.modules() if isinstance(m, LAYERS)]


def _norms(net: nn.Module) -> None:
    for m in net.modules():
        if isinstance(m, NORMS):
            reset_norm(m)  # as zoo.nets.init_ does


@torch.no_grad()
def orthogonal(net: nn.Module, seed: int = 0, gain: float = math.sqrt(2.0)) -> nn.Module:
    """Orthogonal Linear / Conv weights (a conv's kernel flattened to (out, in·k)) times `gain`,
    drawn from `seed`; biases 0."""
    g = torch.Generator().manual_seed(int(seed))
    for m in _layers(net):
        nn.init.orthogonal_(m.weight, gain=gain, generator=g)
        if m.bias is not None:
            m.bias.zero_()
    _norms(net)
    return net


@torch.no_grad()
def lsuv(net: nn.Module, x: torch.Tensor, seed: int = 0, tol: float = 0.01, max_iter: int = 10) -> nn.Module:
    """Layer-sequential unit-variance init: orthonormal weights (gain 1), then for each Linear /
    Conv in forward order, weight /= sqrt(var(its output on x)) until |var - 1| < tol (at most
    max_iter passes a layer). x: a batch of training inputs (n, ...)."""
    orthogonal(net, seed, gain=1.0)
    was = net.training
    net.eval()
    try:
        for layer in _layers(net):
            out: dict[str, torch.Tensor] = {}
            hook = layer.register_forward_hook(lambda mod, inp, o: out.__setitem__("y", o))
            try:
                for _ in range(max_iter):
                    net(x)
                    var = float(out["y"].var())
                    if not math.isfinite(var) or var == 0 or abs(var - 1) < tol:
                        break
                    layer.weight.div_(math.sqrt(var))
            finally:
                hook.remove()
    finally:
        net.train(was)
    return net


def hadamard(n: int) -> torch.Tensor:
    """The n x n Sylvester Hadamard matrix (n a power of 2): entries ±1, H Hᵀ = n I."""
    if n < 1 or n & (n - 1):
        raise ValueError(f"a Sylvester Hadamard matrix needs a power of 2 (got {n})")
    h = torch.ones(1, 1)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


@torch.no_grad()
def zero(net: nn.Module) -> nn.Module:
    """ZerO: deterministic. A Linear weight (out, in): the identity when out == in, the partial
    identity I* (ones on the diagonal) when out < in, c·H_m·I* when out > in (H_m the 2^m
    Hadamard matrix, m = ceil(log2 out), rows cut to out, c = 2^(-(m-1)/2)); a Conv the same on
    the kernel's centre tap, zero elsewhere; the last layer zero; biases 0."""
    layers = _layers(net)
    if not layers:
        raise ZooError(f"ZerO initializes Linear / Conv layers; {type(net).__name__} has none")
    for i, m in enumerate(layers):
        w = m.weight
        w.zero_()
        if m.bias is not None:
            m.bias.zero_()
        if i == len(layers) - 1:
            continue  # the last layer starts at zero
        out, inp = w.shape[0], w.shape[1]
        eye = torch.eye(out, inp)  # the partial identity I*
        if out > inp:
            mexp = math.ceil(math.log2(out))
            eye = 2 ** (-(mexp - 1) / 2) * (hadamard(2**mexp)[:out, :out] @ torch.eye(out, inp))
        if w.dim() == 2:
            w.copy_(eye)
        else:
            centre = tuple(k // 2 for k in w.shape[2:])
            w[(slice(None), slice(None), *centre)] = eye
    _norms(net)
    return net


def selection_indices(small: int, large: int) -> torch.Tensor:
    """`small` evenly spaced indices into range(large), the first and last included (uniform
    element selection); the identity when small == large."""
    if small > large:
        raise ValueError(f"cannot select {small} elements from {large}")
    if small == 1:
        return torch.zeros(1, dtype=torch.long)
    return torch.round(torch.linspace(0, large - 1, small)).long()


@torch.no_grad()
def weight_selection(net: nn.Module, larger: dict[str, torch.Tensor]) -> nn.Module:
    """Weight selection: every parameter and buffer of `net` from the same-named tensor of the
    larger trained state `larger`, taking evenly spaced indices along each dimension (the same
    indices for the same (large, small) sizes, so a layer's selected outputs are the next
    layer's selected inputs). A tensor of the same shape is copied as it is."""
    state = net.state_dict()
    missing = sorted(set(state) - set(larger))
    if missing:
        raise ZooError(f"weight selection: the larger net has no tensor(s) {missing[:5]}; the two nets must be "
                       "of one family with the same layer names")
    new = {}
    for name, t in state.items():
        src = torch.as_tensor(larger[name])
        if src.dim() != t.dim() or any(s < d for s, d in zip(src.shape, t.shape)):
            raise ZooError(f"weight selection: {name} has shape {tuple(t.shape)}, the larger net's "
                           f"{tuple(src.shape)}; every dimension must be at least as large")
        out = src
        for dim, (d, s) in enumerate(zip(t.shape, src.shape)):
            if d != s:
                out = out.index_select(dim, selection_indices(d, s))
        new[name] = out.to(t.dtype).clone()
    net.load_state_dict(new)
    return net
