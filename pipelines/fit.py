"""`hypernet train`: fit a graph hypernetwork to the cells of a zoo.

Each step samples a meta-batch of training cells (the held-out cells and architectures of
pipelines.zoodata.make_split are never seen). For every cell the GHN predicts the whole network
from the architecture's graph and the cell's condition (zoo, temperature, load), and the loss is

    task loss of the predicted net on a batch of the cell's training data (the task's objective,
        run through torch.func.functional_call, so gradients reach the GHN)
  + distill · divergence from the zoo's trained members of that cell on the same batch
        (KL(teacher ‖ student) with the members' mean softmax as teacher for classification,
        mean squared difference to the members' mean output otherwise).

The distillation target is the members' outputs, not their weights: trained weights of different
seeds differ by hidden-unit permutations, their functions do not. This module is the GHN's recipe
(its losses and material, `Trainer`) and config; AdamW's schedule, clipping, the log, checkpoints
and exact resume are the one loop's (pipelines.hypernet_train): the meta-batches and data batches
of step s come from the loop's generator seeded by (seed, s), so a resumed run takes the same
steps an uninterrupted one would.

Run folder:
    config.json, model.safetensors     the GHN (PyTorchModelHubMixin: GraphHyperNetwork.from_pretrained)
    hypernet.json                      kind, training config, zoo, split, timings
    log.jsonl                          one line per logged step
    checkpoint/                        model + optimizer state + step, for resume
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hypernet import generators
from hypernet.conditions import ConditionSpec
from hypernet.ghn import GHNConfig, GraphHyperNetwork
from hypernet.graph import module_to_graph
from pipelines.hypernet_train import fit, fused_adamw
from pipelines.zoodata import Split, ZooCell, load_cells, make_split, split_digest, zoo_specs
from zoo.errors import ZooError
from zoo.objectives import Classification
from zoo.train import population_forward, train_subset

# the kinds this trainer fits (the GHNs), from the registry; diffusion: pipelines.fit_diffusion
KINDS = [k for k in generators.kinds() if generators.get(k).section == "ghn"]


@dataclass
class TrainConfig:
    steps: int = 3000
    meta_batch: int = 4  # cells per step
    batch_size: int = 256  # training samples per cell and step
    lr: float = 1e-3
    weight_decay: float = 1e-2
    warmup: int = 100  # steps of linear warm-up, then cosine decay to lr * min_lr_ratio
    min_lr_ratio: float = 0.05
    clip: float = 1.0  # max gradient norm
    distill: float = 1.0  # weight of the distillation term
    seed: int = 0
    checkpoint_every: int = 250
    log_every: int = 25
    threads: int = 0  # torch threads; 0 = leave torch's default


@dataclass
class HypernetConfig:
    kind: str = "ghn"
    ghn: dict = field(default_factory=dict)  # GHNConfig fields (decoder is set by kind)
    training: TrainConfig = field(default_factory=TrainConfig)

    @classmethod
    def from_dict(cls, d: dict, source: str = "<config>") -> HypernetConfig:
        d = top_level(d, source, "ghn")
        kind = d.get("kind", "ghn")
        try:
            generators.get(kind)
        except ZooError as e:
            raise ZooError(f"{source}: {e}") from None
        if kind not in KINDS:
            raise ZooError(f"{source}: kind {kind!r} is not a graph hypernetwork; this config is for "
                           f"{', '.join(KINDS)}")
        ghn = section(d, "ghn", GHNConfig, source, exclude={"conditions", "n_conditions", "decoder"},
                      hint=" (decoder is set by kind, the conditions by the zoo)")
        t = TrainConfig(**section(d, "training", TrainConfig, source))
        check_fields(t, source, at_least_one=("steps", "meta_batch", "batch_size", "checkpoint_every", "log_every"),
                     positive=("lr", "clip"), non_negative=("distill", "warmup"))
        try:
            GHNConfig(**ghn, **generators.get(kind).fixed)
        except TypeError as e:
            raise ZooError(f"{source}: ghn: {e}") from None
        return cls(kind, ghn, t)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "ghn": self.ghn, "training": asdict(self.training)}

    def ghn_config(self, conditions: ConditionSpec) -> GHNConfig:
        return GHNConfig(**self.ghn, **generators.get(self.kind).fixed, conditions=conditions.to_dict())


def top_level(d: dict | None, source: str, body: str) -> dict:
    """A hypernet config's top level as a dict: only kind, `body` (the model section) and training."""
    d = dict(d or {})
    unknown = sorted(set(d) - {"kind", body, "training"})
    if unknown:
        raise ZooError(f"{source}: unknown fields {unknown}; valid: kind, {body}, training")
    return d


def section(d: dict, name: str, cls, source: str, exclude: set[str] = frozenset(), hint: str = "") -> dict:
    """d[name] as a dict whose keys are fields of dataclass `cls` (minus `exclude`); else a ZooError
    naming the unknown fields and the valid ones."""
    part = dict(d.get(name) or {})
    valid = {f.name for f in fields(cls)} - set(exclude)
    bad = sorted(set(part) - valid)
    if bad:
        raise ZooError(f"{source}: unknown {name} fields {bad}; valid: {', '.join(sorted(valid))}{hint}")
    return part


def check_fields(t, source: str, at_least_one=(), positive=(), non_negative=()) -> None:
    """Bounds of a training section's numbers, with an error naming the field and its value."""
    for names, ok, rule in ((at_least_one, lambda v: v >= 1, ">= 1"), (positive, lambda v: v > 0, "> 0"),
                            (non_negative, lambda v: v >= 0, ">= 0")):
        for k in names:
            if not ok(getattr(t, k)):
                raise ZooError(f"{source}: training.{k} must be {rule} (got {getattr(t, k)})")


# ---- per-architecture and per-cell material ------------------------------------------------------
class _Arch:
    """A template module of one architecture, its graph and its stacked forward."""

    def __init__(self, cell: ZooCell, arch: dict):
        self.module = cell.build(arch)
        self.graph = module_to_graph(self.module)
        self.fwd, _ = population_forward(self.module)
        self.buffers = {n: b.detach().clone() for n, b in self.module.named_buffers()}
        self.param_names = [n for n, _ in self.module.named_parameters()]


class CellData:
    """Training data of a cell (the subset its members trained on) and its members' stacked weights:
    what a generated net's task and distillation losses are computed on (GHN and diffusion trainers).
    states: the cell's trained members (ZooCell.states); param / buffer names of the architecture."""

    def __init__(self, cell: ZooCell, states: list[dict[str, torch.Tensor]], param_names, buffer_names):
        task = cell.load_task()
        self.task, self.objective = task, task.objective
        subset = train_subset(task.n_train, float(cell.training.get("data_fraction", 1.0)))
        self.x, self.y = task.x_train[subset], task.y_train[subset]
        self.n_teachers = len(states)
        self.teacher_params = {n: torch.stack([s[n] for s in states]) for n in param_names} if states else {}
        self.teacher_buffers = {n: torch.stack([s[n] for s in states]) for n in buffer_names} if states else {}


def stacked(params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor]):
    """One net's tensors as a stacked population of one: (1, *shape)."""
    return {k: v.unsqueeze(0) for k, v in params.items()}, {k: v.unsqueeze(0) for k, v in buffers.items()}


def distill_loss(student: torch.Tensor, teacher: torch.Tensor, classification: bool) -> torch.Tensor:
    """student (B, ..., C), teacher (T, B, ..., C): KL(mean teacher softmax ‖ student) or MSE to the mean."""
    if classification:
        p = teacher.softmax(-1).mean(0)  # (B, ..., C)
        logp = student.log_softmax(-1)
        return (p * (p.clamp_min(1e-12).log() - logp)).sum(-1).mean()
    return F.mse_loss(student, teacher.mean(0))


# ---- the recipe -------------------------------------------------------------------------------
class Trainer:
    """The GHN recipe of the one training loop (pipelines.hypernet_train.fit)."""

    def __init__(self, zoo_dir: str | Path, out: str | Path, config: HypernetConfig,
                 zoos: list[str] | None = None, progress: bool = True):
        self.root, self.out, self.config = Path(zoo_dir), Path(out), config
        self.progress = progress
        specs = zoo_specs(self.root)
        if zoos:
            specs = [s for s in specs if s.name in zoos]
        self.cells = load_cells(self.root, zoos)
        self.split = make_split(self.cells)
        held = set(self.split.held_out_cells)
        self.train_cells = [c for c in self.cells if c.key not in held and c.rows]
        if not self.train_cells:
            raise ZooError(f"{self.root}: no trained cells left for hypernet training after the held-out split")
        self.conditions = ConditionSpec.from_zoos(specs)
        torch.manual_seed(config.training.seed)
        self.ghn = GraphHyperNetwork(config.ghn_config(self.conditions))
        decay, no_decay = [], []
        for n, p in self.ghn.named_parameters():
            (decay if p.dim() >= 2 and "emb" not in n else no_decay).append(p)
        t = config.training
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": t.weight_decay},
                                      {"params": no_decay, "weight_decay": 0.0}], lr=t.lr, **fused_adamw())
        self._archs: dict[str, _Arch] = {}
        self._data: dict[str, CellData] = {}
        self._monitor: list[ZooCell] | None = None
        self.kind, self.label = config.kind, "hypernet train"

    # -- material caches
    def arch(self, cell: ZooCell, arch: dict | None = None) -> _Arch:
        arch = arch or cell.arch
        key = json.dumps({"task": cell.task, "task_args": cell.task_args, **arch}, sort_keys=True)
        if key not in self._archs:
            self._archs[key] = _Arch(cell, arch)
        return self._archs[key]

    def data(self, cell: ZooCell) -> CellData:
        if cell.key not in self._data:
            a = self.arch(cell)
            self._data[cell.key] = CellData(cell, cell.states(self.root), a.param_names, a.buffers)
        return self._data[cell.key]

    # -- one cell's loss
    def cell_loss(self, cell: ZooCell, gen: torch.Generator) -> tuple[torch.Tensor, float, float]:
        a, d = self.arch(cell), self.data(cell)
        cond = self.conditions.vector(cell.zoo, cell.temperature, cell.load)
        params = self.ghn(a.graph, cond)
        n = d.x.shape[0]
        idx = torch.randperm(n, generator=gen)[: self.config.training.batch_size]
        xb, yb = d.x[idx], d.y[idx]
        p1, b1 = stacked(params, a.buffers)
        fresh = {k: v.clone() for k, v in b1.items()}  # BatchNorm updates its running stats in place
        w = self.config.training.distill
        classification = isinstance(d.objective, Classification)
        a.module.train()
        student = None
        if classification:  # one forward serves both terms
            student = a.fwd(p1, fresh, xb.unsqueeze(0))[0]  # (B, ..., C)
            task = F.cross_entropy(student.reshape(-1, student.shape[-1]), yb.reshape(-1))
        else:
            task = d.objective.losses(a.fwd, p1, fresh, xb.unsqueeze(0), yb.unsqueeze(0))[0]
        dist = torch.zeros(())
        if w and d.n_teachers:
            a.module.eval()
            with torch.no_grad():
                teacher = a.fwd(d.teacher_params, d.teacher_buffers, xb.expand(d.n_teachers, *xb.shape))
            a.module.train()
            if student is None:
                student = a.fwd(p1, {k: v.clone() for k, v in b1.items()}, xb.unsqueeze(0))[0]
            dist = distill_loss(student, teacher, classification)
        return task + w * dist, float(task.detach()), float(dist.detach())

    @torch.no_grad()
    def predicted_score(self, cells: list[ZooCell]) -> float:
        """Mean test score (acc, or -rel_l2) of the predicted nets, untrained, on `cells`."""
        scores = []
        for cell in cells:
            a, d = self.arch(cell), self.data(cell)
            params = self.ghn(a.graph, self.conditions.vector(cell.zoo, cell.temperature, cell.load))
            p1, b1 = stacked(params, a.buffers)
            a.module.eval()
            x, y = d.task.x_test, d.task.y_test
            m = d.objective.evaluate(a.fwd, p1, b1, x, y.unsqueeze(0))
            a.module.train()
            scores.append(float(m["acc"][0]) if "acc" in m else -float(m["rel_l2"][0]))
        return float(np.mean(scores))

    # -- the recipe (pipelines.hypernet_train.Recipe): the loop calls these
    @property
    def model(self) -> nn.Module:
        return self.ghn

    def split_digest(self) -> str:
        return split_digest(self.split)

    def step(self, s: int, gen: torch.Generator) -> tuple[float, dict[str, float], dict]:
        """A meta-batch of cells drawn by `gen`, each cell's loss backpropagated (accumulated)."""
        t = self.config.training
        pick = torch.randperm(len(self.train_cells), generator=gen)[: t.meta_batch].tolist()
        total, parts_t, parts_d = 0.0, 0.0, 0.0
        for i in pick:
            loss, lt, ld = self.cell_loss(self.train_cells[i], gen)
            (loss / len(pick)).backward()
            total += float(loss.detach()) / len(pick)
            parts_t += lt / len(pick)
            parts_d += ld / len(pick)
        return total, {"task_loss": parts_t, "distill": parts_d}, {}

    def monitor(self) -> dict:
        if self._monitor is None:
            self._monitor = self.train_cells[:: max(1, len(self.train_cells) // 8)][:8]
        return {"train_cells_pred_score": self.predicted_score(self._monitor)}

    def info(self, rec: dict) -> str:
        return f"loss {rec['loss']:.3f} (task {rec['task_loss']:.3f}, distill {rec['distill']:.3f})"

    def meta(self) -> dict:
        return {"n_params": self.ghn.n_params(), "decoder_params": self.ghn.decoder.n_params()}

    def train(self, resume: bool = False) -> dict:
        return fit(self, self.out, resume=resume, progress=self.progress)


def read_run(path: str | Path) -> dict:
    """hypernet.json of a run folder (with its split as a Split under "split_obj")."""
    p = Path(path) / "hypernet.json"
    if not p.exists():
        raise ZooError(f"{path}: no hypernet.json; not a finished `hypernet train` run folder")
    meta = json.loads(p.read_text())
    meta["split_obj"] = Split.from_json(meta["split"])
    return meta
