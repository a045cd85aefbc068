"""ZooSpec: the validated configuration of one zoo, loaded from YAML.

A zoo is one task x one model family x a (temperature, load) plane x seeds. Every mistake in a
file is reported as one line naming the file and the field path, e.g.
`configs/zoos/x.yaml: training.optimizer: Input should be 'sgd', 'adam' or 'adamw'`.
A collection file (`name:` + `zoos:` list of spec paths) groups zoos into one dataset.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from zoo import nets, tasks
from zoo.errors import ZooError
from zoo.landscape.phases import PhaseThresholds
from zoo.machine import DEVICES
from zoo.pbt import PBTSettings, initial_hyperparameters, member_seed, nearest, temperature_coordinate

TEMPERATURE_PARAMS = ("batch_size", "lr")
LOAD_PARAMS = ("width", "data_fraction", "label_noise")
INT_PARAMS = ("batch_size", "width")
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_]*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSpec(BaseModel):
    """`family` plus that family's fixed knobs (e.g. depth, width); `init` scheme."""

    model_config = ConfigDict(extra="allow")
    family: str
    init: Literal["kaiming_uniform", "torch_default"] = "kaiming_uniform"

    @model_validator(mode="after")
    def _check_family(self):
        nets.NETS.get(self.family)  # unknown family -> error listing the valid ones
        nets.check_knobs(self.family, self.knobs)
        return self

    @property
    def knobs(self) -> dict:
        return dict(self.model_extra or {})


class Training(_Strict):
    epochs: int = Field(ge=1)
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = Field(0.1, gt=0)
    momentum: float = Field(0.0, ge=0, lt=1)
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(64, ge=1)
    schedule: Literal["constant", "cosine", "onecycle"] = "constant"
    data_fraction: float = Field(1.0, gt=0, le=1)
    label_noise: float = Field(0.0, ge=0, lt=1)


class Axis(_Strict):
    param: str
    values: list[float] = Field(min_length=1)

    @field_validator("values")
    @classmethod
    def _unique(cls, v):
        if len(set(v)) != len(v):
            raise ValueError(f"values must be distinct (got {v})")
        return v


def _check_axis_values(axis_name: str, param: str, values: list[float], field: str = "values") -> list[float]:
    """The plane's axis values for `param`, checked (one ValueError naming the entry) and typed."""
    for i, v in enumerate(values):
        where = f"{axis_name}.{field}[{i}]"
        if param in INT_PARAMS and (v != int(v) or v < 1):
            raise ValueError(f"{where}: {param} must be a positive integer (got {v})")
        if param == "lr" and v <= 0:
            raise ValueError(f"{where}: lr must be > 0 (got {v})")
        if param == "data_fraction" and not 0 < v <= 1:
            raise ValueError(f"{where}: data_fraction must be in (0, 1] (got {v})")
        if param == "label_noise" and not 0 <= v < 1:
            raise ValueError(f"{where}: label_noise must be in [0, 1) (got {v})")
    return [int(v) for v in values] if param in INT_PARAMS else list(values)


def _check_axis_param(axis_name: str, param: str) -> bool:
    """True when `param` is a training/architecture parameter; False for a load axis that may be
    a task argument (checked with the task in ZooSpec)."""
    valid = TEMPERATURE_PARAMS if axis_name == "temperature" else LOAD_PARAMS
    if param in valid:
        return True
    if axis_name == "load":
        return False
    raise ValueError(f"{axis_name}.param {param!r} is not valid; expected one of {', '.join(valid)}")


class Axes(_Strict):
    temperature: Axis
    load: Axis

    @model_validator(mode="after")
    def _check(self):
        for axis_name, axis in (("temperature", self.temperature), ("load", self.load)):
            if _check_axis_param(axis_name, axis.param):
                axis.values = _check_axis_values(axis_name, axis.param, axis.values)
        return self


class SampledAxis(_Strict):
    """One axis of `--phase random`: a `range` [low, high] (sampled on a log scale unless
    `log: false`; integer parameters are rounded) or a list of `values` to choose from."""

    param: str
    range: tuple[float, float] | None = None
    values: list[float] | None = Field(None, min_length=1)
    log: bool = True


class Sampling(_Strict):
    """`--phase random`: `points` points of the (temperature, load) plane, each trained with every
    seed of `seeds`. `sobol` = a scrambled Sobol' sequence (low discrepancy), `uniform` = seeded
    uniform draws; both from `seed`, and both prefix-stable: growing `points` keeps the earlier
    points (and so their models) and adds new ones. Sampled values are rounded to 4 significant
    digits (integers to the nearest integer), so a point's model ids are the same on every
    machine; points that round to the same coordinates are kept once."""

    points: int = Field(ge=1)
    method: Literal["sobol", "uniform"] = "sobol"
    seed: int = Field(0, ge=0)
    temperature: SampledAxis
    load: SampledAxis

    @model_validator(mode="after")
    def _check(self):
        for axis_name, axis in (("temperature", self.temperature), ("load", self.load)):
            if (axis.range is None) == (axis.values is None):
                raise ValueError(f"{axis_name}: give either range: [low, high] or values: [...]")
            known = _check_axis_param(axis_name, axis.param)
            if axis.values is not None:
                if len(set(axis.values)) != len(axis.values):
                    raise ValueError(f"{axis_name}.values: must be distinct (got {axis.values})")
                if known:
                    axis.values = _check_axis_values(axis_name, axis.param, axis.values)
                continue
            lo, hi = axis.range
            if not lo < hi:
                raise ValueError(f"{axis_name}.range: low must be below high (got [{lo}, {hi}])")
            if axis.log and lo <= 0:
                raise ValueError(f"{axis_name}.range: a log-scale range must be positive (got [{lo}, {hi}]); "
                                 "use log: false for a linear one")
            if known and axis.param in INT_PARAMS:
                if lo < 1:
                    raise ValueError(f"{axis_name}.range[0]: {axis.param} must be >= 1 (got {lo})")
                if math.floor(hi) < math.ceil(lo):
                    raise ValueError(f"{axis_name}.range: holds no integer {axis.param} (got [{lo}, {hi}])")
            elif known:
                _check_axis_values(axis_name, axis.param, [lo, hi], "range")
        return self

    def unit_points(self) -> np.ndarray:
        """(points, 2) in [0, 1): column 0 temperature, column 1 load."""
        if self.method == "uniform":
            return np.random.default_rng(self.seed).random((self.points, 2))
        from scipy.stats import qmc

        with warnings.catch_warnings():  # balance needs a power of 2; prefix stability matters more here
            warnings.simplefilter("ignore")
            return qmc.Sobol(d=2, scramble=True, seed=self.seed).random(self.points)


def _axis_value(axis: SampledAxis, u: float) -> float:
    if axis.values is not None:
        return axis.values[min(int(u * len(axis.values)), len(axis.values) - 1)]
    lo, hi = axis.range
    v = math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo))) if axis.log else lo + u * (hi - lo)
    if axis.param in INT_PARAMS:
        return int(min(max(round(v), math.ceil(lo)), math.floor(hi)))
    return float(f"{v:.4g}")


class ArchSpace(_Strict):
    """Architectures sampled per model within the family (GHN-2's DeepNets idea, for trained
    models): `space` maps each knob to its choices; `count` distinct architectures are drawn
    without replacement from their product by a generator seeded with `seed` (prefix-stable:
    a larger count keeps the first ones). Two choices that build the same net (e.g. a residual
    flag on a net with one hidden layer) count as one architecture."""

    count: int = Field(ge=1)
    seed: int = Field(0, ge=0)
    space: dict[str, list] = Field(min_length=1)

    @field_validator("space")
    @classmethod
    def _choices(cls, v):
        for knob, choices in v.items():
            if not isinstance(choices, list) or not choices:
                raise ValueError(f"{knob}: expected a non-empty list of choices (got {choices!r})")
            if len({json.dumps(c) for c in choices}) != len(choices):
                raise ValueError(f"{knob}: choices must be distinct (got {choices})")
        return v


class HessianSettings(_Strict):
    """Hessian of the training loss on `batches` x `batch_size` fixed training samples."""

    batches: int = Field(4, ge=1)
    batch_size: int = Field(256, ge=1)
    max_iter: int = Field(50, ge=1)  # power iterations (top eigenvalue)
    probes: int = Field(100, ge=1)  # at most this many Hutchinson probes (trace)
    tol: float = Field(1e-3, ge=0)  # relative tolerance of both (PyHessian's stopping rule)


class CKASettings(_Strict):
    samples: int = Field(1000, ge=2)  # held-out (test) samples the representations are taken on


class ConnectivitySettings(_Strict):
    epochs: int = Field(20, ge=0)  # epochs of training the Bezier control point (cosine-decayed Adam)
    lr: float = Field(0.02, gt=0)  # its peak learning rate
    batch_size: int = Field(128, ge=1)
    points: int = Field(11, ge=3)  # evenly spaced t in [0, 1] where the curve is evaluated


class Metrics(_Strict):
    epoch: int | None = None  # default: the last epoch
    enabled: bool = True  # compute landscape metrics and phases as part of `zoo build`
    # bounds on a cell's cost however many seeds it has: the Hessian, CKA and curves use at most
    # `seeds` of its trained seeds (the lowest seeds; None = all) and CKA and mode connectivity at
    # most `pairs` of their pairs (a seeded choice per cell; None = all)
    seeds: int | None = Field(None, ge=2)
    pairs: int | None = Field(None, ge=1)
    hessian: HessianSettings = Field(default_factory=HessianSettings)
    cka: CKASettings = Field(default_factory=CKASettings)
    connectivity: ConnectivitySettings = Field(default_factory=ConnectivitySettings)
    phases: PhaseThresholds = Field(default_factory=PhaseThresholds)


class Storage(_Strict):
    shard_max_mb: float = Field(256.0, gt=0)
    flat_weights_max_params: int = Field(1_000_000, ge=0)


class Compute(_Strict):
    max_members: int = Field(64, ge=1)  # members per population (one stacked training step)
    # pack populations smaller than this into one bundle (Ray task) of up to this many members,
    # so tiny populations do not each pay a task's start-up; None = one population per bundle
    bundle_members: int | None = Field(None, ge=1)
    threads_per_worker: int = Field(1, ge=1)
    # where bundles train: auto = CUDA when torch sees a GPU (resolved where the build starts), else
    # the CPU; on CUDA each Ray task asks for `gpus_per_worker` GPUs (a fraction shares one GPU).
    # Placement, not part of what the models are: left out of training_json (a build can resume on
    # another device); the landscape metrics run on the CPU.
    device: Literal[DEVICES] = "auto"  # type: ignore[valid-type]  (zoo.machine.DEVICES: one list for spec, CLI, resolver)
    gpus_per_worker: float = Field(1.0, gt=0, le=1)


PHASES = ("grid", "random", "pbt")  # how members are drawn from the plane (`zoo build --phase`)


class ZooSpec(_Strict):
    name: str
    description: str = ""
    # grid: every cell of `axes` x every seed; random: the `sampling` points x every seed; pbt:
    # population-based training on the plane of `axes` (the `pbt` block; zoo.pbt, pipelines.pbt).
    # `zoo build --phase` sets it for every zoo of a collection.
    phase: Literal[PHASES] = "grid"  # type: ignore[valid-type]
    task: str
    task_args: dict = Field(default_factory=dict)
    model: ModelSpec
    training: Training
    axes: Axes | None = None
    sampling: Sampling | None = None
    architectures: ArchSpace | None = None
    pbt: PBTSettings | None = None
    seeds: list[int] = Field(min_length=1)
    checkpoints: list[int] = Field(min_length=1)
    metrics: Metrics = Field(default_factory=Metrics)
    storage: Storage = Field(default_factory=Storage)
    compute: Compute = Field(default_factory=Compute)

    @field_validator("name")
    @classmethod
    def _name(cls, v):
        if not NAME_RE.match(v):
            raise ValueError(f"{v!r} must be lower-case letters, digits and underscores (it names a dataset config)")
        return v

    @field_validator("task")
    @classmethod
    def _task(cls, v):
        try:
            tasks.check_name(v)
        except ZooError as e:
            raise ValueError(str(e)) from None
        return v

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v):
        if len(set(v)) != len(v) or min(v) < 0:
            raise ValueError(f"seeds must be distinct non-negative integers (got {v})")
        return v

    @model_validator(mode="after")
    def _cross(self):
        e = self.training.epochs
        cps = self.checkpoints
        if sorted(set(cps)) != cps:
            raise ValueError(f"checkpoints: must be distinct and increasing (got {cps})")
        if cps[0] < 0 or cps[-1] > e:
            raise ValueError(f"checkpoints: epochs must lie in [0, training.epochs={e}] (got {cps})")
        if e not in cps:
            raise ValueError(f"checkpoints: must include the last epoch {e} (got {cps})")
        if self.metrics.epoch is None:
            self.metrics.epoch = e
        if self.metrics.epoch not in cps:
            raise ValueError(f"metrics.epoch: {self.metrics.epoch} must be one of the checkpoints {cps}")
        if self.phase == "grid" and self.axes is None:
            hint = "; this spec has a sampling block: build it with --phase random" if self.sampling else ""
            raise ValueError(f"axes: required for --phase grid{hint}")
        if self.phase == "random" and self.sampling is None:
            raise ValueError("sampling: required for --phase random (points, seed, and a range or values "
                             "for temperature and load)")
        if self.phase == "pbt":
            self._check_pbt()
        section = "sampling" if self.phase == "random" else "axes"
        t_param, l_param = self.plane_params()
        sampled = set(self.architectures.space) if self.architectures else set()
        for param in (t_param, l_param):
            if param == "width" and "width" not in nets.knobs(self.model.family):
                raise ValueError(f"{section}: model family {self.model.family!r} has no width knob")
            if param in sampled:
                raise ValueError(f"architectures.space.{param}: {param} is an axis of the plane ({section}); "
                                 "sample it in one place only")
        task_axes = tasks.axis_params(self.task)
        if l_param not in LOAD_PARAMS and l_param not in task_axes:
            extra = f", or an argument of task {self.task!r}: {', '.join(task_axes)}" if task_axes else ""
            raise ValueError(f"{section}.load.param {l_param!r} is not valid; expected one of "
                             f"{', '.join(LOAD_PARAMS)}{extra}")
        valid_args = tasks.arg_defaults(self.task)
        if not self.task.startswith(tasks.HF_PREFIX):
            unknown = sorted(set(self.task_args) - set(valid_args))
            if unknown:
                raise ValueError(f"task_args: unknown {unknown} for task {self.task!r}; "
                                 f"valid: {', '.join(valid_args) or 'none'}")
        if self.architectures is not None:
            self._check_space()
        return self

    def _check_pbt(self) -> None:
        if self.pbt is None:
            raise ValueError("pbt: required for --phase pbt (population, perturbation_interval, mutations)")
        if self.axes is None:
            raise ValueError("axes: required for --phase pbt (the plane the members are placed on; one PBT "
                             "experiment per load value)")
        if self.architectures is not None:
            raise ValueError("architectures: not supported with --phase pbt (exploit copies weights between "
                             "members, so an experiment has one architecture)")
        if self.training.schedule != "constant":
            raise ValueError(f"training.schedule: PBT discovers the schedule; use constant "
                             f"(got {self.training.schedule!r})")
        p, e = self.pbt, self.training.epochs
        p.check()
        if p.perturbation_interval >= e:
            raise ValueError(f"pbt.perturbation_interval: {p.perturbation_interval} epochs leaves no perturbation "
                             f"within training.epochs={e}")
        load = self.axes.load.param
        if load in p.mutations:
            raise ValueError(f"pbt.mutations.{load}: {load} is the load axis, fixed per experiment; "
                             f"mutate one of {', '.join(k for k in ('lr', 'weight_decay', 'momentum', 'batch_size') if k != load)}")
        if "momentum" in p.mutations and self.training.optimizer != "sgd":
            raise ValueError(f"pbt.mutations.momentum: momentum is an SGD setting (training.optimizer is "
                             f"{self.training.optimizer!r})")

    # ---- the plane -------------------------------------------------------------------------
    def plane_params(self) -> tuple[str, str]:
        """(temperature param, load param) of the plane this spec's phase draws from."""
        src = self.sampling if self.phase == "random" else self.axes
        return src.temperature.param, src.load.param

    def cells(self) -> list["Cell"]:
        """The plane's cells (grid) or sampled points (random), in plan order."""
        if self.phase == "random":
            return self._points()
        t, l = self.axes.temperature, self.axes.load
        return [
            Cell(ti, li, t.param, tv, l.param, lv)
            for ti, tv in enumerate(t.values)
            for li, lv in enumerate(l.values)
        ]

    def _points(self) -> list["Cell"]:
        sp = self.sampling
        seen, out = set(), []
        for k, (ut, ul) in enumerate(sp.unit_points()):
            tv, lv = _axis_value(sp.temperature, float(ut)), _axis_value(sp.load, float(ul))
            if (tv, lv) in seen:
                continue  # rounded onto an earlier point: the same models
            seen.add((tv, lv))
            out.append(Cell(k, 0, sp.temperature.param, tv, sp.load.param, lv, point=k))
        return out

    # ---- architectures ---------------------------------------------------------------------
    def base_arch(self) -> dict:
        return {"family": self.model.family, **nets.recorded_knobs(self.model.family, self.model.knobs)}

    def archs(self) -> list[dict]:
        """The zoo's architectures before the plane's width (if width is an axis) is applied:
        one (the model block) or the `architectures` sample."""
        if self.architectures is None:
            return [self.base_arch()]
        drawn = _sample_archs(self.task, json.dumps(self.task_args, sort_keys=True),
                              json.dumps(self.base_arch(), sort_keys=True), self.architectures.model_dump_json())
        return [dict(a) for a in drawn]  # copies: the drawn list is cached

    def _check_space(self) -> None:
        family, space = self.model.family, self.architectures.space
        valid = nets.knobs(family)
        unknown = sorted(set(space) - set(valid))
        if unknown:
            raise ValueError(f"architectures.space: model family {family!r} has no knob(s) {unknown}; "
                             f"valid: {', '.join(sorted(valid))}")
        task = tasks.load(self.task, self.task_args)
        base = {k: v for k, v in self.base_arch().items() if k != "family"}
        for knob, choices in space.items():
            for i, c in enumerate(choices):
                try:
                    nets.build(family, task, **{**base, knob: c})
                except (ValueError, TypeError, ZooError) as err:
                    raise ValueError(f"architectures.space.{knob}[{i}]: {err}") from None
        n = len(self.archs())
        if self.architectures.count > n:
            raise ValueError(f"architectures.count: {self.architectures.count} is more than the "
                             f"{n} distinct architectures of the space")

    # ---- members ---------------------------------------------------------------------------
    def members(self) -> list["Member"]:
        """Every cell (or point) x every architecture x every seed, in plan order (cell-major,
        then architecture, then seed)."""
        if self.phase == "pbt":
            return self._pbt_members()
        archs = self.archs()
        train = self.training.model_dump(mode="json")
        return [self.member(c, s, a, train) for c in self.cells() for a in archs for s in self.seeds]

    def _pbt_members(self) -> list["Member"]:
        """Seed-major, then load value, then member: the `population` members of each PBT
        experiment with their first hyperparameters (placed in the grid cell nearest to them;
        pipelines.pbt records where each one ends) and a `holdout` of the training split for
        the ranking metric."""
        base = self.training.model_dump(mode="json")
        t_axis, loads = self.axes.temperature, self.axes.load.values
        cells = self.cells()
        out = []
        for s in self.seeds:
            for li in range(len(loads)):
                for k in range(self.pbt.population):
                    hp = initial_hyperparameters(self.pbt, base, s, k)
                    train = {**base, **hp, "holdout": self.pbt.validation_fraction}
                    tv = temperature_coordinate(t_axis.param, hp, base, base["optimizer"])
                    cell = cells[nearest(t_axis.values, tv) * len(loads) + li]
                    out.append(self.member(cell, member_seed(s, k), training=train, pbt_member=(s, k)))
        return out

    def member(self, cell: "Cell", seed: int, arch: dict | None = None, training: dict | None = None,
               pbt_member: tuple[int, int] | None = None) -> "Member":
        """The member of `cell` with `seed`. `pbt_member` (experiment seed, index): a PBT member,
        whose training values are its own (only the load axis is applied: the architecture)."""
        train = dict(training or self.training.model_dump(mode="json"))
        arch = dict(arch or self.archs()[0])
        task_args = dict(self.task_args)
        for param, value in ((cell.temperature_param, cell.temperature), (cell.load_param, cell.load)):
            if pbt_member is not None and param == cell.temperature_param:
                continue
            if param == "width":
                arch["width"] = int(value)
            elif param in TEMPERATURE_PARAMS or param in LOAD_PARAMS:
                train[param] = value
            else:  # a task argument on the load axis
                task_args[param] = float(value)
        payload = {
            "zoo": self.name, "task": self.task, "task_args": task_args,
            "arch": arch, "init": self.model.init, "training": train, "seed": seed,
        }
        if pbt_member is not None:  # a PBT member's training depends on its whole experiment: the pbt block
            payload["pbt"] = {"experiment_seed": pbt_member[0], "member": pbt_member[1],
                              "settings": self.pbt.model_dump(mode="json")}
        digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
        aid = arch_id(arch)
        group = f"{cell.id}-{aid}" if self.architectures else cell.id
        return Member(model_id=digest, cell=cell, seed=seed, arch=arch, training=train, task_args=task_args,
                      arch_id=aid, group=group)

    def groups(self) -> dict[str, list["Member"]]:
        """The members by metrics group (a cell; with sampled architectures a (cell, architecture)
        pair): the seeds whose landscape metrics and phase are computed together. Plan order."""
        out: dict[str, list[Member]] = {}
        for m in self.members():
            out.setdefault(m.group, []).append(m)
        return out

    def training_json(self) -> dict:
        """The part of the spec that determines the trained models (not metrics, not prose, not
        the device placement). Sections a spec does not use are left out, so adding a kind of
        plane did not change the digest of the specs that existed before it."""
        d = self.to_json()
        for k in ("metrics", "description"):
            d.pop(k, None)
        for k in ("device", "gpus_per_worker"):
            d["compute"].pop(k, None)
        for k in ("axes", "sampling", "architectures", "pbt"):
            if d.get(k) is None:
                d.pop(k, None)
        if d.get("phase") == "grid":
            d.pop("phase")
        return d

    def to_json(self) -> dict:
        d = self.model_dump(mode="json")
        d["model"] = {"family": self.model.family, "init": self.model.init, **self.model.knobs}
        return d


def arch_id(arch: dict) -> str:
    """A short stable id of an architecture (family + knobs): 8 hex digits of its JSON's sha256."""
    return hashlib.sha256(json.dumps(arch, sort_keys=True).encode()).hexdigest()[:8]


def members_by_id(spec_json: dict) -> dict[str, "Member"]:
    """model_id -> Member of a spec given as JSON (what a Ray task receives). Cached per process:
    a worker trains many bundles of one zoo and should not rebuild 10,000 members for each."""
    return _members_by_id(json.dumps(spec_json, sort_keys=True))


@lru_cache(maxsize=8)
def _members_by_id(spec_json: str) -> dict[str, "Member"]:
    data = json.loads(spec_json)
    spec = parse_spec(data, f"spec of zoo {data.get('name')}")
    return {m.model_id: m for m in spec.members()}


@lru_cache(maxsize=64)
def _sample_archs(task: str, task_args: str, base: str, space_json: str) -> list[dict]:
    """`count` distinct architectures of an ArchSpace (see its docstring), first drawn first."""
    space = ArchSpace.model_validate_json(space_json)
    base_arch = json.loads(base)
    family = base_arch["family"]
    t = tasks.load(task, json.loads(task_args))
    knobs = sorted(space.space)
    combos = list(itertools.product(*(space.space[k] for k in knobs)))
    order = np.random.default_rng(space.seed).permutation(len(combos))
    seen, out = set(), []
    for i in order:
        arch = {**base_arch, **dict(zip(knobs, combos[i]))}
        kw = {k: v for k, v in arch.items() if k != "family"}
        net = nets.build(family, t, **kw)
        shape = repr(net)  # the module tree: equal for choices that build the same net
        if shape in seen:
            continue
        seen.add(shape)
        out.append({"family": family, **nets.recorded_knobs(family, kw)})
        if len(out) == space.count:
            break
    return out


@dataclass(frozen=True)
class Cell:
    """A cell of the grid (`T<ti>L<li>`) or a sampled point of the plane (`P<k>`, its index in the
    sampling sequence, which stays the same when the sequence grows)."""

    ti: int
    li: int
    temperature_param: str
    temperature: float
    load_param: str
    load: float
    point: int | None = None

    @property
    def id(self) -> str:
        return f"T{self.ti}L{self.li}" if self.point is None else f"P{self.point:05d}"


@dataclass(frozen=True)
class Member:
    """One model of the zoo: one architecture + one cell + one seed."""

    model_id: str
    cell: Cell
    seed: int
    arch: dict  # family + knobs, enough to rebuild the net
    training: dict  # Training fields with the cell's axis values applied
    task_args: dict  # the zoo's task_args with the cell's task-argument axis value applied
    arch_id: str = ""  # spec.arch_id(arch)
    group: str = ""  # the metrics group: the cell id, suffixed by -<arch_id> when architectures are sampled


@dataclass(frozen=True)
class Collection:
    name: str
    zoos: list[ZooSpec]
    path: Path | None = None


# ---- loading --------------------------------------------------------------------------------
def _valid_fields(loc: tuple) -> list[str]:
    """The field names valid at the place of an unknown field (loc minus its last part)."""
    cls: type[BaseModel] = ZooSpec
    for part in loc[:-1]:
        field = cls.model_fields.get(part) if isinstance(part, str) else None
        ann = getattr(field, "annotation", None)
        ann = next((a for a in (ann, *get_args(ann)) if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if ann is None:  # not a section (an optional section counts as one)
            return []
        cls = ann
    return list(cls.model_fields)


def _format(e: ValidationError) -> str:
    parts = []
    for err in e.errors():
        loc = ".".join(str(x) if not isinstance(x, int) else f"[{x}]" for x in err["loc"]).replace(".[", "[")
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            valid = _valid_fields(err["loc"])
            msg = "unknown field" + (f"; valid: {', '.join(valid)}" if valid else "")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


def _read_yaml(path: Path) -> dict:
    if not path.exists():
        raise ZooError(f"{path}: no such file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ZooError(f"{path}: invalid YAML{where}: {getattr(e, 'problem', e)}") from None
    if not isinstance(data, dict):
        raise ZooError(f"{path}: expected a mapping of fields at the top level")
    return data


def parse_spec(data: dict, source: str = "<spec>") -> ZooSpec:
    try:
        return ZooSpec.model_validate(data)
    except ValidationError as e:
        raise ZooError(f"{source}: {_format(e)}") from None
    except ZooError as e:
        raise ZooError(f"{source}: model: {e}") from None


def load_spec(path: str | Path) -> ZooSpec:
    path = Path(path)
    return parse_spec(_read_yaml(path), str(path))


def load_config(path: str | Path) -> Collection:
    """A zoo spec or a collection file (`zoos:` list of spec paths relative to it)."""
    path = Path(path)
    data = _read_yaml(path)
    if "zoos" not in data:
        spec = parse_spec(data, str(path))
        return Collection(spec.name, [spec], path)
    extra = sorted(set(data) - {"name", "zoos", "description"})
    if extra:
        raise ZooError(f"{path}: unknown field(s) {extra}; a collection has name, description, zoos")
    name, zoo_paths = data.get("name"), data["zoos"]
    if not isinstance(name, str) or not name:
        raise ZooError(f"{path}: name: a collection needs a name")
    if not isinstance(zoo_paths, list) or not zoo_paths or not all(isinstance(p, str) for p in zoo_paths):
        raise ZooError(f"{path}: zoos: expected a non-empty list of spec file paths")
    specs = [load_spec(path.parent / p) for p in zoo_paths]
    seen = set()
    for p, s in zip(zoo_paths, specs):
        if s.name in seen:
            raise ZooError(f"{path}: zoos: two specs are named {s.name!r} (second: {p})")
        seen.add(s.name)
    return Collection(name, specs, path)


def default_config_path() -> Path:
    """The built-in default collection (configs/default.yaml: the MLP zoo of zoo/phases and the
    small sampled-architecture zoo, minutes on a laptop), shipped inside the package;
    configs/phases.yaml lists every family."""
    source = Path(__file__).resolve().parent.parent / "configs" / "default.yaml"
    if source.exists():  # a source checkout or an editable install
        return source
    from importlib.resources import files

    return Path(str(files("zoo._configs") / "default.yaml"))  # a wheel install ships a copy
