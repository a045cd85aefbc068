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
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, vmap

from zoo import nets
from zoo.objectives import EVAL_CHUNK, Classification, Objective, single_forward
from zoo.stacked import stacked_forward
from zoo.tasks import Task

__all__ = ["EVAL_CHUNK", "MemberConfig", "MemberResult", "Population", "evaluate_module", "flat_weights"]


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


def evaluate_module(net: nn.Module, x: torch.Tensor, y: torch.Tensor,
                    objective: Objective | None = None) -> dict[str, float]:
    """The objective's metrics of `net` on (x, y) in eval mode: {"loss", "acc"} for
    classification (the default), {"loss", "rel_l2"} for a PDE."""
    objective = objective or Classification()
    was_training = net.training
    net.eval()
    try:
        with _single_thread():
            m = objective.evaluate(single_forward(net), {}, {}, x, y.unsqueeze(0))
    finally:
        net.train(was_training)
    return {k: float(v[0]) for k, v in m.items()}


# ---- data for a population ----------------------------------------------------------------
def derived_seed(*parts) -> int:
    """A 63-bit seed derived from labelled parts, e.g. derived_seed("order", 3)."""
    h = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(h[:8], "little") >> 1


def train_subset(n_total: int, fraction: float, holdout: float = 0.0) -> torch.Tensor:
    """Indices of the training subset for a data fraction: fixed per fraction, shared by all seeds.
    `holdout` > 0: drawn from the training split minus its validation part (validation_indices)."""
    pool = torch.arange(n_total)
    if holdout:
        keep = torch.ones(n_total, dtype=torch.bool)
        keep[validation_indices(n_total, holdout)] = False
        pool = pool[keep]
    n = max(1, round(fraction * len(pool)))
    g = torch.Generator().manual_seed(derived_seed("subset"))
    return pool[torch.randperm(len(pool), generator=g)[:n]].sort().values


def validation_indices(n_total: int, holdout: float) -> torch.Tensor:
    """A fixed fraction `holdout` of the training split, held out for model selection (PBT's
    ranking metric): the same samples for every seed and member, never the test split."""
    g = torch.Generator().manual_seed(derived_seed("validation"))
    return torch.randperm(n_total, generator=g)[: max(1, round(holdout * n_total))].sort().values


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
    The task's objective supplies the loss and the recorded metrics (zoo.objectives).
    Buffers (BatchNorm running statistics) are stacked like the parameters and updated by the
    forward pass in training mode, member by member.
    `dtype`: float32 (what zoos are built with) or float64 (the tests' oracle). `device`: where the
    stacked tensors train; everything random is drawn on the CPU first, so a member is the same
    member on any device, and checkpoints and member states come back on the CPU.
    """

    def __init__(self, task: Task, arch: dict, init: str, common: dict, members: list[MemberConfig],
                 vectorize: str = "auto", states: list[dict] | None = None, dtype: torch.dtype = torch.float32,
                 device: torch.device | str = "cpu"):
        if not members:
            raise ValueError("a population needs at least one member")
        if states is not None and len(states) != len(members):
            raise ValueError(f"{len(states)} states for {len(members)} members")
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be torch.float32 or torch.float64 (got {dtype})")
        # float64 is the oracle of the tests: the same members, inits drawn in float32 as always, then
        # every floating-point tensor (weights, data, optimizer state) in float64
        self.dtype = dtype
        if dtype != torch.float32:
            task = task.to(dtype)
        # `device`: where the stacked tensors live and train; data, inits and labels are drawn on
        # the CPU (the same on every device), then moved; checkpoints come back as CPU arrays
        self.device = torch.device(device)
        on_device = task if self.device.type == "cpu" else task.to(device=self.device)
        self.task, self.arch, self.init, self.common, self.members = on_device, dict(arch), init, common, members
        self.objective = on_device.objective
        self.template = self._build().to(self.device)
        if states is None:
            states = [nets.init_(self._build(torch.float32), m.seed, init).state_dict() for m in members]
        self.param_names = [n for n, _ in self.template.named_parameters()]
        self.buffer_names = [n for n, _ in self.template.named_buffers()]
        # stacked leaves: name -> (members, *shape); copies (Ray hands out read-only arrays)
        dev = self.device
        self.params = {n: _stack([s[n] for s in states], dtype).to(dev).requires_grad_(True) for n in self.param_names}
        self.buffers = {n: _stack([s[n] for s in states], dtype).to(dev) for n in self.buffer_names}
        M = len(members)
        self.lr = torch.tensor([m.lr for m in members], dtype=dtype, device=dev)  # (M,)
        self.wd = torch.tensor([m.weight_decay for m in members], dtype=dtype, device=dev)  # (M,)
        self._any_wd = bool((self.wd != 0).any())
        self.alive = torch.ones(M, dtype=torch.bool, device=dev)
        self._all_alive = True
        self.diverged_epoch: list[int | None] = [None] * M
        # data: one shared subset, per-member (possibly noisy) labels
        self.subset = train_subset(task.n_train, float(common.get("data_fraction", 1.0)), float(common.get("holdout", 0.0)))
        self.x = task.x_train[self.subset].to(dev)  # (n, *input_shape)
        y = task.y_train[self.subset]  # (n, ...)
        if any(m.label_noise for m in members) and not (self.objective.label_noise and y.dim() == 1):
            raise ValueError(f"label_noise needs a classification task with one label per sample; "
                             f"task {task.name!r} has targets of shape {tuple(y.shape[1:]) or 'scalar'}")
        self.y = torch.stack([noisy_labels(y, m.label_noise, task.n_classes) for m in members]).to(dev)  # (M, n, ...)
        self.order_gens = [torch.Generator().manual_seed(derived_seed("order", m.seed)) for m in members]
        self._fwd, self.vectorized_by = population_forward(self.template, vectorize)
        self._opt_state: dict[str, dict[str, torch.Tensor]] = {}
        self.step_count = 0
        self._rows = torch.arange(M, device=dev).unsqueeze(1)  # (M, 1): row index of each member's labels

    def _build(self, dtype: torch.dtype | None = None) -> nn.Module:
        knobs = {k: v for k, v in self.arch.items() if k != "family"}
        return nets.build(self.arch["family"], self.task, **knobs).to(dtype or self.dtype)

    @classmethod
    def from_states(cls, task: Task, arch: dict, common: dict, members: list[MemberConfig],
                    states: list[dict[str, np.ndarray]], vectorize: str = "auto") -> Population:
        """A population holding given (trained) weights, e.g. zoo checkpoints for the landscape metrics."""
        return cls(task, arch, "kaiming_uniform", common, members, vectorize=vectorize, states=states)

    def set_hyperparameters(self, lr: list[float] | None = None, weight_decay: list[float] | None = None,
                            momentum: float | None = None, batch_size: int | None = None) -> None:
        """Change hyperparameters between steps (PBT's explore): per-member lr and weight decay,
        the shared momentum and batch size. Optimizer state (momentum buffers, Adam moments) is
        kept, as torch.optim keeps it when a param group's values change."""
        dev, dt = self.device, self.dtype
        if lr is not None:
            self.lr = torch.tensor(lr, dtype=dt, device=dev)
        if weight_decay is not None:
            self.wd = torch.tensor(weight_decay, dtype=dt, device=dev)
            self._any_wd = bool((self.wd != 0).any())
        if momentum is not None or batch_size is not None:
            self.common = {**self.common, **({"momentum": momentum} if momentum is not None else {}),
                           **({"batch_size": int(batch_size)} if batch_size is not None else {})}

    def optimizer_state(self) -> dict[str, torch.Tensor]:
        """The optimizer's stacked state as flat tensors `<param>/<buf|m|v>` plus `step_count`, on
        the CPU: with the parameters, what a checkpoint needs for an exact resume."""
        out = {f"{n}/{k}": v.detach().cpu().clone() for n, st in self._opt_state.items() for k, v in st.items()}
        out["step_count"] = torch.tensor(self.step_count, dtype=torch.int64)
        return out

    def load_optimizer_state(self, flat: dict[str, torch.Tensor]) -> None:
        """Restore what optimizer_state() returned."""
        self._opt_state = {}
        for key, v in flat.items():
            if key == "step_count":
                self.step_count = int(v)
                continue
            name, k = key.rsplit("/", 1)
            self._opt_state.setdefault(name, {})[k] = torch.as_tensor(v).to(self.dtype).to(self.device).clone()

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
        """Vectorized per-epoch evaluation: (M,) tensors of every metric on train and test."""
        return {f"{split}_{k}": v for split in ("train", "test") for k, v in self.evaluate_split(split).items()}

    @torch.no_grad()
    def evaluate_split(self, split: str = "test") -> dict[str, torch.Tensor]:
        """The objective's metrics of every member on one split (train: the members' own labels): name -> (M,)."""
        if split == "train":
            return self.evaluate_on(self.x, self.y, per_member=True)
        return self.evaluate_on(self.task.x_test, self.task.y_test)

    @torch.no_grad()
    def evaluate_on(self, x: torch.Tensor, y: torch.Tensor, per_member: bool = False) -> dict[str, torch.Tensor]:
        """The objective's metrics of every member on inputs x (n, ...) with targets y (n, ...)
        shared by all members, or per_member ones (M, n, ...), in eval mode: name -> (M,)."""
        x, y = x.to(self.device), y.to(self.device)
        if not per_member:
            y = y.expand(len(self.members), *y.shape)
        self.template.eval()
        try:
            return self.objective.evaluate(self._fwd, self.params, self.buffers, x, y)
        finally:
            self.template.train()

    @property
    def metric_keys(self) -> list[str]:
        return [f"{split}_{k}" for split in ("train", "test") for k in self.objective.metric_names]

    def member_state(self, i: int) -> dict[str, torch.Tensor]:
        """Member i's state_dict (parameters and buffers), detached copies on the CPU."""
        sd = {n: self.params[n][i].detach().cpu().clone() for n in self.param_names}
        sd.update({n: self.buffers[n][i].cpu().clone() for n in self.buffer_names})
        return {k: sd[k] for k in self.template.state_dict()}

    def member_module(self, i: int) -> nn.Module:
        """Member i as a plain module, on the CPU."""
        net = self._build()
        net.load_state_dict(self.member_state(i))
        return net

    def checkpoint(self, i: int) -> dict:
        """Member i's state (numpy arrays) and its exact single-model metrics (what a row records)."""
        net = self.member_module(i).to(self.device)  # evaluated where the population trains
        tr = evaluate_module(net, self.x, self.y[i], self.objective)
        te = evaluate_module(net, self.task.x_test, self.task.y_test, self.objective)
        state = {k: v.cpu().numpy() for k, v in net.state_dict().items()}
        metrics = {**{f"train_{k}": v for k, v in tr.items()}, **{f"test_{k}": v for k, v in te.items()}}
        return {"metrics": metrics, "state": state}

    def train_epoch(self, epoch: int, on_step: Callable[[int], None] | None = None) -> None:
        """One pass over the data; `on_step(step_count)` is called after every optimizer step."""
        B, n = int(self.common["batch_size"]), self.x.shape[0]
        perms = torch.stack([torch.randperm(n, generator=g) for g in self.order_gens]).to(self.device)  # (M, n)
        self.template.train()
        for s in range(0, n, B):
            if not self.train_step(perms[:, s : s + B], epoch):
                return
            if on_step is not None:
                on_step(self.step_count)

    def train_step(self, idx: torch.Tensor, epoch: int) -> bool:
        """One optimizer step of every member on its own batch `idx` (M, b) of training indices,
        at the schedule's multiplier for the current step. A member whose loss is not finite is
        frozen (recorded as diverged at `epoch`); returns False once no member is left."""
        xb = self.x[idx]  # (M, b, *input_shape)
        yb = self.y[self._rows, idx]  # (M, b, ...)
        losses = self.objective.losses(self._fwd, self.params, self.buffers, xb, yb)  # (M,)
        finite = torch.isfinite(losses)
        if not bool(finite.all()):  # one host sync per step; rare branch
            newly = self.alive & ~finite
            for i in newly.nonzero().flatten().tolist():
                self.diverged_epoch[i] = epoch
            self.alive &= finite
            self._all_alive = bool(self.alive.all())
            if not bool(self.alive.any()):
                return False
        if self._all_alive:
            total_loss = losses.sum()
        else:
            total_loss = torch.where(self.alive, losses, torch.zeros_like(losses)).sum()
        grads = torch.autograd.grad(total_loss, list(self.params.values()))
        total = self.n_steps_per_epoch * int(self.common["epochs"])  # the schedule's horizon
        mult = lr_multiplier(self.common.get("schedule", "constant"), self.step_count, total)
        self._optimizer_step(list(grads), mult)
        return True

    def fit(self, checkpoints: list[int], progress: Callable[[int, int], None] | None = None) -> list[MemberResult]:
        """Train for `epochs`; evaluate every epoch; snapshot state and exact metrics at checkpoints."""
        epochs = int(self.common["epochs"])
        M = len(self.members)
        curves = {k: [[] for _ in range(M)] for k in self.metric_keys}
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
                    ckpts[i][epoch] = self.checkpoint(i)
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


def _stack(values: list, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(M, *shape) copy of per-member tensors or arrays; floating-point ones in `dtype`."""
    out = torch.stack([torch.tensor(np.asarray(v)) if not isinstance(v, torch.Tensor) else v.detach().clone()
                       for v in values])
    return out.to(dtype) if out.is_floating_point() else out


def train_members(task: Task, arch: dict, init: str, common: dict, members: list[MemberConfig],
                  checkpoints: list[int]) -> list[MemberResult]:
    """Convenience: build a Population and fit it."""
    return Population(task, arch, init, common, members).fit(checkpoints)


def flat_weights(state: dict[str, np.ndarray]) -> np.ndarray:
    """The flat float32 vector of a state dict, in state_dict order (the `weights` column)."""
    return np.concatenate([np.asarray(v, dtype=np.float32).ravel() for v in state.values()]) if state else np.zeros(0, np.float32)
