"""Mode connectivity along a quadratic Bezier curve (Garipov et al. 2018), many pairs at once.

For two trained models θ₀, θ₁ the curve θ(t) = (1−t)²θ₀ + 2t(1−t)θ_c + t²θ₁ has one trainable
control point θ_c (initialized at the midpoint), trained to minimize the training loss at
t ~ U(0, 1). On evenly spaced t the curve's training loss or error v(t) gives

    mc = ½(v₀ + v₁) − v(t*),   t* = argmax_t |v(t) − ½(v₀ + v₁)|

(Yang et al. 2021): mc < 0 means a barrier between the two models (poorly connected), mc ≈ 0
a flat valley, mc > 0 a curve that beats its own (under-trained) endpoints. Pairs are stacked on
a leading dim and trained with one batched forward, like a Population; the control points are
trained with Adam under a cosine-decayed learning rate. Loss and error are the task's objective
(zoo.objectives): cross-entropy and 1 − accuracy, or a PINN's loss and relative L2 error.

BatchNorm: a point on the curve has no running statistics of its own, so (as in Garipov et al.)
they are re-estimated at every evaluated t: reset, then one pass over the training data in
training mode with a cumulative average, before the point is evaluated in eval mode.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn as nn

from zoo.objectives import Classification, Objective, per_member

Params = dict[str, torch.Tensor]  # name -> (P, *shape), P = number of pairs


def bezier(theta0: Params, thetac: Params, theta1: Params, t: torch.Tensor) -> Params:
    """Point(s) on the curves, t: (P,) one position per pair."""
    out = {}
    for k in theta0:
        tt = t.view(-1, *([1] * (theta0[k].dim() - 1)))
        out[k] = (1 - tt) ** 2 * theta0[k] + 2 * tt * (1 - tt) * thetac[k] + tt**2 * theta1[k]
    return out


_BN = (nn.BatchNorm1d, nn.BatchNorm2d)


def _set_mode(template: nn.Module | None, train: bool) -> None:
    if template is not None:
        template.train(train)


@torch.no_grad()
def reestimate_bn(fwd: Callable, template: nn.Module, theta: Params, buffers: Params, x: torch.Tensor,
                  chunk: int = 1000) -> Params:
    """Fresh BatchNorm statistics for the stacked parameters `theta` from one pass over x.

    Returns new buffers (the given ones are not modified): running mean/var as the average over
    the chunks (what torch's momentum=None computes), and the batch count.
    """
    bns = [m for m in template.modules() if isinstance(m, _BN)]
    fresh = {}
    for k, v in buffers.items():
        if k.endswith("running_mean") or k.endswith("num_batches_tracked"):
            fresh[k] = torch.zeros_like(v)
        elif k.endswith("running_var"):
            fresh[k] = torch.ones_like(v)
        else:
            fresh[k] = v.clone()
    saved = [m.momentum for m in bns]
    was_training = template.training
    try:
        template.train()
        P = next(iter(theta.values())).shape[0]
        for k, s in enumerate(range(0, x.shape[0], chunk)):
            for m in bns:  # momentum 1/(k+1): the running value is the mean over the chunks so far
                m.momentum = 1.0 / (k + 1)  # (torch's momentum=None does the same but calls .item(), not vmap-able)
            fwd(theta, fresh, x[s : s + chunk].expand(P, *x[s : s + chunk].shape))  # updates `fresh` in place
    finally:
        for m, mom in zip(bns, saved):
            m.momentum = mom
        template.train(was_training)
    return fresh


def _has_bn(template: nn.Module | None) -> bool:
    return template is not None and any(isinstance(m, _BN) for m in template.modules())


def fit_curves(fwd: Callable, buffers: Params, theta0: Params, theta1: Params, x: torch.Tensor, y: torch.Tensor,
               epochs: int, batch_size: int, lr: float, seed: int = 0, objective: Objective | None = None,
               template: nn.Module | None = None) -> Params:
    """Train the control points of P curves; x: (N, *input) shared, y: (N, ...) or (P, N, ...).

    `template`: the module `fwd` runs (its mode is set: training mode here, so BatchNorm uses
    batch statistics on the curve, as in Garipov et al.).
    """
    objective = objective or Classification()
    P, N = next(iter(theta0.values())).shape[0], x.shape[0]
    y = per_member(y, P, N)
    if _has_bn(template):
        buffers = {k: v.clone() for k, v in buffers.items()}  # the running updates must not leak out
    _set_mode(template, True)
    thetac = {k: ((theta0[k] + theta1[k]) / 2).detach().clone().requires_grad_(True) for k in theta0}
    opt = torch.optim.Adam(list(thetac.values()), lr=lr)  # one Adam over stacked tensors = P Adams
    steps = epochs * -(-N // batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / max(1, steps))))
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(N, generator=g)
        for s in range(0, N, batch_size):
            idx = perm[s : s + batch_size]
            t = torch.rand(P, generator=g)  # (P,)
            loss = objective.losses(fwd, bezier(theta0, thetac, theta1, t), buffers,
                                    x[idx].expand(P, *x[idx].shape), y[:, idx])  # (P,)
            opt.zero_grad()
            loss.sum().backward()
            opt.step()
            sched.step()  # cosine decay to 0: the control point settles instead of hovering
    return {k: v.detach() for k, v in thetac.items()}


def evaluate_curves(fwd: Callable, buffers: Params, theta0: Params, thetac: Params, theta1: Params,
                    x: torch.Tensor, y: torch.Tensor, points: int, objective: Objective | None = None,
                    template: nn.Module | None = None) -> dict[str, torch.Tensor]:
    """Training loss and error at `points` evenly spaced t in [0, 1]: {"t": (T,), "loss": (P, T), "error": (P, T)}."""
    objective = objective or Classification()
    P, N = next(iter(theta0.values())).shape[0], x.shape[0]
    y = per_member(y, P, N)
    ts = torch.linspace(0, 1, points)
    loss, err = torch.zeros(P, points, dtype=torch.float64), torch.zeros(P, points, dtype=torch.float64)
    has_bn = _has_bn(template)
    for j, t in enumerate(ts):
        theta = bezier(theta0, thetac, theta1, t.expand(P))
        bufs = reestimate_bn(fwd, template, theta, buffers, x) if has_bn else buffers
        _set_mode(template, False)
        m = objective.evaluate(fwd, theta, bufs, x, y)
        loss[:, j], err[:, j] = m["loss"], objective.error(m)
    return {"t": ts, "loss": loss, "error": err}


def mode_connectivity(v: torch.Tensor) -> torch.Tensor:
    """mc per curve from values v: (P, T) along the curve (endpoints at 0 and T−1).

    t* ranges over the interior points 0 < t < 1: at an endpoint |v − ½(v₀+v₁)| is just
    ½|v₀ − v₁|, so admitting endpoints would report the seeds' difference in loss as a
    barrier (or a bonus) on a perfectly straight, monotone curve.
    """
    if v.shape[1] < 3:
        raise ValueError(f"need at least 3 points along the curve (got {v.shape[1]})")
    base = 0.5 * (v[:, :1] + v[:, -1:])  # (P, 1)
    dev = v[:, 1:-1] - base  # interior points only
    j = dev.abs().argmax(dim=1, keepdim=True)  # t* per curve
    return -dev.gather(1, j).squeeze(1)  # ½(v0+v1) − v(t*)


def connectivity(fwd: Callable, buffers: Params, theta0: Params, theta1: Params, x: torch.Tensor,
                 y: torch.Tensor, epochs: int, batch_size: int, lr: float, points: int, seed: int = 0,
                 objective: Objective | None = None, template: nn.Module | None = None) -> dict:
    """Fit the curves and measure them: mc on loss and error per pair, plus the curves themselves."""
    thetac = fit_curves(fwd, buffers, theta0, theta1, x, y, epochs, batch_size, lr, seed, objective, template)
    ev = evaluate_curves(fwd, buffers, theta0, thetac, theta1, x, y, points, objective, template)
    return {
        "t": ev["t"], "curve_loss": ev["loss"], "curve_error": ev["error"],
        "mc_loss": mode_connectivity(ev["loss"]), "mc_error": mode_connectivity(ev["error"]),
    }


def pairs(n: int, limit: int | None = None, seed: int = 0) -> list[tuple[int, int]]:
    """The unordered pairs of n seeds in a fixed order: all of them, or `limit` of them drawn
    without replacement by `seed` (kept in that fixed order), so a cell's cost is bounded."""
    every = [(i, j) for i in range(n) for j in range(i + 1, n)]
    if limit is None or limit >= len(every):
        return every
    g = torch.Generator().manual_seed(seed)
    keep = torch.randperm(len(every), generator=g)[:limit].sort().values.tolist()
    return [every[k] for k in keep]
