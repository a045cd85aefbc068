"""Mode connectivity along a quadratic Bezier curve (Garipov et al. 2018), many pairs at once.

For two trained models θ₀, θ₁ the curve θ(t) = (1−t)²θ₀ + 2t(1−t)θ_c + t²θ₁ has one trainable
control point θ_c (initialized at the midpoint), trained to minimize the training loss at
t ~ U(0, 1). On evenly spaced t the curve's training loss or error v(t) gives

    mc = ½(v₀ + v₁) − v(t*),   t* = argmax_t |v(t) − ½(v₀ + v₁)|

(Yang et al. 2021): mc < 0 means a barrier between the two models (poorly connected), mc ≈ 0
a flat valley, mc > 0 a curve that beats its own (under-trained) endpoints. Pairs are stacked on
a leading dim and trained with one batched forward, like a Population; the control points are
trained with Adam under a cosine-decayed learning rate.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

Params = dict[str, torch.Tensor]  # name -> (P, *shape), P = number of pairs


def bezier(theta0: Params, thetac: Params, theta1: Params, t: torch.Tensor) -> Params:
    """Point(s) on the curves, t: (P,) one position per pair."""
    out = {}
    for k in theta0:
        tt = t.view(-1, *([1] * (theta0[k].dim() - 1)))
        out[k] = (1 - tt) ** 2 * theta0[k] + 2 * tt * (1 - tt) * thetac[k] + tt**2 * theta1[k]
    return out


def _member_labels(y: torch.Tensor, P: int) -> torch.Tensor:
    return y if y.dim() == 2 else y.expand(P, -1)  # (P, N)


def fit_curves(fwd: Callable, buffers: Params, theta0: Params, theta1: Params, x: torch.Tensor, y: torch.Tensor,
               epochs: int, batch_size: int, lr: float, seed: int = 0) -> Params:
    """Train the control points of P curves; x: (N, *input) shared, y: (N,) or (P, N)."""
    P, N = next(iter(theta0.values())).shape[0], x.shape[0]
    y = _member_labels(y, P)
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
            logits = fwd(bezier(theta0, thetac, theta1, t), buffers, x[idx].expand(P, *x[idx].shape))
            loss = F.cross_entropy(logits.flatten(0, 1), y[:, idx].flatten(), reduction="none").view(P, -1).mean(1)
            opt.zero_grad()
            loss.sum().backward()
            opt.step()
            sched.step()  # cosine decay to 0: the control point settles instead of hovering
    return {k: v.detach() for k, v in thetac.items()}


@torch.no_grad()
def evaluate_curves(fwd: Callable, buffers: Params, theta0: Params, thetac: Params, theta1: Params,
                    x: torch.Tensor, y: torch.Tensor, points: int, chunk: int = 1000) -> dict[str, torch.Tensor]:
    """Training loss and error at `points` evenly spaced t in [0, 1]: {"t": (T,), "loss": (P, T), "error": (P, T)}."""
    P, N = next(iter(theta0.values())).shape[0], x.shape[0]
    y = _member_labels(y, P)
    ts = torch.linspace(0, 1, points)
    loss, err = torch.zeros(P, points, dtype=torch.float64), torch.zeros(P, points, dtype=torch.float64)
    for j, t in enumerate(ts):
        theta = bezier(theta0, thetac, theta1, t.expand(P))
        for s in range(0, N, chunk):
            xb, yb = x[s : s + chunk], y[:, s : s + chunk]
            logits = fwd(theta, buffers, xb.expand(P, *xb.shape))  # (P, b, classes)
            ce = F.cross_entropy(logits.flatten(0, 1), yb.flatten(), reduction="none").view(P, -1)
            loss[:, j] += ce.double().sum(1)
            err[:, j] += (logits.argmax(-1) != yb).double().sum(1)
    return {"t": ts, "loss": loss / N, "error": err / N}


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
                 y: torch.Tensor, epochs: int, batch_size: int, lr: float, points: int, seed: int = 0) -> dict:
    """Fit the curves and measure them: mc on loss and error per pair, plus the curves themselves."""
    thetac = fit_curves(fwd, buffers, theta0, theta1, x, y, epochs, batch_size, lr, seed)
    ev = evaluate_curves(fwd, buffers, theta0, thetac, theta1, x, y, points)
    return {
        "t": ev["t"], "curve_loss": ev["loss"], "curve_error": ev["error"],
        "mc_loss": mode_connectivity(ev["loss"]), "mc_error": mode_connectivity(ev["error"]),
    }


def pairs(n: int) -> list[tuple[int, int]]:
    """All unordered pairs of n seeds, in a fixed order."""
    return [(i, j) for i in range(n) for j in range(i + 1, n)]
