"""Task registry: `mnist1d`, `digits` (both offline) and `hf:<repo_id>` image datasets.

    task = zoo.tasks.load("mnist1d")      # Task with x_train (4000, 1, 40), ...
"""
from __future__ import annotations

import json
from functools import lru_cache

from zoo.errors import ZooError
from zoo.registry import Registry
from zoo.tasks.base import Task
from zoo.tasks.digits import load_digits_task
from zoo.tasks.hf import load_hf_task
from zoo.tasks.mnist1d import load_mnist1d

TASKS: Registry = Registry("task")
TASKS.register("mnist1d")(load_mnist1d)
TASKS.register("digits")(load_digits_task)

HF_PREFIX = "hf:"


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


def load(name: str, args: dict | None = None) -> Task:
    """Load (and cache in-process) a task by name."""
    return _load_cached(name, json.dumps(args or {}, sort_keys=True))


@lru_cache(maxsize=8)
def _load_cached(name: str, args_json: str) -> Task:
    check_name(name)
    args = json.loads(args_json)
    if name.startswith(HF_PREFIX):
        return load_hf_task(name[len(HF_PREFIX):], args)
    if args:
        raise ZooError(f"task {name!r} takes no task_args (got {sorted(args)})")
    return TASKS.get(name)()


__all__ = ["Task", "load", "names", "check_name"]
