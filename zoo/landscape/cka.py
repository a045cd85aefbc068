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


def mean_pairwise_cka(features: list[Tensor]) -> float:
    """Mean linear CKA over all unordered pairs of representations; nan if fewer than 2.

    A pair whose CKA is nan (a constant representation) makes the mean nan: a dead network
    is reported, not averaged away.
    """
    if len(features) < 2:
        return float("nan")
    values = [linear_cka(a, b) for a, b in itertools.combinations(features, 2)]
    return sum(values) / len(values)


@torch.no_grad()
def penultimate_and_logits(net: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """Run a Sequential net on x: (the input of its last Linear layer, flattened (n, features),
    logits (n, classes)). Eval mode during the call; the net's mode is restored after.
    """
    if not isinstance(net, nn.Sequential) or len(net) == 0:
        raise ValueError(f"penultimate_and_logits needs a non-empty nn.Sequential, got {type(net).__name__}")
    name, last = list(net.named_children())[-1]
    if not isinstance(last, nn.Linear):
        raise ValueError(f"penultimate_and_logits needs a net whose last layer is nn.Linear; "
                         f"its last child {name!r} is {type(last).__name__}")
    was_training = net.training
    net.eval()
    try:
        h = net[:-1](x)  # (n, ..., in_features)
        logits = last(h)  # (n, classes)
    finally:
        net.train(was_training)
    return h.flatten(1), logits
