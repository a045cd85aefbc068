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
