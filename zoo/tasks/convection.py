"""1D convection u_t + β u_x = 0 for physics-informed networks (Krishnapriyan et al. 2021).

Domain x ∈ [0, 2π), t ∈ [0, 1]; initial condition u(0, x) = sin x; periodic boundary
u(t, 0) = u(t, 2π). The analytic solution is u(t, x) = sin(x − β t), so the error of a PINN is
known everywhere. Larger β makes the PINN loss harder to optimize (the "failure mode" of that
paper): β is the load axis of the PINN zoo.

Inputs are points (t, x). x_train: `collocation` points drawn uniformly (fixed, the same for every
β), y_train: the analytic solution there (used for the recorded error only, never for training);
x_test: a regular grid of 51 t × 64 x, y_test: the solution on it. The initial-condition and
boundary points live in the objective (zoo.objectives.Convection).
"""
from __future__ import annotations

import math

import torch

from zoo.objectives import Convection
from zoo.tasks.base import Task

TWO_PI = 2 * math.pi


def solution(t: torch.Tensor, x: torch.Tensor, beta: float) -> torch.Tensor:
    return torch.sin(x - beta * t)


def load_convection(beta: float = 1.0, collocation: int = 1000, initial: int = 256, boundary: int = 256) -> Task:
    if not isinstance(beta, (int, float)) or beta < 0:
        raise ValueError(f"beta must be a number >= 0 (got {beta!r})")
    for name, v in (("collocation", collocation), ("initial", initial), ("boundary", boundary)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer (got {v!r})")
    beta = float(beta)
    g = torch.Generator().manual_seed(0)
    pts = torch.rand(collocation, 2, generator=g) * torch.tensor([1.0, TWO_PI])  # (N, 2): (t, x)
    t = torch.linspace(0, 1, 51)
    x = torch.arange(64) * (TWO_PI / 64)
    grid = torch.cartesian_prod(t, x)  # (51 * 64, 2)
    x0 = torch.arange(initial) * (TWO_PI / initial)
    x_ic = torch.stack([torch.zeros(initial), x0], 1)  # (N0, 2) at t = 0
    tb = torch.linspace(0, 1, boundary)
    x_left = torch.stack([tb, torch.zeros(boundary)], 1)  # (Nb, 2) at x = 0
    x_right = torch.stack([tb, torch.full((boundary,), TWO_PI)], 1)  # at x = 2π
    objective = Convection(beta, x_ic, torch.sin(x0).unsqueeze(1), x_left, x_right)
    return Task(
        "convection",
        x_train=pts, y_train=solution(pts[:, :1], pts[:, 1:], beta),  # (N, 1)
        x_test=grid, y_test=solution(grid[:, :1], grid[:, 1:], beta),
        n_classes=1, objective=objective,
        args={"beta": beta, "collocation": collocation, "initial": initial, "boundary": boundary},
    )
