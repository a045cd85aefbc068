"""Population-based training as a way of drawing the plane (`--phase pbt`): the spec's `pbt`
block, the members' first hyperparameters, and where a member's current hyperparameters put it
on the phase plane. No Ray here: pipelines.pbt runs the experiments on Ray Tune.

One PBT experiment per (seed of `seeds`, value of the load axis): the load (e.g. the width) is
the architecture, which exploit cannot change, so members that may copy each other's weights
share it. Within an experiment, `population` members start from seeded draws of the mutated
hyperparameters and follow Tune's exploit (copy a better member's weights and optimizer state)
and explore (perturb the copied hyperparameters) every `perturbation_interval` epochs, ranked by
a metric on a validation split carved from the training data (never the test split).
"""
from __future__ import annotations

import math
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

MUTABLE = ("lr", "weight_decay", "momentum", "batch_size")  # hyperparameters PBT may mutate
METRICS = {"val_acc": "max", "val_loss": "min"}  # the ranking metric and its Tune mode
MAX_POPULATION = 1000  # member k of seed s has init seed 1000 s + k


class Mutation(BaseModel):
    """How one hyperparameter is drawn at the start and resampled by explore: a `range`
    [low, high] (log scale unless `log: false`) or a list of `values` (explore moves to a
    neighbouring value, as Tune's PBT does for lists)."""

    model_config = ConfigDict(extra="forbid")
    range: tuple[float, float] | None = None
    values: list[float] | None = Field(None, min_length=2)
    log: bool = True

    @model_validator(mode="after")
    def _check(self):
        if (self.range is None) == (self.values is None):
            raise ValueError("give either range: [low, high] or values: [...]")
        if self.range is not None:
            lo, hi = self.range
            if not lo < hi:
                raise ValueError(f"range: low must be below high (got [{lo}, {hi}])")
            if self.log and lo <= 0:
                raise ValueError(f"range: a log-scale range must be positive (got [{lo}, {hi}]); use log: false")
        elif len(set(self.values)) != len(self.values):
            raise ValueError(f"values: must be distinct (got {self.values})")
        return self

    def bounds(self) -> tuple[float, float]:
        return tuple(self.range) if self.range is not None else (min(self.values), max(self.values))

    def draw(self, u: float) -> float:
        """The value at quantile u in [0, 1) (log-uniform, uniform, or one of the values)."""
        if self.values is not None:
            return sorted(self.values)[min(int(u * len(self.values)), len(self.values) - 1)]
        lo, hi = self.range
        return math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo))) if self.log else lo + u * (hi - lo)


class PBTSettings(BaseModel):
    """The `pbt` block (see the module docstring). `scheduler`: Tune's PopulationBasedTraining, or
    PB2 (a GP-bandit explore step; ranges only, and it needs the optional GPy package)."""

    model_config = ConfigDict(extra="forbid")
    scheduler: Literal["pbt", "pb2"] = "pbt"
    population: int = Field(ge=2, le=MAX_POPULATION)
    perturbation_interval: int = Field(ge=1)  # epochs between exploit/explore steps
    mutations: dict[str, Mutation] = Field(min_length=1)
    quantile_fraction: float = Field(0.25, gt=0, le=0.5)
    resample_probability: float = Field(0.25, ge=0, le=1)
    metric: Literal[tuple(METRICS)] = "val_acc"  # type: ignore[valid-type]
    validation_fraction: float = Field(0.2, gt=0, lt=1)  # of the training split, held out for `metric`

    def check(self) -> None:
        """The mutations' cross-field rules (run by ZooSpec, so errors name `pbt.mutations.<name>`)."""
        for name, m in self.mutations.items():
            if name not in MUTABLE:
                raise ValueError(f"pbt.mutations.{name}: not a hyperparameter PBT can mutate; valid: {', '.join(MUTABLE)}")
            lo, hi = m.bounds()
            vals = m.values if m.values is not None else [lo, hi]
            where = f"pbt.mutations.{name}"
            if name == "batch_size":
                if m.values is None:
                    raise ValueError(f"{where}: batch_size takes values: [...] (integers), not a range")
                if any(v != int(v) or v < 1 for v in vals):
                    raise ValueError(f"{where}.values: batch sizes must be positive integers (got {m.values})")
                m.values = [int(v) for v in m.values]
            if name == "lr" and lo <= 0:
                raise ValueError(f"{where}: lr must be > 0 (got {lo})")
            if name == "weight_decay" and lo < 0:
                raise ValueError(f"{where}: weight_decay must be >= 0 (got {lo})")
            if name == "momentum" and not (0 <= lo and hi < 1):
                raise ValueError(f"{where}: momentum must lie in [0, 1) (got [{lo}, {hi}])")
            if self.scheduler == "pb2" and m.range is None:
                raise ValueError(f"{where}: PB2 explores continuous ranges only; give range: [low, high] "
                                 "or use scheduler: pbt")

    @property
    def mode(self) -> str:
        return METRICS[self.metric]


def initial_hyperparameters(pbt: PBTSettings, base: dict, seed: int, member: int) -> dict:
    """Member `member`'s starting values of the mutated hyperparameters (the spec's training
    values for the others): one seeded draw per (seed, member), the same for every load, so the
    experiments of one seed start from the same hyperparameters."""
    rng = np.random.default_rng([seed, member])
    out = {k: base[k] for k in MUTABLE}
    for name in sorted(pbt.mutations):
        v = pbt.mutations[name].draw(float(rng.random()))
        out[name] = int(v) if name == "batch_size" else float(f"{v:.4g}")
    return out


def clip(pbt: PBTSettings, config: dict) -> dict:
    """Keep explore's perturbations (x0.8 / x1.2) inside each mutation's declared range."""
    out = dict(config)
    for name, m in pbt.mutations.items():
        if m.range is not None and name in out:
            lo, hi = m.range
            out[name] = float(min(max(out[name], lo), hi))
    return out


def member_seed(seed: int, member: int) -> int:
    """The init and data-order seed of member `member` of the experiment of seed `seed`."""
    return MAX_POPULATION * seed + member


def temperature_coordinate(param: str, hp: dict, base: dict, optimizer: str) -> float:
    """Where hyperparameters `hp` sit on a temperature axis of `param` (batch_size or lr).

    SGD's noise scale is g = lr / (B (1 - momentum)) (Smith & Le 2018; Smith et al. 2018,
    "Don't decay the learning rate, increase the batch size"): the temperature of training. The
    coordinate is the value of `param` that gives the same g with the spec's other training
    values (`base`), so a member whose only changed hyperparameter is `param` sits at exactly
    its value, and one with a doubled lr sits at half the batch size. Adam: g = lr / B.
    """
    def scale(h):
        m = h["momentum"] if optimizer == "sgd" else 0.0
        return h["lr"] / (h["batch_size"] * (1 - m))

    g = scale(hp)
    m0 = base["momentum"] if optimizer == "sgd" else 0.0
    if param == "batch_size":
        return base["lr"] / ((1 - m0) * g)
    if param == "lr":
        return g * base["batch_size"] * (1 - m0)
    raise ValueError(f"temperature param {param!r}: expected batch_size or lr")


def nearest(values: list[float], v: float) -> int:
    """Index of the axis value nearest to v on a log scale."""
    return int(np.argmin([abs(math.log(x) - math.log(v)) for x in values]))
