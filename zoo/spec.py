"""ZooSpec: the validated configuration of one zoo, loaded from YAML.

A zoo is one task x one model family x a (temperature, load) plane x seeds. Every mistake in a
file is reported as one line naming the file and the field path, e.g.
`configs/zoos/x.yaml: training.optimizer: Input should be 'sgd', 'adam' or 'adamw'`.
A collection file (`name:` + `zoos:` list of spec paths) groups zoos into one dataset.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from zoo import nets, tasks
from zoo.errors import ZooError
from zoo.landscape.phases import PhaseThresholds
from zoo.machine import DEVICES

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


class Axes(_Strict):
    temperature: Axis
    load: Axis

    @model_validator(mode="after")
    def _check(self):
        for axis_name, axis, valid in (
            ("temperature", self.temperature, TEMPERATURE_PARAMS),
            ("load", self.load, LOAD_PARAMS),
        ):
            if axis_name == "load" and axis.param not in valid:
                continue  # maybe a task argument (e.g. convection's beta): checked with the task in ZooSpec
            if axis.param not in valid:
                raise ValueError(f"{axis_name}.param {axis.param!r} is not valid; expected one of {', '.join(valid)}")
            for i, v in enumerate(axis.values):
                where = f"{axis_name}.values[{i}]"
                if axis.param in INT_PARAMS and (v != int(v) or v < 1):
                    raise ValueError(f"{where}: {axis.param} must be a positive integer (got {v})")
                if axis.param == "lr" and v <= 0:
                    raise ValueError(f"{where}: lr must be > 0 (got {v})")
                if axis.param == "data_fraction" and not 0 < v <= 1:
                    raise ValueError(f"{where}: data_fraction must be in (0, 1] (got {v})")
                if axis.param == "label_noise" and not 0 <= v < 1:
                    raise ValueError(f"{where}: label_noise must be in [0, 1) (got {v})")
            if axis.param in INT_PARAMS:
                axis.values = [int(v) for v in axis.values]
        return self


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
    max_members: int = Field(64, ge=1)  # members per bundle (one Ray task)
    threads_per_worker: int = Field(1, ge=1)
    # where bundles train: auto = CUDA when torch sees a GPU (resolved where the build starts), else
    # the CPU; on CUDA each Ray task asks for `gpus_per_worker` GPUs (a fraction shares one GPU).
    # Placement, not part of what the models are: left out of training_json (a build can resume on
    # another device); the landscape metrics run on the CPU.
    device: Literal[DEVICES] = "auto"  # type: ignore[valid-type]  (zoo.machine.DEVICES: one list for spec, CLI, resolver)
    gpus_per_worker: float = Field(1.0, gt=0, le=1)


class ZooSpec(_Strict):
    name: str
    description: str = ""
    task: str
    task_args: dict = Field(default_factory=dict)
    model: ModelSpec
    training: Training
    axes: Axes
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
        for axis in (self.axes.temperature, self.axes.load):
            if axis.param == "width" and "width" not in nets.knobs(self.model.family):
                raise ValueError(f"axes: model family {self.model.family!r} has no width knob")
        task_axes = tasks.axis_params(self.task)
        if self.axes.load.param not in LOAD_PARAMS and self.axes.load.param not in task_axes:
            extra = f", or an argument of task {self.task!r}: {', '.join(task_axes)}" if task_axes else ""
            raise ValueError(f"axes.load.param {self.axes.load.param!r} is not valid; expected one of "
                             f"{', '.join(LOAD_PARAMS)}{extra}")
        valid_args = tasks.arg_defaults(self.task)
        if not self.task.startswith(tasks.HF_PREFIX):
            unknown = sorted(set(self.task_args) - set(valid_args))
            if unknown:
                raise ValueError(f"task_args: unknown {unknown} for task {self.task!r}; "
                                 f"valid: {', '.join(valid_args) or 'none'}")
        return self

    # ---- the plane -------------------------------------------------------------------------
    def cells(self) -> list["Cell"]:
        t, l = self.axes.temperature, self.axes.load
        return [
            Cell(ti, li, t.param, tv, l.param, lv)
            for ti, tv in enumerate(t.values)
            for li, lv in enumerate(l.values)
        ]

    def members(self) -> list["Member"]:
        """`--phase grid`: every cell x every seed, in plan order (cell-major, then seed)."""
        return [self.member(c, s) for c in self.cells() for s in self.seeds]

    def member(self, cell: "Cell", seed: int) -> "Member":
        train = self.training.model_dump(mode="json")
        arch = {"family": self.model.family, **nets.knobs(self.model.family), **self.model.knobs}
        task_args = dict(self.task_args)
        for param, value in ((cell.temperature_param, cell.temperature), (cell.load_param, cell.load)):
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
        digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
        return Member(model_id=digest, cell=cell, seed=seed, arch=arch, training=train, task_args=task_args)

    def training_json(self) -> dict:
        """The part of the spec that determines the trained models (not metrics, not prose, not
        the device placement)."""
        d = self.to_json()
        for k in ("metrics", "description"):
            d.pop(k, None)
        for k in ("device", "gpus_per_worker"):
            d["compute"].pop(k, None)
        return d

    def to_json(self) -> dict:
        d = self.model_dump(mode="json")
        d["model"] = {"family": self.model.family, "init": self.model.init, **self.model.knobs}
        return d


@dataclass(frozen=True)
class Cell:
    ti: int
    li: int
    temperature_param: str
    temperature: float
    load_param: str
    load: float

    @property
    def id(self) -> str:
        return f"T{self.ti}L{self.li}"


@dataclass(frozen=True)
class Member:
    """One model of the zoo: one architecture + one cell + one seed."""

    model_id: str
    cell: Cell
    seed: int
    arch: dict  # family + knobs, enough to rebuild the net
    training: dict  # Training fields with the cell's axis values applied
    task_args: dict  # the zoo's task_args with the cell's task-argument axis value applied


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
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
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
    """The built-in default collection (configs/default.yaml: the MLP zoo of zoo/phases, minutes on
    a laptop), shipped inside the package; configs/phases.yaml lists every family."""
    source = Path(__file__).resolve().parent.parent / "configs" / "default.yaml"
    if source.exists():  # a source checkout or an editable install
        return source
    from importlib.resources import files

    return Path(str(files("zoo._configs") / "default.yaml"))  # a wheel install ships a copy
