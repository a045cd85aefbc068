"""Plan the bundles of a zoo: members that can train as one population, cut to a size limit.

Members share a population when everything but seed, lr, weight decay and label noise is equal
(architecture, task arguments, batch size, data fraction, optimizer, schedule, epochs). Plan order is the spec's
cell order, so bundle indices and ids are the same on every run of the same spec.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from zoo.spec import Member, ZooSpec

PER_MEMBER = ("lr", "weight_decay", "label_noise")


@dataclass(frozen=True)
class Bundle:
    zoo: str
    index: int
    bundle_id: str
    members: tuple[Member, ...]


def population_key(m: Member) -> str:
    shared = {k: v for k, v in m.training.items() if k not in PER_MEMBER}
    return json.dumps({"arch": m.arch, "training": shared, "task_args": m.task_args}, sort_keys=True)


def plan(spec: ZooSpec) -> list[Bundle]:
    groups: dict[str, list[Member]] = {}
    for m in spec.members():
        groups.setdefault(population_key(m), []).append(m)
    bundles = []
    cap = spec.compute.max_members
    for members in groups.values():
        for i in range(0, len(members), cap):
            chunk = tuple(members[i : i + cap])
            bid = hashlib.sha256(",".join(sorted(m.model_id for m in chunk)).encode()).hexdigest()[:12]
            bundles.append(Bundle(spec.name, len(bundles), bid, chunk))
    return bundles


def plan_summary(spec: ZooSpec) -> dict:
    """What building `spec` means, without training or writing anything: models, distinct
    architectures, populations (members that share a training step), bundles (Ray tasks), the
    parameter range and an estimate of the dataset's size on disk (float32 tensors of every
    checkpoint in the shards, plus the flat `weights` column for models under the size limit;
    parquet metadata and figures not counted)."""
    from zoo import nets, tasks

    members = spec.members()
    bundles = plan(spec)
    archs = {json.dumps(m.arch, sort_keys=True): m for m in members}
    sizes = {}
    for key, m in archs.items():
        knobs = {k: v for k, v in m.arch.items() if k != "family"}
        sizes[key] = nets.n_params(nets.build(m.arch["family"], tasks.load(spec.task, m.task_args), **knobs))
    per_model = [sizes[json.dumps(m.arch, sort_keys=True)] for m in members]
    flat = sum(n for n in per_model if n <= spec.storage.flat_weights_max_params)
    n_ckpt = len(spec.checkpoints)
    return {
        "zoo": spec.name,
        "models": len(members),
        "architectures": len(archs),
        "populations": len({population_key(m) for m in members}),
        "bundles": len(bundles),
        "rows": len(members) * n_ckpt,
        "n_params": {"min": min(per_model), "max": max(per_model)},
        "bytes_estimate": 4 * n_ckpt * (sum(per_model) + flat),
    }
