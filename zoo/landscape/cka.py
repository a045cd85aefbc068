"""Linear centered kernel alignment (CKA, Kornblith et al. 2019) between representations.

CKA compares what two networks compute on the same inputs, invariant to orthogonal
transforms and isotropic scaling of the features, so it can say whether the seeds of one
phase-plane cell learned the same representation (the IV-A / IV-B split of DESIGN.md).
Nothing here touches disk, Ray or the Hub.
"""
from __future__ import annotations

import itertools

import torch
import torch.nn as nn
from torch import Tensor


def linear_cka(X: Tensor, Y: Tensor) -> float:
    """Linear CKA of X (n, p) and Y (n, q), rows = the same n inputs, in [0, 1].

    Columns are centered; CKA = ‖YᵀX‖_F² / (‖XᵀX‖_F ‖YᵀY‖_F), computed in float64.
    Returns nan when a denominator is 0 (every feature of X or of Y is constant).
    """
    if X.dim() != 2 or Y.dim() != 2:
        raise ValueError(f"linear_cka needs 2-D (n, features) inputs, got {tuple(X.shape)} and {tuple(Y.shape)}")
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"linear_cka needs the same rows (inputs) in X and Y, got {X.shape[0]} and {Y.shape[0]}")
    X = X.detach().double()
    Y = Y.detach().double()
    X = X - X.mean(0, keepdim=True)  # (n, p)
    Y = Y - Y.mean(0, keepdim=True)  # (n, q)
    num = torch.linalg.matrix_norm(Y.T @ X) ** 2
    den = torch.linalg.matrix_norm(X.T @ X) * torch.linalg.matrix_norm(Y.T @ Y)
    if float(den) == 0.0:
        return float("nan")
    return float(num / den)


def pairwise_cka(features: list[Tensor], pairs: list[tuple[int, int]] | None = None) -> list[float]:
    """Linear CKA of the given pairs (i, j) of representations, by default every unordered pair
    (i < j, in the order of connectivity.pairs); [] if fewer than 2."""
    if pairs is None:
        return [linear_cka(a, b) for a, b in itertools.combinations(features, 2)]
    return [linear_cka(features[i], features[j]) for i, j in pairs]


def mean_pairwise_cka(features: list[Tensor]) -> float:
    """Mean linear CKA over all unordered pairs of representations; nan if fewer than 2.

    A pair whose CKA is nan (a constant representation) makes the mean nan: a dead network
    is reported, not averaged away.
    """
    values = pairwise_cka(features)
    return sum(values) / len(values) if values else float("nan")


def _head(net: nn.Module) -> nn.Module:
    """The output layer: the submodule named `head` (every zoo family has one), else the last Linear."""
    named = dict(net.named_modules())
    if isinstance(named.get("head"), nn.Linear):
        return named["head"]
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"penultimate_and_logits needs a net with an nn.Linear output layer; {type(net).__name__} has none")
    return linears[-1]


@torch.no_grad()
def penultimate_and_logits(net: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """Run `net` on x in eval mode: (the input of its output layer, its output), each flattened
    to (predictions, features): (n, d) and (n, classes) for a classifier, (n·T, d) and (n·T, V)
    for a sequence model (every position is one prediction). The net's mode is restored after.
    """
    head = _head(net)
    seen: list[tuple[Tensor, Tensor]] = []
    hook = head.register_forward_hook(lambda _m, args, out: seen.append((args[0], out)))
    was_training = net.training
    net.eval()
    try:
        out = net(x)
    finally:
        hook.remove()
        net.train(was_training)
    h, head_out = seen[-1]
    if out is not head_out:
        last = type(list(net.modules())[-1]).__name__
        raise ValueError(f"penultimate_and_logits needs a net whose output is its Linear output layer; "
                         f"{type(net).__name__} transforms it further (its last module is {last})")
    return h.reshape(-1, h.shape[-1]), out.reshape(-1, out.shape[-1])
