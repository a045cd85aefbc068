"""`hypernet train --kind igpg`: fit the autoregressive weight generator (hypernet.igpg) to a zoo.

Data: the same as the diffusion generator's (pipelines.fit_diffusion.MemberTokens): the final
checkpoints of the training cells' members of one family (held-out cells and architectures never
seen), canonicalized per architecture by weight matching, cut into tokens standardized with
statistics pooled over the zoo. Each step draws one architecture and a batch of its members.

Two stages in the one loop (pipelines.hypernet_train.fit), each with its own warm-up and cosine
decay (`schedule`):
1. steps [0, quantizer_steps): the FSQ autoencoder. Loss = mean squared error of the
   reconstructed tokens over real values (+ task_weight x the task loss of the nets the
   reconstructions decode to, with distill x KL to the cell's members, on training data; 0 by
   default). With probability `augment` a member is randomly permuted first, so the quantizer
   also sees non-canonical nets.
2. steps [quantizer_steps, steps): the prior, on the frozen quantizer's codes of canonical members.
   At its first step the logistic head's base is set to the codes' per-position marginals (every
   training member; per trained architecture and in the tiled table, `init_base`). Loss: the
   next-token cross-entropy of every digit, conditioned on the member's cell and architecture
   (+ prior_task_weight x the task loss of nets drawn from the prior's teacher-forced logits with a
   straight-through Gumbel-softmax, decoded by the frozen decoder: the cross-entropy alone samples
   nets at chance, README).
Only the stage's parameters get gradients (AdamW skips the others). Every draw of step s comes from
the loop's generator seeded by (seed, s), so a resumed run is the uninterrupted one.

At the end the run reports the quantizer on every training member and on the members of held-out
cells whose architecture it trained on: relative reconstruction error of the weights, and test
accuracy of the reconstructed nets against the originals, beside the seed-to-seed spread of the
originals' accuracy within a cell (hypernet.json "reconstruction"); and the prior's code length in
bits per real weight value beside its base alone (hypernet.json "prior").
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F

from hypernet.igpg import IGPGConfig, WeightIGPG, layout_signature
from hypernet.symmetry import canonicalize
from hypernet.tokenizer import KINDS
from pipelines.fit import check_fields, section, top_level
from pipelines.fit_diffusion import MemberTokens, arch_key
from pipelines.hypernet_train import fused_adamw, warmup_cosine
from zoo.errors import ZooError


@dataclass
class IGPGTrainConfig:
    steps: int = 3000  # both stages
    quantizer_steps: int = 1000  # the first stage
    batch_size: int = 16  # members per step (one architecture per step)
    lr: float = 1e-3  # the prior's peak lr
    quantizer_lr: float = 1e-3  # the quantizer's peak lr
    weight_decay: float = 1e-2
    warmup: int = 100  # per stage
    min_lr_ratio: float = 0.05
    clip: float = 1.0
    augment: float = 0.1  # quantizer stage: probability that a member is randomly permuted
    task_weight: float = 0.0  # quantizer stage: weight of the reconstructed nets' task loss
    prior_task_weight: float = 0.0  # prior stage: weight of the task loss of nets drawn from it (Gumbel straight-through)
    distill: float = 1.0  # within either task loss: KL to the cell's trained members
    data_batch: int = 128
    seed: int = 0
    checkpoint_every: int = 500
    log_every: int = 50
    # at the end: the saved generator's sampling temperature is the one of these whose samples have
    # the lowest median training loss on the training cells (`select_temperature`); [] keeps igpg.temperature
    temperatures: list = field(default_factory=lambda: [1.0, 0.5, 0.25, 0.1])
    # ... sampled on at most this many architectures (evenly spaced in their sorted order), so a zoo
    # of 120 architectures does not draw 4 x 4 nets at 360 cells
    temperature_archs: int = 24


@dataclass
class IGPGRunConfig:
    kind: str = "igpg"
    igpg: dict = field(default_factory=dict)  # IGPGConfig fields (conditions, tokenizer, family: set here)
    training: IGPGTrainConfig = field(default_factory=IGPGTrainConfig)

    @classmethod
    def from_dict(cls, d: dict, source: str = "<config>") -> IGPGRunConfig:
        d = top_level(d, source, "igpg")
        if d.get("kind", "igpg") != "igpg":
            raise ZooError(f"{source}: kind {d.get('kind')!r}; this config is for kind igpg")
        model = section(d, "igpg", IGPGConfig, source,
                        exclude={"conditions", "n_conditions", "tokenizer", "family", "trained_kinds", "base_layouts"})
        t = IGPGTrainConfig(**section(d, "training", IGPGTrainConfig, source))
        check_fields(t, source, at_least_one=("steps", "quantizer_steps", "batch_size", "checkpoint_every",
                                              "log_every", "data_batch", "temperature_archs"),
                     positive=("lr", "quantizer_lr", "clip"), non_negative=("task_weight", "prior_task_weight", "distill", "warmup"))
        if not isinstance(t.temperatures, list) or not all(isinstance(v, (int, float)) and v > 0 for v in t.temperatures):
            raise ZooError(f"{source}: training.temperatures must be a list of numbers > 0 (got {t.temperatures!r})")
        if t.quantizer_steps >= t.steps:
            raise ZooError(f"{source}: training.quantizer_steps ({t.quantizer_steps}) must be below training.steps "
                           f"({t.steps}): the prior trains in the steps after the quantizer's")
        if not 0 <= t.augment <= 1:
            raise ZooError(f"{source}: training.augment must be a probability in [0, 1] (got {t.augment})")
        try:
            IGPGConfig(**model)
        except TypeError as e:
            raise ZooError(f"{source}: igpg: {e}") from None
        return cls("igpg", model, t)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "igpg": self.igpg, "training": asdict(self.training)}


def spread(items: list, k: int) -> list:
    """At most k of items, evenly spaced and including both ends (k = 1: the middle one)."""
    n = min(k, len(items))
    if n <= 1:
        return items[len(items) // 2:][:n]
    return [items[round(i * (len(items) - 1) / (n - 1))] for i in range(n)]


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.to(pred.dtype)
    return ((pred - target) ** 2 * m).sum() / m.sum().clamp_min(1.0)


class IGPGTrainer(MemberTokens):
    """The IGPG recipe of the one training loop."""

    def __init__(self, zoo_dir: str | Path, out: str | Path, config: IGPGRunConfig,
                 zoos: list[str] | None = None, progress: bool = True):
        mc = IGPGConfig(**config.igpg)
        self._load(zoo_dir, out, config, zoos, progress, mc.token_size, mc.token_scale, mc.token_pool,
                   "an IGPG generator")
        kinds = sorted({KINDS[s.kind] for a in self.archs.values() for s in a.layout.segments})
        layouts = {layout_signature(a.layout): a.layout.n_tokens for a in self.archs.values()}
        torch.manual_seed(config.training.seed)
        self.model = WeightIGPG(IGPGConfig(**config.igpg, conditions=self.conditions.to_dict(),
                                           tokenizer=self.tokenizer.to_dict(), family=self.family,
                                           trained_kinds=kinds, base_layouts=[[k, v] for k, v in layouts.items()]))
        for a in self.archs.values():
            self.model.check_layout(a.layout, f"architecture {a.cell.zoo}/{a.cell.cell}")
        t = config.training
        groups = []
        tables = {id(p) for n, p in self.model.named_parameters() if n.startswith(("base_", "arch_"))}  # digit units: no decay
        for params in (self.model.quantizer_parameters(), self.model.prior_parameters()):
            decay = [p for p in params if p.dim() >= 2 and id(p) not in tables]
            other = [p for p in params if p.dim() < 2 or id(p) in tables]
            groups += [{"params": decay, "weight_decay": t.weight_decay}, {"params": other, "weight_decay": 0.0}]
        self.opt = torch.optim.AdamW(groups, lr=t.lr, **fused_adamw())
        self.kind, self.label = "igpg", "igpg train"
        # settings that only act after training: `--resume` of a finished run with other values
        # redoes the temperature choice (finish) without retraining
        self.sampling_keys = (("igpg", "temperature"), ("igpg", "top_k"), ("igpg", "temperature_on"),
                              ("training", "temperatures"), ("training", "temperature_archs"))

    def stage(self, s: int) -> str:
        return "quantizer" if s < self.config.training.quantizer_steps else "prior"

    def schedule(self, s: int) -> float:
        t = self.config.training
        q = t.quantizer_steps
        if s < q:
            return warmup_cosine(s, SimpleNamespace(lr=t.quantizer_lr, warmup=t.warmup, steps=q,
                                                    min_lr_ratio=t.min_lr_ratio))
        return warmup_cosine(s - q, SimpleNamespace(lr=t.lr, warmup=t.warmup, steps=t.steps - q,
                                                    min_lr_ratio=t.min_lr_ratio))

    def step(self, s: int, gen: torch.Generator) -> tuple[float, dict[str, float], dict]:
        t = self.config.training
        if self.stage(s) == "quantizer":
            x0, ids, mask, cond, arch, cells = self.batch(gen)
            rec, _ = self.model.autoencode(x0, ids)
            rec = rec * mask
            mse = masked_mse(rec, x0, mask)
            loss, task_v = mse, 0.0
            if t.task_weight:
                task, task_v, _ = self.task_loss(arch, rec, cells, gen)
                loss = mse + t.task_weight * task
            loss.backward()
            return float(loss.detach()), {"recon_mse": float(mse.detach()), "task": task_v, "nll": 0.0}, \
                {"stage": 0}
        if s == t.quantizer_steps:
            self.init_base()
        x0, ids, mask, cond, arch, cells = self.batch(gen, augment=0.0)
        with torch.no_grad():
            _, digits = self.model.quantize(x0, ids)
        nll, logits = self.model.prior_loss(digits, arch.layout, cond, return_logits=True)
        loss, task_v = nll, 0.0
        if t.prior_task_weight:  # nets the prior samples (teacher-forced), decoded; the quantizer stays frozen
            tokens = self.model.decode_latent(self.model.sampled_latent(logits, gen), ids) * mask
            task, task_v, _ = self.task_loss(arch, tokens, cells, gen)
            loss = nll + t.prior_task_weight * task
        loss.backward()
        for p in self.model.quantizer_parameters():
            p.grad = None
        return float(loss.detach()), {"recon_mse": 0.0, "task": task_v, "nll": float(nll.detach())}, {"stage": 1}

    @torch.no_grad()
    def init_base(self) -> None:
        """The prior stage starts from the per-position marginals of the frozen quantizer's codes of
        every training member (WeightIGPG.init_base), so it learns the conditionals on top of them."""
        self.model.init_base([(self.codes(a, [st for st, _, _ in a.members[i:i + 256]]), a.layout)
                              for a in self.archs.values() for i in range(0, len(a.members), 256)])

    def codes(self, a, states: list[dict[str, torch.Tensor]]) -> torch.Tensor:
        """The quantizer's digits (M, N, D) of M canonical states of architecture `a`."""
        x0 = torch.stack([self.tokenizer.encode(st, a.layout).float() for st in states])
        return self.model.quantize(x0, a.layout.ids())[1]

    @torch.no_grad()
    def finish(self) -> None:
        """After the last step, before the generator is saved (the loop's optional hook)."""
        self.sampling = self.select_temperature()

    @torch.no_grad()
    def select_temperature(self, cells_per_arch: int = 3, samples: int = 4) -> dict:
        """Set the generator's default sampling temperature to the one of training.temperatures whose
        samples fit the training data best: per architecture (at most training.temperature_archs of
        them, evenly spaced in sorted order), `samples` nets drawn (seeded) at the
        conditions of `cells_per_arch` of its training cells spread over the plane (its lowest,
        middle and highest in (temperature, load)), each scored by its loss on the first 512 of
        the training samples the cell's members trained on (as predict_init's best-of-n selection
        scores; never test data). A temperature's score is the mean over those cells of the
        median over a cell's samples, so a temperature that fails at one end of the plane (nets
        with a loss of 50 at the highest learning rates, which then die in training) loses even
        when the other cells do well. BatchNorm buffers are the template module's (not re-estimated
        per sample as predict_init does: this ranks temperatures).
        -> {"losses": {temperature: score}, "temperature": the chosen, "cells": the cells used}."""
        temps = self.config.training.temperatures
        if not temps:
            return {"losses": {}, "temperature": self.model.config.temperature}
        self.model.eval()
        cell_of = {c.key: c for c in self.train_cells}
        per_cell: dict[float, list[float]] = {float(v): [] for v in temps}
        used = []
        for a in spread([self.archs[k] for k in sorted(self.archs)], self.config.training.temperature_archs):
            conds = {}
            for _, cond, key in a.members:
                conds.setdefault(key, cond)
            picks = spread(sorted(conds, key=lambda k: (cell_of[k].temperature, cell_of[k].load, k)), cells_per_arch)
            mask = self.tokenizer.mask(a.layout)
            for key in dict.fromkeys(picks):
                used.append(key)
                d = a.tasks[key]
                for v in per_cell:
                    tokens = self.model.sample_tokens(a.layout, mask, conds[key], n=samples, temperature=v,
                                                      generator=torch.Generator().manual_seed(0))
                    loss = self.score(a, self.decode(a, tokens), d.objective, d.x[:512], d.y[:512])["loss"]
                    per_cell[v].append(float(np.median(np.nan_to_num(np.asarray(loss.tolist(), dtype=float), nan=np.inf))))
        score = {v: float(np.mean(ls)) if ls else float("inf") for v, ls in per_cell.items()}
        best = min(score, key=lambda v: (score[v], -v))
        self.model.config.temperature = best
        return {"losses": {str(v): m for v, m in score.items()}, "temperature": best, "cells": used}

    def monitor(self) -> dict:
        return {}

    def info(self, rec: dict) -> str:
        if rec.get("stage") == 0:
            return f"quantizer: recon mse {rec['recon_mse']:.3f}"
        return f"prior: nll {rec['nll']:.3f} nats/digit, task {rec['task']:.3f}"

    @torch.no_grad()
    def reconstruction(self) -> dict:
        """The quantizer on every training member and on the held-out cells' members of trained
        architectures: relative weight error and test accuracy, reconstructed vs original."""
        rows, metric = [], None
        for key, a in self.archs.items():
            names = [n for n, _ in a.module.named_parameters()]
            groups = [("train", [(st, ck) for st, _, ck in a.members]),
                      ("held_out", [(st, c.key) for st, c in self.held_out_members(key)])]
            for split, members in groups:
                for cell_key, items in _by_cell(members).items():
                    task = a.tasks[cell_key].task if cell_key in a.tasks else \
                        next(c for c in self.cells if c.key == cell_key).load_task()
                    x0 = torch.stack([self.tokenizer.encode(st, a.layout) for st in items]).float()
                    rec, _ = self.model.autoencode(x0, a.layout.ids())
                    orig = {n: torch.stack([st[n] for st in items]) for n in names}
                    back = self.decode(a, rec)
                    num = sum(float(((back[n] - orig[n]) ** 2).sum()) for n in names)
                    den = sum(float((orig[n] ** 2).sum()) for n in names)
                    acc_o = self.score(a, orig, task.objective, task.x_test, task.y_test)
                    acc_r = self.score(a, back, task.objective, task.x_test, task.y_test)
                    metric = "acc" if "acc" in acc_o else "rel_l2"  # classification, else a PINN's error
                    rows.append({"split": split, "cell": cell_key, "n": len(items), "rel_err": math.sqrt(num / den),
                                 "original": acc_o[metric].tolist(), "reconstructed": acc_r[metric].tolist()})
        out = {"metric": metric if rows else None, "per_cell": rows}
        for split in ("train", "held_out"):
            rs = [r for r in rows if r["split"] == split]
            if not rs:
                continue
            diff = [r2 - o for r in rs for o, r2 in zip(r["original"], r["reconstructed"])]
            spread = [float(np.std(r["original"], ddof=1)) for r in rs if r["n"] > 1]
            out[split] = {"members": sum(r["n"] for r in rs),
                          "rel_err_median": float(np.median([r["rel_err"] for r in rs])),
                          "score_diff_median": float(np.median(diff)),
                          "score_diff_mean": float(np.mean(diff)),
                          "seed_std_median": float(np.median(spread)) if spread else None}
        return out

    def decode(self, a, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, N, k) tokens of architecture `a` -> its stacked float32 parameters (B, *shape) each."""
        return {n: v.float() for n, v in self.tokenizer.decode_batch(tokens.double(), a.layout).items()}

    @staticmethod
    def score(a, params: dict[str, torch.Tensor], objective, x: torch.Tensor, y: torch.Tensor) -> dict:
        """The objective's metrics (loss, acc, ...) of B stacked nets of architecture `a` on (x, y),
        in eval mode with the template module's buffers."""
        B = next(iter(params.values())).shape[0]
        buffers = {n: b.unsqueeze(0).expand(B, *b.shape).clone() for n, b in a.module.named_buffers()}
        a.module.eval()
        return objective.evaluate(a.fwd, params, buffers, x, y.unsqueeze(0).expand(B, *y.shape))

    def held_out_members(self, key: str) -> list:
        """[(canonical state, cell)] of the trained members of the held-out cells of architecture
        `key` (one the recipe trained on): what the end-of-run reports test generalization on."""
        a, held = self.archs[key], set(self.split.held_out_cells)
        return [(canonicalize(st, a.reference, a.module), c) for c in self.cells
                if c.key in held and c.rows and arch_key(c) == key for st in c.states(self.root)]

    def meta(self) -> dict:
        layouts = [a.layout for a in self.archs.values()]
        return {"references": self.references, "n_params": self.model.n_params(),
                "quantizer_params": sum(p.numel() for p in self.model.quantizer_parameters()),
                "n_training_members": sum(len(a.members) for a in self.archs.values()),
                "codes": {"levels": self.model.config.levels, "bits_per_token":
                          sum(math.log2(v) for v in self.model.config.levels),
                          "bits_per_value": [self.model.bits_per_value(lay) for lay in layouts]},
                "reconstruction": self.reconstruction(), "prior": self.prior_report(),
                "sampling": getattr(self, "sampling", None)}

    @torch.no_grad()
    def prior_report(self, per_arch: int = 64) -> dict:
        """The prior's code length on up to `per_arch` training members of every architecture and
        on the held-out cells' members of trained architectures, in bits per real weight value
        (the code's digits, padding's included, over the values they stand for: the code rate is
        the ceiling), beside the logistic head's base table alone (the per-position marginals):
        how much the transformer's context adds."""
        out: dict = {}
        for split in ("train", "held_out"):
            prior = base = values = 0.0
            for key, a in self.archs.items():
                if split == "train":
                    items = [(st, cond) for st, cond, _ in a.members[:per_arch]]
                else:
                    items = [(st, self.conditions.vector(c.zoo, c.temperature, c.load))
                             for st, c in self.held_out_members(key)[:per_arch]]
                if not items:
                    continue
                digits = self.codes(a, [st for st, _ in items])
                logits = self.model.prior_logits(digits, a.layout, torch.stack([c for _, c in items]))
                prior += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), digits.reshape(-1), reduction="sum"))
                if self.model.config.head == "logistic":
                    b = self.model.base_logits(a.layout).expand_as(logits)
                    base += float(F.cross_entropy(b.reshape(-1, b.shape[-1]), digits.reshape(-1), reduction="sum"))
                values += len(items) * float(self.tokenizer.mask(a.layout).sum())
            if values:
                out[split] = {"bits_per_value": prior / values / math.log(2),
                              "marginal_bits_per_value": base / values / math.log(2) if base else None}
        return out


def _by_cell(members):
    out: dict[str, list] = {}
    for st, ck in members:
        out.setdefault(ck, []).append(st)
    return out
