"""Rebuild a zoo model from a dataset row, and evaluate a model on its task."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn as nn

from zoo import nets, tasks
from zoo.errors import ZooError
from zoo.train import evaluate_module


def _get(row: Mapping[str, Any], key: str):
    try:
        return row[key]
    except (KeyError, IndexError):
        raise ZooError(f"row has no column {key!r}; is it a row of a zoo dataset?") from None


def build_for_row(row: Mapping[str, Any]) -> nn.Module:
    arch = json.loads(_get(row, "arch"))
    task = tasks.load(_get(row, "task"), json.loads(row.get("task_args") or "{}"))
    family = arch.pop("family")
    return nets.build(family, task, **arch)


def _from_flat(net: nn.Module, flat) -> dict[str, torch.Tensor]:
    flat = torch.as_tensor(np.asarray(flat, dtype=np.float32))
    sd, out, i = net.state_dict(), {}, 0
    for k, v in sd.items():
        out[k] = flat[i : i + v.numel()].view_as(v).to(v.dtype)
        i += v.numel()
    if i != flat.numel():
        raise ZooError(f"flat weights have {flat.numel()} values; the architecture needs {i}")
    return out


def _from_shard(net: nn.Module, row: Mapping[str, Any], root: str | Path | None) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    if root is not None:
        path = Path(root) / _get(row, "shard")
    else:  # a row published by `zoo push`: the shard comes from its repo (cached after the first time)
        from zoo.hub import download_shard

        path = download_shard(row["repo_id"], _get(row, "shard"), row.get("revision"))
    if not path.exists():
        raise ZooError(f"{path}: shard not found (row {row.get('model_id')}, epoch {row.get('epoch')})")
    prefix = _get(row, "tensor_prefix")
    out = {}
    with safe_open(str(path), framework="pt") as f:
        keys = set(f.keys())
        for k in net.state_dict():
            if prefix + k not in keys:
                raise ZooError(f"{path}: tensor {prefix + k} missing")
            out[k] = f.get_tensor(prefix + k)
    return out


def load_model(row: Mapping[str, Any], root: str | Path | None = None) -> nn.Module:
    """The row's architecture with the row's checkpoint loaded, in eval mode.

    Uses the flat `weights` column when the row has it; else the safetensors shard, from `root`
    (the dataset folder) when given, or from the Hub repo the row was published to (its
    `repo_id` / `revision` columns, cached by huggingface_hub); only this checkpoint's tensors
    are read from the shard.
    """
    net = build_for_row(row)
    flat = row.get("weights") if hasattr(row, "get") else None
    if flat is not None and root is None:
        state = _from_flat(net, flat)
    elif root is not None or row.get("repo_id"):
        state = _from_shard(net, row, root)
    else:
        raise ZooError(
            f"row {row.get('model_id')} has no flat weights and no repo_id; pass root=<dataset folder> to read its shard"
        )
    net.load_state_dict(state)
    return net.eval()


def evaluate(model: nn.Module, task: str | tasks.Task | Mapping[str, Any], split: str = "test",
             task_args: dict | None = None) -> dict:
    """The task's metrics of `model` on a split (clean labels): {f"{split}_loss", f"{split}_acc"}
    for classification and language modelling, {f"{split}_loss", f"{split}_rel_l2"} for a PDE.

    `task`: a name (with `task_args`), a Task, or a dataset row (its `task` and `task_args`, e.g.
    convection's beta). Uses the same evaluation code as the trainer's checkpoint metrics, so on
    a zoo model it reproduces the row's values exactly.
    """
    if isinstance(task, Mapping):
        task_args = json.loads(task.get("task_args") or "{}") if task_args is None else task_args
        task = _get(task, "task")
    if isinstance(task, str):
        task = tasks.load(task, task_args)
    x, y = task.split(split)
    m = evaluate_module(model, x, y, task.objective)
    return {f"{split}_{k}": v for k, v in m.items()}
