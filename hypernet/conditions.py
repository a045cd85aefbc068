"""The condition a hypernetwork is given: which zoo (task + family), where on its phase plane.

    spec = ConditionSpec.from_zoos(specs)              # from the zoo specs a hypernet learns from
    c = spec.vector("mlp_mnist1d", temperature=64, load=48)   # (n,) float tensor
    spec.n                                             # = number of zoos + 2

Layout of the vector: [one-hot zoo id ..., z(temperature), z(load)], where
z(v) = (log v - mean) / std over the zoo's axis values (the raw value instead of the log when an
axis has a value <= 0, e.g. label noise 0). The statistics come from the zoo specs (the axis
values are known before any training), are stored in the hypernet's config.json, and are reused
verbatim at prediction time, so a temperature or load between or beyond the zoo's values lands
where it should on the same scale.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from zoo.errors import ZooError


@dataclass(frozen=True)
class AxisNorm:
    param: str
    log: bool
    mean: float
    std: float

    @classmethod
    def fit(cls, param: str, values: list[float]) -> AxisNorm:
        use_log = all(v > 0 for v in values)
        xs = [math.log(v) if use_log else float(v) for v in values]
        mean = sum(xs) / len(xs)
        std = math.sqrt(sum((x - mean) ** 2 for x in xs) / len(xs))
        return cls(param, use_log, mean, std if std > 1e-8 else 1.0)

    def __call__(self, value: float, what: str) -> float:
        value = float(value)
        if self.log and value <= 0:
            raise ZooError(f"{what}={value}: {self.param} must be > 0 (the hypernet conditions on its log)")
        return ((math.log(value) if self.log else value) - self.mean) / self.std


class ConditionSpec:
    """Zoo vocabulary and axis normalization of a hypernetwork's condition vector."""

    def __init__(self, zoos: dict[str, dict]):
        if not zoos:
            raise ZooError("a condition spec needs at least one zoo")
        self.zoos = {k: dict(v) for k, v in sorted(zoos.items())}
        self.names = list(self.zoos)
        self._norm = {
            k: (AxisNorm(**v["temperature"]), AxisNorm(**v["load"])) for k, v in self.zoos.items()
        }

    @classmethod
    def from_zoos(cls, specs) -> ConditionSpec:
        """From ZooSpec objects (zoo.spec): one entry per zoo."""
        out = {}
        for s in specs:
            t_param, l_param = s.plane_params()
            if s.phase == "grid":
                t_values, l_values = s.axes.temperature.values, s.axes.load.values
            else:  # a sampled plane: the values its points took
                cells = s.cells()
                t_values = sorted({c.temperature for c in cells})
                l_values = sorted({c.load for c in cells})
            out[s.name] = {
                "task": s.task,
                "task_args": dict(s.task_args),
                "family": s.model.family,
                "temperature": AxisNorm.fit(t_param, [float(v) for v in t_values]).__dict__,
                "load": AxisNorm.fit(l_param, [float(v) for v in l_values]).__dict__,
                "temperature_values": [float(v) for v in t_values],
                "load_values": [float(v) for v in l_values],
            }
        return cls(out)

    @property
    def n(self) -> int:
        return len(self.names) + 2

    def to_dict(self) -> dict:
        return {"zoos": self.zoos}

    @classmethod
    def from_dict(cls, d: dict) -> ConditionSpec:
        try:
            return cls(d["zoos"])
        except (KeyError, TypeError) as e:
            raise ZooError(f"hypernet config: malformed conditions ({e}); expected {{'zoos': {{name: ...}}}}") from None

    def resolve(self, zoo: str | None = None, task: str | None = None, family: str | None = None) -> str:
        """The zoo name a condition refers to: `zoo` itself, or the one zoo with this task (and family)."""
        if zoo is not None:
            if zoo not in self.zoos:
                raise ZooError(f"zoo {zoo!r} is not one this hypernet knows; valid: {', '.join(self.names)}")
            return zoo
        if task is None:
            if len(self.names) == 1:
                return self.names[0]
            raise ZooError(f"pass task= (or zoo=): this hypernet knows several zoos: {self._listing()}")
        hits = [k for k, v in self.zoos.items() if v["task"] == task]
        if family is not None and len(hits) > 1:
            hits = [k for k in hits if self.zoos[k]["family"] == family] or hits
        if not hits:
            tasks = sorted({v["task"] for v in self.zoos.values()})
            raise ZooError(f"task {task!r} is not one this hypernet was trained on; valid: {', '.join(tasks)}")
        if len(hits) > 1:
            raise ZooError(f"task {task!r} matches several zoos ({', '.join(hits)}); pass zoo=")
        return hits[0]

    def _listing(self) -> str:
        return ", ".join(f"{k} (task {v['task']}, {v['family']})" for k, v in self.zoos.items())

    def default(self, zoo: str, axis: str) -> float:
        """The geometric middle of a zoo axis: the value used when a caller gives none."""
        values = self.zoos[zoo][f"{axis}_values"]
        norm = self._norm[zoo][0 if axis == "temperature" else 1]
        if norm.log:
            return float(math.exp(sum(math.log(v) for v in values) / len(values)))
        return float(sum(values) / len(values))

    def axis_param(self, zoo: str, axis: str) -> str:
        return self.zoos[zoo][axis]["param"]

    def vector(self, zoo: str, temperature: float, load: float) -> torch.Tensor:
        """The (n,) condition of a model of zoo `zoo` trained at (temperature, load)."""
        if zoo not in self.zoos:
            raise ZooError(f"zoo {zoo!r} is not one this hypernet knows; valid: {', '.join(self.names)}")
        nt, nl = self._norm[zoo]
        v = torch.zeros(self.n)
        v[self.names.index(zoo)] = 1.0
        v[-2] = nt(temperature, f"temperature ({nt.param})")
        v[-1] = nl(load, f"load ({nl.param})")
        return v
