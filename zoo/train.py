"""Population training: many members of one architecture trained as one stacked computation.

Members share the architecture, the batch size, the data subset and the epoch budget; each has
its own init (from its seed), data order, learning rate, weight decay and label noise. The
forward pass is `torch.func.functional_call` vmapped over stacked parameters, so member i's
computation is exactly a plain model's computation with member i's tensors; the optimizers are
written on stacked tensors with the same update rules as `torch.optim.SGD` / `Adam` / `AdamW`.

A member whose training loss becomes NaN/inf is frozen (no further updates) and recorded as
diverged; the others go on. Nothing here touches disk, Ray or the Hub.
"""
from __future__ import annotations

import hashlib
import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call, vmap

from zoo import nets
from zoo.stacked import stacked_forward
from zoo.tasks import Task

EVAL_CHUNK = 1000  # samples per forward pass in evaluation; fixed so results are reproducible


# ---- evaluation of one model (the reference every recorded checkpoint metric comes from) -----
@contextmanager
def _single_thread():
    """Evaluate on one thread so results are bitwise identical whatever the caller's setting."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@torch.no_grad()
def evaluate_module(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Mean cross-entropy and accuracy of `net` on (x, y), in eval mode."""
    was_training = net.training
    net.eval()
    loss_sum, correct = 0.0, 0
    with _single_thread():
        for i in range(0, x.shape[0], EVAL_CHUNK):
            logits = net(x[i : i + EVAL_CHUNK])  # (chunk, classes)
            yb = y[i : i + EVAL_CHUNK]
            loss_sum += float(F.cross_entropy(logits, yb, reduction="sum"))
            correct += int((logits.argmax(1) == yb).sum())
    net.train(was_training)
    n = x.shape[0]
    return {"loss": loss_sum / n, "acc": correct / n}


# ---- data for a population ----------------------------------------------------------------
def derived_seed(*parts) -> int:
    """A 63-bit seed derived from labelled parts, e.g. derived_seed("order", 3)."""
    h = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(h[:8], "little") >> 1


def train_subset(n_total: int, fraction: float) -> torch.Tensor:
    """Indices of the training subset for a data fraction: fixed per fraction, shared by all seeds."""
    n = max(1, round(fraction * n_total))
    g = torch.Generator().manual_seed(derived_seed("subset"))
    return torch.randperm(n_total, generator=g)[:n].sort().values


def noisy_labels(y: torch.Tensor, noise: float, n_classes: int) -> torch.Tensor:
    """Replace a fraction `noise` of labels by a different class, the same pattern for every seed."""
    if noise == 0:
        return y.clone()
    g = torch.Generator().manual_seed(derived_seed("label_noise", f"{noise:.6g}"))
    k = round(noise * y.shape[0])
    idx = torch.randperm(y.shape[0], generator=g)[:k]
    shift = torch.randint(1, n_classes, (k,), generator=g)
    out = y.clone()
    out[idx] = (y[idx] + shift) % n_classes
    return out


# ---- schedules (multiplier of the base lr at a step) -------------------------------------------
def lr_multiplier(schedule: str, step: int, total: int) -> float:
    """constant: 1; cosine: ½(1+cos(π s/T)); onecycle: cosine warm-up from 1/25 over 30% then
    cosine decay to 1/(25·10⁴) (the shape of torch's OneCycleLR, without momentum cycling)."""
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
    if schedule == "onecycle":
        start, end, peak = 1 / 25, 1 / 25e4, 1.0
        up = max(1, int(0.3 * total))
        if step <= up:
            return end_cos(start, peak, step / up)
        return end_cos(peak, end, min(1.0, (step - up) / max(1, total - up)))
    raise ValueError(f"unknown schedule {schedule!r}; valid: constant, cosine, onecycle")


def end_cos(a: float, b: float, frac: float) -> float:
    return b + (a - b) * 0.5 * (1 + math.cos(math.pi * frac))


# ---- the population ----------------------------------------------------------------------
def population_forward(template: nn.Module, vectorize: str = "auto") -> tuple[Callable, str]:
    """f(params, buffers, x) -> logits for stacked members, x: (M, B, *input) -> (M, B, classes).

    "auto": hand-batched kernels where the net allows (zoo.stacked), else vmap over
    functional_call; "vmap": always vmap. Returns (f, "stacked" | "vmap").
    """
    if vectorize not in ("auto", "vmap"):
        raise ValueError(f"vectorize must be 'auto' or 'vmap' (got {vectorize!r})")
    stacked = stacked_forward(template) if vectorize == "auto" else None
    if stacked is not None:
        return stacked, "stacked"

    def one(params, buffers, x):
        return functional_call(template, {**params, **buffers}, (x,))

    return vmap(one, in_dims=(0, 0, 0)), "vmap"


@dataclass
class MemberConfig:
    model_id: str
    seed: int
    lr: float
    weight_decay: float = 0.0
    label_noise: float = 0.0


@dataclass
class MemberResult:
    model_id: str
    status: str  # "ok" | "diverged"
    diverged_epoch: int | None
    curves: dict[str, list[float]]  # train_loss, train_acc, test_loss, test_acc; index = epoch
    checkpoints: dict[int, dict] = field(default_factory=dict)  # epoch -> {"metrics", "state"}


class Population:
    """Members of one architecture trained together.

    `common` holds the shared training fields (optimizer, momentum, nesterov, betas, eps,
    batch_size, epochs, schedule, data_fraction); per-member fields are in MemberConfig.
    """

    def __init__(self, task: Task, arch: dict, init: str, common: dict, members: list[MemberConfig],
                 vectorize: str = "auto"):
        if not members:
            raise ValueError("a population needs at least one member")
        self.task, self.arch, self.init, self.common, self.members = task, dict(arch), init, common, members
        knobs = {k: v for k, v in self.arch.items() if k != "family"}
        self.template = nets.build(self.arch["family"], self.task, **knobs)
        states = [nets.init_(nets.build(self.arch["family"], self.task, **knobs), m.seed, init).state_dict()
                  for m in members]
        self.param_names = [n for n, _ in self.template.named_parameters()]
        self.buffer_names = [n for n, _ in self.template.named_buffers()]
        # stacked leaves: name -> (members, *shape)
        self.params = {n: torch.stack([s[n] for s in states]).requires_grad_(True) for n in self.param_names}
        self.buffers = {n: torch.stack([s[n] for s in states]) for n in self.buffer_names}
        M = len(members)
        self.lr = torch.tensor([m.lr for m in members], dtype=torch.float32)  # (M,)
        self.wd = torch.tensor([m.weight_decay for m in members], dtype=torch.float32)  # (M,)
        self._any_wd = bool((self.wd != 0).any())
        self.alive = torch.ones(M, dtype=torch.bool)
        self._all_alive = True
        self.diverged_epoch: list[int | None] = [None] * M
        # data: one shared subset, per-member (possibly noisy) labels
        self.subset = train_subset(task.n_train, float(common.get("data_fraction", 1.0)))
        self.x = task.x_train[self.subset]  # (n, *input_shape)
        y = task.y_train[self.subset]
        self.y = torch.stack([noisy_labels(y, m.label_noise, task.n_classes) for m in members])  # (M, n)
        self.order_gens = [torch.Generator().manual_seed(derived_seed("order", m.seed)) for m in members]
        self._fwd, self.vectorized_by = population_forward(self.template, vectorize)
        self._opt_state: dict[str, dict[str, torch.Tensor]] = {}
        self.step_count = 0

    @classmethod
    def from_states(cls, task: Task, arch: dict, common: dict, members: list[MemberConfig],
                    states: list[dict[str, np.ndarray]], vectorize: str = "auto") -> "Population":
        """A population holding given (trained) weights, e.g. zoo checkpoints for the landscape metrics."""
        pop = cls(task, arch, "kaiming_uniform", common, members, vectorize=vectorize)
        if len(states) != len(members):
            raise ValueError(f"{len(states)} states for {len(members)} members")
        for n in pop.param_names:
            pop.params[n] = torch.stack([torch.tensor(np.asarray(s[n])) for s in states]).requires_grad_(True)
        for n in pop.buffer_names:
            pop.buffers[n] = torch.stack([torch.tensor(np.asarray(s[n])) for s in states])  # copies: Ray arrays are read-only
        return pop

    @property
    def n_steps_per_epoch(self) -> int:
        return math.ceil(self.x.shape[0] / int(self.common["batch_size"]))

    @torch.no_grad()
    def _optimizer_step(self, grads: list[torch.Tensor], mult: float) -> None:
        """One step of SGD / Adam / AdamW on the stacked tensors, in place, per-member lr and wd.

        The update rules are torch.optim's (SGD: g += wd p; buf = m buf + g; p -= lr buf; Adam:
        bias-corrected moments, L2 decay; AdamW: decoupled decay). Frozen members get lr 0 and
        a zeroed gradient, so their weights do not move.
        """
        c = self.common
        opt = c.get("optimizer", "sgd")
        self.step_count += 1
        t = self.step_count
        all_alive = self._all_alive
        lr_vec = self.lr * mult if all_alive else self.lr * mult * self.alive  # (M,)
        for p, g, name in zip(self.params.values(), grads, self.params):
            shape = (-1,) + (1,) * (p.dim() - 1)
            lr, wd = lr_vec.view(shape), self.wd.view(shape)
            if not all_alive:
                g = torch.where(self.alive.view(shape), g, torch.zeros_like(g))
            st = self._opt_state.setdefault(name, {})
            if opt == "sgd":
                if self._any_wd:
                    g = g.addcmul(p, wd)
                mom = float(c.get("momentum", 0.0))
                if mom:
                    buf = st.get("buf")
                    if buf is None:
                        buf = st["buf"] = g.clone()
                    else:
                        buf.mul_(mom).add_(g)
                    g = g.add(buf, alpha=mom) if c.get("nesterov") else buf
                p.addcmul_(g, lr, value=-1.0)
            else:
                b1, b2 = c.get("betas", (0.9, 0.999))
                eps = float(c.get("eps", 1e-8))
                if opt == "adamw":
                    p.mul_(1 - lr * wd)
                elif self._any_wd:
                    g = g.addcmul(p, wd)
                if "m" not in st:
                    st["m"], st["v"] = torch.zeros_like(p), torch.zeros_like(p)
                m, v = st["m"], st["v"]
                m.lerp_(g, 1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                denom = (v.sqrt() / math.sqrt(1 - b2**t)).add_(eps)
                p.addcmul_(m / denom, lr, value=-1.0 / (1 - b1**t))

    @torch.no_grad()
    def _evaluate_all(self) -> dict[str, torch.Tensor]:
        """Vectorized per-epoch evaluation: (M,) tensors of loss and accuracy on train and test."""
        self.template.eval()
        out = {}
        for split, x, y in (("train", self.x, self.y), ("test", self.task.x_test, None)):
            M = len(self.members)
            loss = torch.zeros(M, dtype=torch.float64)
            correct = torch.zeros(M, dtype=torch.float64)
            for i in range(0, x.shape[0], EVAL_CHUNK):
                xb = x[i : i + EVAL_CHUNK].expand(M, *x[i : i + EVAL_CHUNK].shape)  # (M, chunk, ...)
                yb = y[:, i : i + EVAL_CHUNK] if y is not None else self.task.y_test[i : i + EVAL_CHUNK].expand(M, -1)
                logits = self._fwd(self.params, self.buffers, xb)  # (M, chunk, classes)
                ce = F.cross_entropy(logits.flatten(0, 1), yb.flatten(), reduction="none").view(M, -1)
                loss += ce.double().sum(1)
                correct += (logits.argmax(-1) == yb).double().sum(1)
            out[f"{split}_loss"] = loss / x.shape[0]
            out[f"{split}_acc"] = correct / x.shape[0]
        self.template.train()
        return out

    def member_state(self, i: int) -> dict[str, torch.Tensor]:
        """Member i's state_dict (parameters and buffers), detached copies."""
        sd = {n: self.params[n][i].detach().clone() for n in self.param_names}
        sd.update({n: self.buffers[n][i].clone() for n in self.buffer_names})
        return {k: sd[k] for k in self.template.state_dict()}

    def member_module(self, i: int) -> nn.Module:
        knobs = {k: v for k, v in self.arch.items() if k != "family"}
        net = nets.build(self.arch["family"], self.task, **knobs)
        net.load_state_dict(self.member_state(i))
        return net

    def _checkpoint(self, i: int) -> dict:
        net = self.member_module(i)
        tr = evaluate_module(net, self.x, self.y[i])
        te = evaluate_module(net, self.task.x_test, self.task.y_test)
        state = {k: v.numpy() for k, v in net.state_dict().items()}
        metrics = {"train_loss": tr["loss"], "train_acc": tr["acc"], "test_loss": te["loss"], "test_acc": te["acc"]}
        return {"metrics": metrics, "state": state}

    def train_epoch(self, epoch: int) -> None:
        B, n, M = int(self.common["batch_size"]), self.x.shape[0], len(self.members)
        total = self.n_steps_per_epoch * int(self.common["epochs"])
        perms = torch.stack([torch.randperm(n, generator=g) for g in self.order_gens])  # (M, n)
        leaves = list(self.params.values())
        for s in range(0, n, B):
            idx = perms[:, s : s + B]  # (M, b)
            xb = self.x[idx]  # (M, b, *input_shape)
            yb = self.y.gather(1, idx)  # (M, b)
            logits = self._fwd(self.params, self.buffers, xb)  # (M, b, classes)
            losses = F.cross_entropy(logits.flatten(0, 1), yb.flatten(), reduction="none").view(M, -1).mean(1)
            finite = torch.isfinite(losses)
            if not bool(finite.all()):  # one host sync per step; rare branch
                newly = self.alive & ~finite
                for i in newly.nonzero().flatten().tolist():
                    self.diverged_epoch[i] = epoch
                self.alive &= finite
                self._all_alive = bool(self.alive.all())
                if not bool(self.alive.any()):
                    return
            if self._all_alive:
                total_loss = losses.sum()
            else:
                total_loss = torch.where(self.alive, losses, torch.zeros_like(losses)).sum()
            grads = torch.autograd.grad(total_loss, leaves)
            mult = lr_multiplier(self.common.get("schedule", "constant"), self.step_count, total)
            self._optimizer_step(list(grads), mult)

    def fit(self, checkpoints: list[int], progress: Callable[[int, int], None] | None = None) -> list[MemberResult]:
        """Train for `epochs`; evaluate every epoch; snapshot state and exact metrics at checkpoints."""
        epochs = int(self.common["epochs"])
        M = len(self.members)
        curves = {k: [[] for _ in range(M)] for k in ("train_loss", "train_acc", "test_loss", "test_acc")}
        ckpts: list[dict[int, dict]] = [{} for _ in range(M)]
        for epoch in range(epochs + 1):
            if epoch > 0:
                self.train_epoch(epoch)
            ev = self._evaluate_all()
            for i in range(M):
                if self.alive[i] and not math.isfinite(float(ev["train_loss"][i])):
                    self.alive[i] = False
                    self._all_alive = False
                    self.diverged_epoch[i] = epoch
            for i in range(M):
                row = {k: float(ev[k][i]) for k in curves}
                if epoch in checkpoints:
                    ckpts[i][epoch] = self._checkpoint(i)
                    row = ckpts[i][epoch]["metrics"]  # exact single-model values at checkpoints
                for k in curves:
                    curves[k][i].append(row[k])
            if progress:
                progress(epoch, epochs)
        return [
            MemberResult(
                model_id=m.model_id,
                status="ok" if self.diverged_epoch[i] is None else "diverged",
                diverged_epoch=self.diverged_epoch[i],
                curves={k: curves[k][i] for k in curves},
                checkpoints=ckpts[i],
            )
            for i, m in enumerate(self.members)
        ]


def train_members(task: Task, arch: dict, init: str, common: dict, members: list[MemberConfig],
                  checkpoints: list[int]) -> list[MemberResult]:
    """Convenience: build a Population and fit it."""
    return Population(task, arch, init, common, members).fit(checkpoints)


def flat_weights(state: dict[str, np.ndarray]) -> np.ndarray:
    """The flat float32 vector of a state dict, in state_dict order (the `weights` column)."""
    return np.concatenate([np.asarray(v, dtype=np.float32).ravel() for v in state.values()]) if state else np.zeros(0, np.float32)
