"""`hypernet train --kind diffusion`: fit the diffusion weight generator to the trained members of a zoo.

Data. The final checkpoints of the training cells' members (held-out cells and architectures of
pipelines.zoodata.make_split are never seen), all of one model family. Per architecture, every
member is brought to a canonical form by weight matching to a reference (hypernet.symmetry; the
reference is the seed-0 member of that architecture's cell nearest the middle of the temperature
axis), then cut into tokens (hypernet.tokenizer) standardized with statistics pooled over the zoo
(by default scaled by sqrt(fan_in) and pooled per first / hidden / last layer, so widths share a
scale and deeper nets have statistics).

Training. The DDPM loss of the configured prediction type (hypernet.diffusion, diffusers'
schedulers) plus task_weight · the task loss of the denoiser's clean estimate: the estimate is
decoded into weights (WeightTokenizer.decode_batch, differentiable) and run on a batch of its cell's
training data (the task's objective + distill · KL to the cell's trained members' mean softmax, as
pipelines.fit trains the GHN). Training data only, never test data. Each step draws one architecture
(with probability proportional to its number of members) and a batch of its members with
replacement; with probability `augment` a member is randomly permuted (hypernet.symmetry) before
tokenizing, so the generator also sees non-canonical nets. The condition is the member's cell
(zoo, temperature, load; hypernet.conditions). AdamW, warm-up + cosine decay (the base net's
tokens at their own peak lr, base_lr), clipping, checkpoints and exact resume: the one loop of
every kind (pipelines.hypernet_train); this module is diffusion's recipe (`DiffusionTrainer`).

Run folder: config.json + model.safetensors (WeightDiffusion, with the tokenizer's statistics and
the references' ids in its config), hypernet.json (same fields as a GHN run, so `hypernet eval`
runs the shared benchmark), log.jsonl, checkpoint/.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from hypernet.conditions import ConditionSpec
from hypernet.diffusion import DiffusionConfig, WeightDiffusion
from hypernet.symmetry import SUPPORTED, canonicalize, perm_groups, permute, random_permutation
from hypernet.tokenizer import TokenLayout, WeightTokenizer
from pipelines.fit import CellData, check_fields, distill_loss, section, top_level
from pipelines.hypernet_train import fit, fused_adamw
from pipelines.zoodata import ZooCell, load_cells, make_split, split_digest, zoo_specs
from zoo.errors import ZooError
from zoo.objectives import Classification
from zoo.train import population_forward


@dataclass
class DiffusionTrainConfig:
    steps: int = 3000
    batch_size: int = 16  # members per step (one architecture per step)
    lr: float = 1e-3
    base_lr: float = 0.02  # peak lr of the base net's tokens (unit-scale free parameters), same schedule
    weight_decay: float = 1e-2
    warmup: int = 100
    min_lr_ratio: float = 0.05
    clip: float = 1.0
    augment: float = 0.1  # probability that a member is randomly permuted instead of canonical
    task_weight: float = 1.0  # weight of the task loss of the weights the denoiser's clean estimate decodes to
    distill: float = 1.0  # within the task loss: KL to the cell's trained members (as pipelines.fit)
    data_batch: int = 128  # training samples per member for the task loss
    seed: int = 0
    checkpoint_every: int = 500
    log_every: int = 50


@dataclass
class DiffusionRunConfig:
    kind: str = "diffusion"
    diffusion: dict = field(default_factory=dict)  # DiffusionConfig fields (conditions, tokenizer, family are set here)
    training: DiffusionTrainConfig = field(default_factory=DiffusionTrainConfig)

    @classmethod
    def from_dict(cls, d: dict, source: str = "<config>") -> DiffusionRunConfig:
        d = top_level(d, source, "diffusion")
        if d.get("kind", "diffusion") != "diffusion":
            raise ZooError(f"{source}: kind {d.get('kind')!r}; this config is for kind diffusion")
        diff = section(d, "diffusion", DiffusionConfig, source,
                       exclude={"conditions", "n_conditions", "tokenizer", "family"})
        t = DiffusionTrainConfig(**section(d, "training", DiffusionTrainConfig, source))
        check_fields(t, source, at_least_one=("steps", "batch_size", "checkpoint_every", "log_every", "data_batch"),
                     positive=("lr", "clip"), non_negative=("task_weight", "distill", "base_lr", "warmup"))
        if not 0 <= t.augment <= 1:
            raise ZooError(f"{source}: training.augment must be a probability in [0, 1] (got {t.augment})")
        DiffusionConfig(**diff)  # field checks with readable messages
        return cls("diffusion", diff, t)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "diffusion": self.diffusion, "training": asdict(self.training)}


@dataclass
class _Arch:
    key: str
    cell: ZooCell  # the reference's cell
    module: nn.Module
    layout: TokenLayout
    members: list[tuple[dict[str, torch.Tensor], torch.Tensor, str]]  # (canonical state, condition, cell key)
    fwd: object = None  # zoo.train.population_forward of the module
    tasks: dict[str, CellData] = field(default_factory=dict)  # cell key -> data and teachers
    reference: dict | None = None  # the state every member is matched to


def arch_key(cell: ZooCell, arch: dict | None = None) -> str:
    return json.dumps({"zoo": cell.zoo, "task_args": cell.task_args, **(arch or cell.arch)}, sort_keys=True)


class MemberTokens:
    """What every token generator's recipe learns from (diffusion here, IGPG in pipelines.fit_igpg):
    the training cells' members of one model family, canonicalized per architecture and cut into
    tokens by a tokenizer fitted on them, with each cell's training data for a task loss, one
    architecture's batch at a time (`batch`), and the loop's `train`."""

    kind = label = ""

    def _load(self, zoo_dir: str | Path, out: str | Path, config, zoos: list[str] | None, progress: bool,
              token_size: int, scale: str, pool: str, what: str) -> None:
        self.root, self.out, self.config, self.progress = Path(zoo_dir), Path(out), config, progress
        specs = [s for s in zoo_specs(self.root) if not zoos or s.name in zoos]
        families = sorted({s.model.family for s in specs})
        if len(families) != 1:
            raise ZooError(f"{self.root}: {what} serves one model family; these zoos have "
                           f"{', '.join(families)}: pick zoos of one family with --only")
        self.family = families[0]
        if self.family not in SUPPORTED:
            raise ZooError(f"{what} needs canonicalization, which supports {', '.join(SUPPORTED)}; "
                           f"the zoo's family is {self.family}")
        self.cells = load_cells(self.root, [s.name for s in specs])
        self.split = make_split(self.cells)
        held = set(self.split.held_out_cells)
        self.train_cells = [c for c in self.cells if c.key not in held and c.rows]
        if not self.train_cells:
            raise ZooError(f"{self.root}: no trained cells left for training after the held-out split")
        self.conditions = ConditionSpec.from_zoos(specs)
        self.archs = self._prepare(token_size)
        states = [s for a in self.archs.values() for s, _, _ in a.members]
        layouts = [a.layout for a in self.archs.values() for _ in a.members]
        self.tokenizer = WeightTokenizer(token_size, scale=scale, pool=pool).fit(states, layouts)
        self.references = {k: {"zoo": a.cell.zoo, "cell": a.cell.cell, "model_id": a.cell.rows[0]["model_id"]}
                           for k, a in self.archs.items()}

    def _prepare(self, token_size: int) -> dict[str, _Arch]:
        """Canonical states and conditions of every training member, grouped by architecture."""
        by_arch: dict[str, list[ZooCell]] = {}
        for c in self.train_cells:
            by_arch.setdefault(arch_key(c), []).append(c)
        out = {}
        for key, cells in by_arch.items():
            temps = sorted({c.temperature for c in cells})
            mid = temps[len(temps) // 2]
            ref_cell = min(cells, key=lambda c: (abs(math.log(c.temperature / mid)) if mid > 0 else 0, c.cell))
            module = ref_cell.build()
            states = {c.key: c.states(self.root) for c in cells}  # each cell's shards read once
            reference = states[ref_cell.key][0]
            members = [(canonicalize(st, reference, module), self.conditions.vector(c.zoo, c.temperature, c.load),
                        c.key) for c in cells for st in states[c.key]]
            names = [n for n, _ in module.named_parameters()]
            buffers = [n for n, _ in module.named_buffers()]
            tasks = {c.key: CellData(c, states[c.key], names, buffers) for c in cells}
            out[key] = _Arch(key, ref_cell, module, TokenLayout.of(module, token_size), members,
                             population_forward(module)[0], tasks, reference)
        return out

    def task_loss(self, a: _Arch, x0_hat: torch.Tensor, cells: list[str], gen: torch.Generator):
        """Task loss (+ distill · divergence from the cell's trained members) of the nets that the
        denoiser's clean estimates decode to, each on a batch of its own cell's training data."""
        t = self.config.training
        params = self.tokenizer.decode_batch(x0_hat, a.layout)  # (B, *shape) each, differentiable
        B = x0_hat.shape[0]
        xs, ys = [], []
        for key in cells:
            d = a.tasks[key]
            idx = torch.randint(0, d.x.shape[0], (min(t.data_batch, d.x.shape[0]),), generator=gen)
            xs.append(d.x[idx]), ys.append(d.y[idx])
        xb, yb = torch.stack(xs), torch.stack(ys)
        buffers = {n: b.detach().unsqueeze(0).expand(B, *b.shape).clone() for n, b in a.module.named_buffers()}
        objective = a.tasks[cells[0]].objective
        classification = isinstance(objective, Classification)
        a.module.train()
        if classification:
            student = a.fwd(params, buffers, xb)  # (B, n, C)
            task = F.cross_entropy(student.reshape(-1, student.shape[-1]), yb.reshape(-1))
        else:
            task = objective.losses(a.fwd, params, buffers, xb, yb).mean()
            student = a.fwd(params, {n: b.clone() for n, b in buffers.items()}, xb) if t.distill else None
        dist = torch.zeros(())
        if t.distill:
            a.module.eval()
            with torch.no_grad():
                teachers = [a.fwd(a.tasks[k].teacher_params, a.tasks[k].teacher_buffers,
                                  xb[i].expand(a.tasks[k].n_teachers, *xb[i].shape)) for i, k in enumerate(cells)]
            a.module.train()
            dist = torch.stack([distill_loss(student[i], teachers[i], classification) for i in range(B)]).mean()
        return task + t.distill * dist, float(task.detach()), float(dist.detach())

    def batch(self, gen: torch.Generator, augment: float | None = None):
        """One architecture's batch: x0 (B, N, k), ids (N, 4), mask (B, N, k), condition (B, c),
        the architecture, and each member's cell key. augment: the probability of a random
        permutation of each member (default: training.augment)."""
        augment = self.config.training.augment if augment is None else augment
        keys = list(self.archs)
        weights = torch.tensor([len(self.archs[k].members) for k in keys], dtype=torch.float64)
        a = self.archs[keys[int(torch.multinomial(weights, 1, generator=gen))]]
        B = self.config.training.batch_size
        pick = torch.randint(0, len(a.members), (B,), generator=gen).tolist()
        xs, conds, cells = [], [], []
        groups = None
        for i in pick:
            state, cond, cell = a.members[i]
            cells.append(cell)
            if augment and float(torch.rand((), generator=gen)) < augment:
                groups = groups or perm_groups(a.module)
                state = permute(state, groups, random_permutation(groups, gen))
            xs.append(self.tokenizer.encode(state, a.layout).float())
            conds.append(cond)
        mask = self.tokenizer.mask(a.layout)
        x0 = torch.stack(xs)
        return x0, a.layout.ids(), mask.expand_as(x0), torch.stack(conds), a, cells

    def split_digest(self) -> str:
        return split_digest(self.split)

    def train(self, resume: bool = False) -> dict:
        return fit(self, self.out, resume=resume, progress=self.progress)


class DiffusionTrainer(MemberTokens):
    """The diffusion recipe of the one training loop (pipelines.hypernet_train.fit)."""

    def __init__(self, zoo_dir: str | Path, out: str | Path, config: DiffusionRunConfig,
                 zoos: list[str] | None = None, progress: bool = True):
        dc = DiffusionConfig(**config.diffusion)
        self._load(zoo_dir, out, config, zoos, progress, dc.token_size, dc.token_scale, dc.token_pool,
                   "a diffusion generator")
        torch.manual_seed(config.training.seed)
        self.model = WeightDiffusion(DiffusionConfig(**config.diffusion, conditions=self.conditions.to_dict(),
                                                     tokenizer=self.tokenizer.to_dict(), family=self.family))
        decay, no_decay, base = [], [], []
        for n, p in self.model.named_parameters():
            (base if n.startswith("base.") else decay if p.dim() >= 2 and "emb" not in n else no_decay).append(p)
        t = config.training
        groups = [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        if base:
            groups.append({"params": base, "weight_decay": 0.0, "lr_mult": t.base_lr / t.lr})
        self.opt = torch.optim.AdamW(groups, lr=t.lr, **fused_adamw())
        self.kind, self.label = "diffusion", "diffusion train"

    # -- the recipe (pipelines.hypernet_train.Recipe): the loop calls these
    def step(self, s: int, gen: torch.Generator) -> tuple[float, dict[str, float], dict]:
        """One architecture's batch drawn by `gen`: the denoising loss (+ task_weight x the task
        loss of its clean estimate), backpropagated."""
        t = self.config.training
        x0, ids, mask, cond, arch, cells = self.batch(gen)
        if t.task_weight:
            denoise, x0_hat = self.model.loss(x0, ids, mask, cond, generator=gen, return_x0=True)
            task, task_v, dist_v = self.task_loss(arch, x0_hat, cells, gen)
            loss = denoise + t.task_weight * task
        else:
            denoise = loss = self.model.loss(x0, ids, mask, cond, generator=gen)
            task_v = dist_v = 0.0
        if torch.isfinite(loss):  # a diverged loss is not backpropagated; the loop reports it
            loss.backward()
        return float(loss.detach()), {"denoise": float(denoise.detach()), "task": task_v, "distill": dist_v}, \
            {"tokens": int(x0.shape[1])}

    def monitor(self) -> dict:
        return {}

    def info(self, rec: dict) -> str:
        return f"denoise {rec['denoise']:.3f} task {rec['task']:.3f}"

    def meta(self) -> dict:
        return {"references": self.references, "n_params": self.model.n_params(),
                "n_training_members": sum(len(a.members) for a in self.archs.values())}
