"""Hessian metrics of the training loss for a stack of M independent members at once.

Members of a Population share nothing but the architecture: member m's loss depends only on
member m's slice of every stacked parameter. So the Hessian of the SUM of member losses w.r.t.
the stacked parameters is block-diagonal, and one Hessian-vector product of the summed loss
with a stacked vector v (M, *shape) returns every member's own H_m v_m. Power iteration and
Hutchinson's trace estimator (PyHessian, Yao et al. 2020, `pyhessian/hessian.py`
`eigenvalues()` / `trace()`) then run for all members together, with per-member inner
products and per-member stopping.

As in PyHessian, the gradient graph (create_graph=True) is built once per loss and every HVP
is one backward pass through it. A member whose loss is NaN/inf gets NaN metrics and never
holds the others back. Nothing here touches disk, Ray or the Hub.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from zoo.objectives import per_member
from zoo.train import derived_seed

Params = dict[str, Tensor]  # name -> (M, *shape)
LossFn = Callable[[Params], Tensor]  # params -> (M,) per-member losses
Generators = torch.Generator | list[torch.Generator]  # one stream, or one per member


# ---- per-member vector algebra on stacked dicts ------------------------------------------------
def _dot(a: Params, b: Params) -> Tensor:
    """Per-member inner product over all parameter tensors: (M,), accumulated in float64."""
    return sum((a[k].double() * b[k].double()).flatten(1).sum(1) for k in a)


def _scale(v: Params, s: Tensor) -> Params:
    """v_m * s_m for every member; s: (M,)."""
    return {k: t * s.to(t.dtype).view(-1, *([1] * (t.dim() - 1))) for k, t in v.items()}


def _normalize(v: Params) -> Params:
    """Each member's vector scaled to unit norm (the norm over all its parameter tensors)."""
    norm = _dot(v, v).sqrt().clamp_min(1e-30)  # (M,)
    return _scale(v, 1.0 / norm)


def _default_generator(generator: Generators | None, seed: int = 0) -> Generators:
    return generator if generator is not None else torch.Generator().manual_seed(seed)


def _draw(params: Params, g: Generators, sample: Callable[[tuple, torch.Generator], Tensor]) -> Params:
    """Random stacked vectors like params: from one generator, or member m's from g[m] alone
    (then a member's draws do not depend on which population it is computed in)."""
    if isinstance(g, torch.Generator):
        return {k: sample(tuple(p.shape), g).to(p.device, p.dtype) for k, p in params.items()}
    M = next(iter(params.values())).shape[0]
    if len(g) != M:
        raise ValueError(f"got {len(g)} generators for {M} members; pass one generator or one per member")
    return {k: torch.stack([sample(tuple(p.shape[1:]), gm) for gm in g]).to(p.device, p.dtype)
            for k, p in params.items()}


def _normal(shape: tuple, g: torch.Generator) -> Tensor:
    return torch.randn(shape, generator=g, device=g.device)


def _rademacher(shape: tuple, g: torch.Generator) -> Tensor:
    """Entries ±1 with probability ½ each."""
    return (torch.randint(0, 2, shape, generator=g, device=g.device) * 2 - 1).float()


# ---- the Hessian operator --------------------------------------------------------------------
class _HessianOperator:
    """v -> H v for the block-diagonal Hessian of sum_m loss_m, gradient graph built once.

    The caller's tensors are never modified: the leaves are detached views with requires_grad.
    """

    def __init__(self, loss_fn: LossFn, params: Params):
        self.leaves = {k: p.detach().requires_grad_(True) for k, p in params.items()}  # (M, *shape)
        self.losses = loss_fn(self.leaves)  # (M,)
        if self.losses.dim() != 1:
            raise ValueError(f"loss_fn must return per-member losses of shape (M,), got {tuple(self.losses.shape)}")
        grads = torch.autograd.grad(self.losses.sum(), list(self.leaves.values()), create_graph=True,
                                    allow_unused=True)
        # a parameter the loss does not depend on has a zero gradient and a zero Hessian block
        self._pairs = [(k, g) for k, g in zip(self.leaves, grads) if g is not None and g.requires_grad]
        self.finite = torch.isfinite(self.losses.detach())  # (M,)

    @property
    def n_members(self) -> int:
        return int(self.losses.shape[0])

    def __call__(self, v: Params) -> Params:
        out: Params = {}
        if self._pairs:
            keys, grads = zip(*self._pairs)
            hv = torch.autograd.grad(grads, [self.leaves[k] for k in keys], grad_outputs=[v[k] for k in keys],
                                     retain_graph=True, allow_unused=True)
            out = {k: h.detach() for k, h in zip(keys, hv) if h is not None}
        return {k: out[k] if k in out else torch.zeros_like(p) for k, p in self.leaves.items()}


def hvp(loss_fn: LossFn, params: Params, v: Params) -> Params:
    """Every member's Hessian-vector product H_m v_m, by double backward of sum_m loss_m.

    params, v: name -> (M, *shape); returns name -> (M, *shape).
    """
    return _HessianOperator(loss_fn, params)(v)


# ---- power iteration and Hutchinson on an operator -------------------------------------------
def _power_iteration(op: _HessianOperator, max_iter: int, tol: float, g: Generators) -> Tensor:
    """PyHessian's `eigenvalues()` (top one), per member, with per-member stopping: (M,)."""
    M = op.n_members
    v = _normalize(_draw(op.leaves, g, _normal))
    eig = torch.full((M,), float("nan"), dtype=torch.float64)
    done = ~op.finite.cpu()  # a non-finite member stays NaN and is not waited for
    for i in range(max_iter):
        if bool(done.all()):
            break
        hv = op(v)
        new = _dot(hv, v).cpu()  # Rayleigh quotient v·Hv, ‖v‖ = 1
        if i > 0:
            converged = (new - eig).abs() / (eig.abs() + 1e-6) < tol
        else:
            converged = torch.zeros(M, dtype=torch.bool)
        eig = torch.where(done, eig, new)  # a converged member keeps the value it stopped at
        done |= converged | ~torch.isfinite(new)
        v = _normalize(hv)
    return eig.to(torch.float32)


def _hutchinson(op: _HessianOperator, max_iter: int, tol: float, min_probes: int,
                g: Generators) -> tuple[Tensor, Tensor]:
    """PyHessian's `trace()`, per member, at least `min_probes` probes: (mean, stderr), each (M,)."""
    M = op.n_members
    total = torch.zeros(M, dtype=torch.float64)
    total_sq = torch.zeros(M, dtype=torch.float64)
    count = torch.zeros(M, dtype=torch.float64)
    mean = torch.zeros(M, dtype=torch.float64)
    done = ~op.finite.cpu()
    for _ in range(max_iter):
        if bool(done.all()):
            break
        v = _draw(op.leaves, g, _rademacher)
        sample = _dot(op(v), v).cpu()  # vᵀ H v, (M,)
        live = ~done
        total += torch.where(live, sample, 0.0)
        total_sq += torch.where(live, sample * sample, 0.0)
        count += live.double()
        new_mean = total / count.clamp_min(1)
        converged = ((new_mean - mean).abs() / (mean.abs() + 1e-6) < tol) & (count >= min_probes)
        mean = torch.where(live, new_mean, mean)
        done |= converged
    n = count.clamp_min(1)
    var = (total_sq - total * total / n) / (n - 1)  # unbiased sample variance; NaN for one probe
    stderr = (var.clamp_min(0) / n).sqrt()
    bad = ~op.finite.cpu() | (count == 0)
    mean = torch.where(bad, float("nan"), mean)
    stderr = torch.where(bad | (count < 2), float("nan"), stderr)
    return mean.to(torch.float32), stderr.to(torch.float32)


# ---- public functions ------------------------------------------------------------------------
def top_eigenvalue(loss_fn: LossFn, params: Params, max_iter: int = 100, tol: float = 1e-3,
                   generator: Generators | None = None) -> Tensor:
    """Top (largest-magnitude) Hessian eigenvalue per member by power iteration: (M,).

    Random normal start per member; each step λ = v·Hv (Rayleigh quotient) and v <- Hv/‖Hv‖.
    A member stops when |λ_new − λ_old| / (|λ_old| + 1e-6) < tol; the loop ends when every
    member has stopped or after max_iter HVPs. tol=0 runs exactly max_iter HVPs.
    generator: one for all members, or a list of one per member (member m draws only from its
    own); None = seed 0.
    """
    op = _HessianOperator(loss_fn, params)
    return _power_iteration(op, max_iter, tol, _default_generator(generator))


def hutchinson_trace(loss_fn: LossFn, params: Params, max_iter: int = 100, tol: float = 1e-3,
                     generator: Generators | None = None, min_probes: int = 10) -> tuple[Tensor, Tensor]:
    """Hessian trace per member by Hutchinson's estimator with Rademacher probes: (mean, stderr).

    tr(H_m) ≈ mean over probes of v_mᵀ H_m v_m. A member stops once it has at least
    `min_probes` probes and the running mean changed by less than `tol` relative (PyHessian's
    criterion); at most max_iter probes. stderr = sample std / sqrt(probes), each (M,); nan
    with a single probe. generator: as in `top_eigenvalue`.
    """
    op = _HessianOperator(loss_fn, params)
    return _hutchinson(op, max_iter, tol, min_probes, _default_generator(generator))


def population_loss_fn(pop, x: Tensor, y: Tensor) -> LossFn:
    """loss_fn(params) -> (M,): each member's training loss (the task's objective) on shared inputs x.

    x: (N, *input_shape), the same for all members; y: shared (N, ...) or per member (M, N, ...).
    The model runs in eval mode (BatchNorm uses its running statistics, so the loss is a function
    of the parameters alone, as in PyHessian).
    """
    M, N = len(pop.members), x.shape[0]
    pop.template.eval()
    xe = x.expand(M, *x.shape)  # (M, N, *input_shape)
    ye = per_member(y, M, N)  # (M, N, ...)

    def loss_fn(params: Params) -> Tensor:
        return pop.objective.losses(pop._fwd, params, pop.buffers, xe, ye)  # (M,)

    return loss_fn


def hessian_metrics(pop, x: Tensor, y: Tensor, iters: int, probes: int, tol: float,
                    seed: int = 0) -> dict[str, Tensor]:
    """Top eigenvalue and Hutchinson trace of every member's loss on (x, y), one gradient graph.

    x, y: the training batches concatenated (PyHessian's batch-size-weighted average of HVPs
    over batches is the HVP of the mean loss over their concatenation). Returns
    {"top_eigenvalue", "trace", "trace_stderr"}, each (M,). Each member's random vectors come
    from its own generator seeded by (seed, model_id), so a member's metrics do not depend on
    which population (bundle) computed them, up to float rounding.
    """
    op = _HessianOperator(population_loss_fn(pop, x, y), pop.params)
    ids = [m.model_id for m in pop.members]
    g_eig = [torch.Generator().manual_seed(derived_seed("hessian_eigenvalue", seed, i)) for i in ids]
    g_tr = [torch.Generator().manual_seed(derived_seed("hessian_trace", seed, i)) for i in ids]
    eig = _power_iteration(op, iters, tol, g_eig)
    trace, stderr = _hutchinson(op, probes, tol, min(10, probes), g_tr)
    return {"top_eigenvalue": eig, "trace": trace, "trace_stderr": stderr}
