"""Train one bundle (one population or a few small ones) and turn it into dataset rows + tensors. Runs inside a Ray task."""
from __future__ import annotations

import json
import time

import torch

from zoo import nets, tasks
from zoo.machine import resolve_device
from zoo.spec import Member, ZooSpec, members_by_id, parse_spec
from zoo.train import MemberConfig, Population, flat_weights


def make_population(spec: ZooSpec, members: list[Member], dtype: torch.dtype = torch.float32,
                    device: str = "cpu") -> Population:
    """The population of members that share a training step (one of pipelines.plan.populations),
    however many cells, points or seeds they come from: each keeps its own seed, lr, weight decay
    and label noise."""
    first = members[0]
    task = tasks.load(spec.task, first.task_args)
    return Population(task, first.arch, spec.model.init, first.training, member_configs(members),
                      dtype=dtype, device=device)


def member_configs(members: list[Member]) -> list[MemberConfig]:
    """What the trainer needs per member: its id, seed, lr, weight decay and label noise."""
    return [MemberConfig(m.model_id, m.seed, m.training["lr"], m.training["weight_decay"], m.training["label_noise"])
            for m in members]


def train_bundle(spec_json: dict, populations: list[list[str]], bundle_id: str) -> dict:
    """Train a bundle's populations (lists of model ids, see pipelines.plan) one after the other.
    -> {"rows": [...], "tensors": [(prefix, state)], "seconds": float}; plain data for Ray."""
    t0 = time.perf_counter()
    spec = parse_spec(spec_json, f"spec of zoo {spec_json.get('name')}")
    by_id = members_by_id(spec_json)
    torch.set_num_threads(spec.compute.threads_per_worker)
    # compute.device was resolved by the driver (pipelines.build.place); on CUDA, Ray has given
    # this task its GPU share and made it the visible device
    device = resolve_device(spec.compute.device)
    rows, tensors = [], []
    for ids in populations:
        members = [by_id[i] for i in ids]
        pop = make_population(spec, members, device=device)
        results = pop.fit(spec.checkpoints)
        n_params = nets.n_params(pop.template)
        for m, r in zip(members, results):
            for epoch in spec.checkpoints:
                ck = r.checkpoints[epoch]
                prefix = f"{m.model_id}/{epoch}/"
                rows.append(model_row(spec, m, r, epoch, ck, n_params, bundle_id, prefix))
                tensors.append((prefix, ck["state"]))
    return {"rows": rows, "tensors": tensors, "seconds": time.perf_counter() - t0}


def model_row(spec: ZooSpec, m: Member, r, epoch: int, ck: dict, n_params: int, bundle_id: str, prefix: str) -> dict:
    tr, c = m.training, m.cell
    keep_flat = n_params <= spec.storage.flat_weights_max_params
    return {
        "model_id": m.model_id,
        "zoo": spec.name,
        "task": spec.task,
        "task_args": json.dumps(m.task_args, sort_keys=True),
        "family": m.arch["family"],
        "arch": json.dumps(m.arch, sort_keys=True),
        "arch_id": m.arch_id,
        "init": spec.model.init,
        "cell": m.group,
        "temperature_param": c.temperature_param,
        "temperature": float(c.temperature),
        "load_param": c.load_param,
        "load": float(c.load),
        "seed": m.seed,
        "epoch": epoch,
        "epochs": tr["epochs"],
        "optimizer": tr["optimizer"],
        "schedule": tr["schedule"],
        "lr": float(tr["lr"]),
        "momentum": float(tr["momentum"]),
        "weight_decay": float(tr["weight_decay"]),
        "batch_size": int(tr["batch_size"]),
        "width": m.arch.get("width"),
        "depth": m.arch.get("depth"),
        "data_fraction": float(tr["data_fraction"]),
        "label_noise": float(tr["label_noise"]),
        **ck["metrics"],
        **{f"curve_{k}": v for k, v in r.curves.items()},
        "status": r.status,
        "diverged_epoch": r.diverged_epoch,
        "n_params": n_params,
        "shard": None,
        "tensor_prefix": prefix,
        "bundle": bundle_id,
        "weights": flat_weights(ck["state"]) if keep_flat else None,
    }
