"""Task registry: `mnist1d`, `digits`, `pydoc` (text), `convection` (PDE), all offline, and
`hf:<repo_id>` image datasets.

    task = zoo.tasks.load("mnist1d")                     # Task with x_train (4000, 1, 40), ...
    task = zoo.tasks.load("convection", {"beta": 20})    # task arguments are validated
"""
from __future__ import annotations

import inspect
import json
from functools import lru_cache

from zoo.errors import ZooError
from zoo.registry import Registry
from zoo.tasks.base import Task
from zoo.tasks.convection import load_convection
from zoo.tasks.digits import load_digits_task
from zoo.tasks.hf import load_hf_task
from zoo.tasks.mnist1d import load_mnist1d
from zoo.tasks.text import load_pydoc

TASKS: Registry = Registry("task")
TASKS.register("mnist1d")(load_mnist1d)
TASKS.register("digits")(load_digits_task)
TASKS.register("pydoc")(load_pydoc)
TASKS.register("convection")(load_convection)

HF_PREFIX = "hf:"

# `zoo study transfer`: the second task a zoo's trained nets are fine-tuned on, per task. Same
# inputs and classes, so the whole net carries over: MNIST-1D drawn anew with twice the
# correlated noise.
TRANSFER_TARGETS: dict[str, tuple[str, dict]] = {"mnist1d": ("mnist1d", {"seed": 1, "corr_noise": 0.5})}


def names() -> list[str]:
    return TASKS.names() + [HF_PREFIX + "<repo_id>"]


def check_name(name: str) -> None:
    """Raise a ZooError listing the valid task names if `name` is not one."""
    if name.startswith(HF_PREFIX):
        if len(name) == len(HF_PREFIX):
            raise ZooError("task 'hf:' needs a repo id, e.g. hf:user/dataset")
        return
    if name not in TASKS:
        raise ZooError(f"unknown task {name!r}; valid: {', '.join(names())}")


def arg_defaults(name: str) -> dict:
    """The arguments a built-in task takes, with their defaults ({} for hf: tasks)."""
    if name.startswith(HF_PREFIX):
        return {}
    return {k: p.default for k, p in inspect.signature(TASKS.get(name)).parameters.items()}


def axis_params(name: str) -> list[str]:
    """Numeric task arguments that can be a phase-plane axis (e.g. convection's beta)."""
    return [k for k, v in arg_defaults(name).items() if isinstance(v, float)]


def load(name: str, args: dict | None = None) -> Task:
    """Load (and cache in-process) a task by name."""
    return _load_cached(name, json.dumps(args or {}, sort_keys=True))


@lru_cache(maxsize=8)
def _load_cached(name: str, args_json: str) -> Task:
    check_name(name)
    args = json.loads(args_json)
    if name.startswith(HF_PREFIX):
        return load_hf_task(name[len(HF_PREFIX):], args)
    valid = arg_defaults(name)
    unknown = sorted(set(args) - set(valid))
    if unknown:
        what = f"valid: {', '.join(valid)}" if valid else "it takes none"
        raise ZooError(f"task {name!r}: unknown task_args {unknown}; {what}")
    try:
        return TASKS.get(name)(**args)
    except ValueError as e:
        raise ZooError(f"task {name!r}: task_args: {e}") from None


__all__ = ["TRANSFER_TARGETS", "Task", "arg_defaults", "axis_params", "check_name", "load", "names"]
