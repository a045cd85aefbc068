"""What every per-cell study shares: a cell as plain data (what a Ray task receives), the zoo's
own trainer around given weights, and the score a study reports (test accuracy, or the relative
L2 error of a PDE zoo).

Nothing here reads the dataset folder: the stage (run.py) hands a cell its checkpoints.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn

from zoo import nets, tasks
from zoo.errors import ZooError
from zoo.train import MemberConfig, Population


def cell_payload(cell) -> dict:
    """A pipelines.zoodata.ZooCell as plain data: what it takes to rebuild, retrain and evaluate
    its members anywhere (a Ray worker)."""
    return {"zoo": cell.zoo, "cell": cell.cell, "task": cell.task, "task_args": dict(cell.task_args),
            "arch": dict(cell.arch), "init": cell.init, "training": dict(cell.training),
            "model_ids": [r["model_id"] for r in cell.rows], "seeds": [int(r["seed"]) for r in cell.rows]}


def load_task(payload: dict, task: tuple[str, dict] | None = None) -> tasks.Task:
    name, args = task or (payload["task"], payload["task_args"])
    return tasks.load(name, args)


def build(payload: dict, task: tasks.Task) -> nn.Module:
    knobs = {k: v for k, v in payload["arch"].items() if k != "family"}
    return nets.build(payload["arch"]["family"], task, **knobs)


def as_tensors(states: list[dict], template: nn.Module) -> list[dict[str, torch.Tensor]]:
    """Checkpoints (numpy arrays, as read from the shards) as state dicts in the module's own
    shapes and dtypes (a shard stores 0-d tensors as shape (1,))."""
    ref = template.state_dict()
    return [{k: torch.as_tensor(np.array(s[k])).reshape(v.shape).to(v.dtype) for k, v in ref.items()} for s in states]


def population(payload: dict, task: tasks.Task, states: list[dict], seeds: list[int], *,
               epochs: int | None = None, data_fraction: float | None = None) -> Population:
    """The zoo's own trainer (the cell's optimizer, lr, batch size, schedule) holding `states`,
    member i with data order of seeds[i]; `epochs` / `data_fraction` override the cell's (a
    fine-tuning budget). Labels are the task's own (a cell's label noise is a training condition
    of the zoo, not of the study)."""
    common = dict(payload["training"])
    if epochs is not None:
        common["epochs"] = int(epochs)
    if data_fraction is not None:
        common["data_fraction"] = float(data_fraction)
    members = [MemberConfig(f"{payload['cell']}/{i}", int(s), float(common["lr"]), float(common.get("weight_decay", 0.0)))
               for i, s in enumerate(seeds)]
    return Population(task, payload["arch"], payload["init"], common, members, states=states)


def score_key(metrics: dict) -> tuple[str, bool]:
    """("acc", higher is better) for a classifier, ("rel_l2", lower is better) for a PDE."""
    return ("acc", True) if "acc" in metrics else ("rel_l2", False)


def scores(payload: dict, task: tasks.Task, states: list[dict]) -> tuple[list[float], str, bool]:
    """Test score of every state, evaluated together by the zoo's trainer: (values, metric, higher)."""
    pop = population(payload, task, states, payload["seeds"][:1] * len(states))
    m = pop.evaluate_split("test")
    key, higher = score_key(m)
    return [float(v) for v in m[key]], f"test_{key}", higher


def retained(value: float, reference: float, higher: bool) -> float:
    """What fraction of the reference's score a modified net keeps: value / reference for an
    accuracy, reference / value for an error (both 1 = as good, below 1 = worse)."""
    if higher:
        return value / reference if reference > 0 else float("nan")
    return reference / value if value > 0 else float("nan")


def train(pop: Population, after_step: Callable[[], None] | None = None) -> None:
    """All of `pop`'s epochs; `after_step` runs after every optimizer step (a pruning mask)."""
    for epoch in range(1, int(pop.common["epochs"]) + 1):
        pop.train_epoch(epoch, on_step=None if after_step is None else (lambda _step: after_step()))


def require_family(payload: dict, supported: tuple[str, ...], study: str) -> None:
    family = payload["arch"]["family"]
    if family not in supported:
        raise ZooError(f"zoo {payload['zoo']}: `zoo study {study}` supports the families {', '.join(supported)}; "
                       f"this zoo is {family!r}")
