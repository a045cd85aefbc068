"""What a task asks of a net: the training loss and the metrics recorded per split.

Every objective works on stacked members, the shape a Population, the Hessian and the Bezier
curves all use: `fwd(params, buffers, x) -> out` with x: (M, B, *input) and out: (M, B, *output).
One model is the case M = 1 (`single_forward`), so a row's recorded metrics and
`zoo.evaluate(zoo.load_model(row))` come from the same code.

- `Classification`: cross-entropy over the last dim of the output; any dims between the batch
  and the classes are positions (a GPT's (M, B, T, V) logits with (M, B, T) targets), each
  position one prediction. Metrics: loss (mean nats per prediction) and acc.
- `Convection`: a physics-informed loss for u_t + β u_x = 0 on (t, x) points: the PDE residual
  (derivatives of the net's output w.r.t. its input, through autograd) + the initial condition +
  periodic boundaries. Metrics: loss (that objective on the split's points) and rel_l2, the
  relative L2 error against the analytic solution (the targets y).

`error(metrics)` is the quantity mode connectivity reports as `mc_error`: 1 − acc, or rel_l2.
Nothing here touches disk, Ray or the Hub.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Params = dict[str, Tensor]
Forward = Callable[[Params, Params, Tensor], Tensor]  # (params, buffers, x (M, B, *in)) -> (M, B, *out)
EVAL_CHUNK = 1000  # samples per forward pass in evaluation; fixed so results are reproducible


def single_forward(net: nn.Module) -> Forward:
    """A Forward for one plain module (M = 1); params and buffers are the module's own."""

    def fwd(params: Params, buffers: Params, x: Tensor) -> Tensor:
        return net(x[0]).unsqueeze(0)

    return fwd


def per_member(y: Tensor, M: int, N: int) -> Tensor:
    """Targets as (M, N, ...): given per member (M, N, ...) or shared (N, ...) (then expanded)."""
    if y.dim() >= 2 and tuple(y.shape[:2]) == (M, N):
        return y
    if y.shape[0] == N:
        return y.expand(M, *y.shape)
    raise ValueError(f"targets must be ({N}, ...) or ({M}, {N}, ...), got {tuple(y.shape)}")


def _chunks(n: int, chunk: int):
    for i in range(0, n, chunk):
        yield slice(i, min(n, i + chunk))


class Objective:
    """Base: `losses` (what training minimizes, per member) and `evaluate` (recorded metrics)."""

    metric_names: tuple[str, ...] = ("loss",)
    label_noise = False  # whether label noise makes sense (class labels)

    def losses(self, fwd: Forward, params: Params, buffers: Params, x: Tensor, y: Tensor) -> Tensor:
        """Mean training loss per member on a batch: x (M, B, *in), y (M, B, ...) -> (M,)."""
        raise NotImplementedError

    def evaluate(self, fwd: Forward, params: Params, buffers: Params, x: Tensor, y: Tensor,
                 chunk: int = EVAL_CHUNK) -> dict[str, Tensor]:
        """Metrics per member on a whole split: x (N, *in) shared, y (M, N, ...) -> name -> (M,) float64."""
        raise NotImplementedError

    def error(self, metrics: dict[str, Tensor]) -> Tensor:
        raise NotImplementedError

    def to(self, dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> "Objective":
        """The objective with its own tensors (if any) in `dtype` and on `device`."""
        return self


class Classification(Objective):
    metric_names = ("loss", "acc")
    label_noise = True

    def losses(self, fwd, params, buffers, x, y):
        out = fwd(params, buffers, x)  # (M, B, ..., C)
        M = out.shape[0]
        ce = F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1), reduction="none")
        return ce.view(M, -1).mean(1)

    @torch.no_grad()
    def evaluate(self, fwd, params, buffers, x, y, chunk=EVAL_CHUNK):
        M, N = y.shape[0], x.shape[0]
        loss = torch.zeros(M, dtype=torch.float64, device=x.device)
        correct = torch.zeros(M, dtype=torch.float64, device=x.device)
        count = 0
        for s in _chunks(N, chunk):
            out = fwd(params, buffers, x[s].expand(M, *x[s].shape))  # (M, b, ..., C)
            yb = y[:, s]  # (M, b, ...)
            ce = F.cross_entropy(out.reshape(-1, out.shape[-1]), yb.reshape(-1), reduction="none").view(M, -1)
            loss += ce.double().sum(1)
            correct += (out.argmax(-1) == yb).view(M, -1).double().sum(1)
            count += ce.shape[1]
        return {"loss": loss / count, "acc": correct / count}

    def error(self, metrics):
        return 1.0 - metrics["acc"]


class Convection(Objective):
    """Physics-informed loss of u_t + β u_x = 0, x ∈ [0, 2π), t ∈ [0, 1], inputs (t, x).

    loss = mean residual² on the batch's collocation points + mean (u(0, x) − u₀(x))² on the
    initial-condition points + mean (u(t, 0) − u(t, 2π))² on the boundary points (all weights 1,
    as in Krishnapriyan et al. 2021, "Characterizing possible failure modes in PINNs").
    """

    metric_names = ("loss", "rel_l2")

    def __init__(self, beta: float, x_ic: Tensor, u_ic: Tensor, x_left: Tensor, x_right: Tensor):
        self.beta = float(beta)
        self.x_ic, self.u_ic = x_ic, u_ic  # (N0, 2), (N0, 1)
        self.x_left, self.x_right = x_left, x_right  # (Nb, 2) at x = 0 and x = 2π, the same t

    def to(self, dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> "Convection":
        return Convection(self.beta, *(t.to(device=device, dtype=dtype)
                                       for t in (self.x_ic, self.u_ic, self.x_left, self.x_right)))

    def residual(self, fwd: Forward, params: Params, buffers: Params, x: Tensor,
                 create_graph: bool = True) -> tuple[Tensor, Tensor]:
        """(u, u_t + β u_x) at x (M, B, 2) -> (M, B, 1), (M, B); create_graph for training
        (the loss is differentiated again w.r.t. the parameters), off for evaluation."""
        x = x.detach().requires_grad_(True)
        u = fwd(params, buffers, x)  # (M, B, 1)
        (du,) = torch.autograd.grad(u.sum(), x, create_graph=create_graph)  # (M, B, 2): each u depends on its own x only
        return u, du[..., 0] + self.beta * du[..., 1]

    def _conditions(self, fwd, params, buffers, M: int) -> Tensor:
        """Initial-condition + boundary terms per member: (M,)."""
        u0 = fwd(params, buffers, self.x_ic.expand(M, *self.x_ic.shape))  # (M, N0, 1)
        ic = (u0 - self.u_ic).pow(2).flatten(1).mean(1)
        both = torch.cat([self.x_left, self.x_right]).expand(M, -1, -1)  # one forward for both sides
        ub = fwd(params, buffers, both)  # (M, 2 Nb, 1)
        nb = self.x_left.shape[0]
        bc = (ub[:, :nb] - ub[:, nb:]).pow(2).flatten(1).mean(1)
        return ic + bc

    def losses(self, fwd, params, buffers, x, y):
        M = x.shape[0]
        _, r = self.residual(fwd, params, buffers, x)  # (M, B)
        return r.pow(2).mean(1) + self._conditions(fwd, params, buffers, M)

    def evaluate(self, fwd, params, buffers, x, y, chunk=EVAL_CHUNK):
        M, N = y.shape[0], x.shape[0]
        params = {k: v.detach() for k, v in params.items()}
        res = torch.zeros(M, dtype=torch.float64, device=x.device)
        err = torch.zeros(M, dtype=torch.float64, device=x.device)
        ref = torch.zeros(M, dtype=torch.float64, device=x.device)
        with torch.enable_grad():  # the residual needs input derivatives even inside no_grad
            for s in _chunks(N, chunk):
                u, r = self.residual(fwd, params, buffers, x[s].expand(M, *x[s].shape), create_graph=False)
                res += r.detach().double().pow(2).sum(1)
                yb = y[:, s]
                err += (u.detach() - yb).double().pow(2).flatten(1).sum(1)
                ref += yb.double().pow(2).flatten(1).sum(1)
        with torch.no_grad():
            cond = self._conditions(fwd, params, buffers, M).double()
        return {"loss": res / N + cond, "rel_l2": (err / ref).sqrt()}

    def error(self, metrics):
        return metrics["rel_l2"]
