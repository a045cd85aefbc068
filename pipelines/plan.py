"""Plan the bundles of a zoo: members that can train as one population, cut to a size limit.

Members share a population when everything but seed, lr, weight decay and label noise is equal
(architecture, task arguments, batch size, data fraction, optimizer, schedule, epochs), whatever
cell or point they belong to. A bundle (one Ray task) is one population or, with
compute.bundle_members, a few small ones. Plan order is the spec's member order, so bundle indices
and ids are the same on every run of the same spec.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from zoo.spec import Member, ZooSpec

PER_MEMBER = ("lr", "weight_decay", "label_noise")


@dataclass(frozen=True)
class Bundle:
    """One Ray task: one population, or several small ones trained one after the other."""

    zoo: str
    index: int
    bundle_id: str
    populations: tuple[tuple[Member, ...], ...]

    @property
    def members(self) -> tuple[Member, ...]:
        return tuple(m for pop in self.populations for m in pop)

    def member_ids(self) -> list[list[str]]:
        return [[m.model_id for m in pop] for pop in self.populations]


def population_key(m: Member) -> str:
    shared = {k: v for k, v in m.training.items() if k not in PER_MEMBER}
    return json.dumps({"arch": m.arch, "training": shared, "task_args": m.task_args}, sort_keys=True)


def populations(spec: ZooSpec) -> list[tuple[Member, ...]]:
    """Every member that can share a training step, across cells, points, architectures and seeds
    (first appearance in plan order), split into near-equal parts of at most compute.max_members:
    70 members with a cap of 64 train as 35 + 35, not 64 + 6, so the parts cost about the same."""
    groups: dict[str, list[Member]] = {}
    for m in spec.members():
        groups.setdefault(population_key(m), []).append(m)
    cap = spec.compute.max_members
    out = []
    for members in groups.values():
        parts = -(-len(members) // cap)
        size, extra = divmod(len(members), parts)
        i = 0
        for p in range(parts):
            n = size + (p < extra)
            out.append(tuple(members[i : i + n]))
            i += n
    return out


def plan(spec: ZooSpec) -> list[Bundle]:
    """Populations packed into bundles: consecutive populations smaller than
    compute.bundle_members share a bundle while its total stays within it (None: one population
    per bundle). Depends on the spec alone, so a resumed build plans the same bundles.
    A PBT zoo: one bundle per experiment (pipelines.pbt), each member its own population (trial)."""
    if spec.phase == "pbt":
        n = spec.pbt.population
        members = spec.members()
        return [_bundle(spec, k, [(m,) for m in members[i : i + n]]) for k, i in enumerate(range(0, len(members), n))]
    target = spec.compute.bundle_members
    packs: list[list[tuple[Member, ...]]] = []
    for pop in populations(spec):
        last = packs[-1] if packs else None
        if target and last is not None and len(pop) < target and sum(len(p) for p in last) + len(pop) <= target:
            last.append(pop)
        else:
            packs.append([pop])
    return [_bundle(spec, i, pops) for i, pops in enumerate(packs)]


def _bundle(spec: ZooSpec, index: int, pops: list[tuple[Member, ...]]) -> Bundle:
    ids = sorted(m.model_id for pop in pops for m in pop)
    return Bundle(spec.name, index, hashlib.sha256(",".join(ids).encode()).hexdigest()[:12], tuple(pops))


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
        "populations": sum(len(b.populations) for b in bundles),
        "bundles": len(bundles),
        "rows": len(members) * n_ckpt,
        "n_params": {"min": min(per_model), "max": max(per_model)},
        "bytes_estimate": 4 * n_ckpt * (sum(per_model) + flat),
    }
