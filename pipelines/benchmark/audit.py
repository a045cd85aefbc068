"""The memorization audit of a generative weight generator (part of `hypernet eval`): are its
samples new nets, or copies of the zoo members it learned from? See `memorization`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from hypernet.api import predict_params
from hypernet.conditions import ConditionSpec
from pipelines.zoodata import ZooCell
from pipelines.benchmark.protocol import Case, median, nearest_cell

def _flat(state: dict[str, torch.Tensor], names: list[str]) -> torch.Tensor:
    return torch.cat([state[n].reshape(-1).double() for n in names])


def _agreement(module, a: dict, b: dict, x: torch.Tensor) -> float:
    """Fraction of inputs on which two parameter sets predict the same class (argmax)."""
    from torch.func import functional_call

    was = module.training
    module.eval()
    with torch.no_grad():
        pa, pb = functional_call(module, a, (x,)), functional_call(module, b, (x,))
    module.train(was)
    return float((pa.argmax(-1) == pb.argmax(-1)).double().mean())


def memorization(gen, cases: list[Case], train_cells: list[ZooCell], zoo_root: Path, spec: ConditionSpec,
                 samples: int = 4) -> dict:
    """How close sampled weights are to the generator's training checkpoints.

    For each held-out cell: the generator draws `samples` nets at that cell's condition; each is
    canonicalized (hypernet.symmetry, against the seed-0 member of the nearest training cell of the
    same architecture), and its L2 distance to the nearest training checkpoint of that architecture
    (also canonicalized) is divided by the distance between two trained seeds of the same training
    cell (median over the architecture's training cells). Below 1: closer to a training checkpoint
    than independent training gets; near 0: a copy. The same ratio is reported for two baselines,
    a training checkpoint plus Gaussian noise (10% of each tensor's RMS) and the average of a
    training cell's canonicalized members, and the agreement of test predictions with the nearest
    checkpoint beside that of two trained seeds. A reference point: the same ratio for the zoo's
    own trained members of the held-out cell (real training runs the generator never saw). Members
    of different cells share their init seeds, so even these sit below 1 when a neighbouring cell's
    member of the same seed trained to a nearby point."""
    from hypernet.symmetry import canonicalize

    per_case = []
    for case in cases:
        if case.group != "cells":
            continue
        same = [c for c in train_cells if c.zoo == case.zoo and c.arch == case.arch and c.rows]
        if not same:
            continue
        module = case.cell.build(case.arch)
        names = [n for n, _ in module.named_parameters()]
        near = nearest_cell(case, train_cells, spec)
        ref = near.states(zoo_root)[0]
        canon = {c.key: [canonicalize(s, ref, module) for s in c.states(zoo_root)] for c in same}
        bank = [(k, st) for k, sts in canon.items() for st in sts]
        T = torch.stack([_flat(st, names) for _, st in bank])  # (members, params)
        seed_d = [float((_flat(a, names) - _flat(b, names)).norm()) for sts in canon.values()
                  for i, a in enumerate(sts) for b in sts[i + 1:]]
        if not seed_d:
            continue
        seed_dist = float(np.median(seed_d))
        x_test = case.cell.load_task().x_test[:1000]
        seed_agree = float(np.median([_agreement(module, a, b, x_test) for sts in canon.values()
                                      for i, a in enumerate(sts) for b in sts[i + 1:]]))

        def nearest(st):
            d = (T - _flat(st, names)).norm(dim=1)
            i = int(d.argmin())
            return float(d[i]) / seed_dist, bank[i][1]

        cond = spec.vector(case.zoo, case.temperature, case.load)
        ratios, agree = [], []
        for k in range(samples):
            st = canonicalize(predict_params(gen, module, cond, zoo=case.zoo, n=1, seed=1000 + k), ref, module)
            r, nb = nearest(st)
            ratios.append(r)
            agree.append(_agreement(module, st, nb, x_test))
        g = torch.Generator().manual_seed(0)
        member = bank[0][1]
        noisy = {n: v + 0.1 * v.pow(2).mean().sqrt() * torch.randn(v.shape, generator=g) for n, v in member.items()}
        avg = {n: torch.stack([st[n] for st in canon[near.key]]).mean(0) for n in names}
        real = [nearest(canonicalize(st, ref, module))[0] for st in case.cell.states(zoo_root)]
        per_case.append({"case": case.key, "nn_distance_ratio": ratios, "agreement_with_nearest": agree,
                         "seed_distance": seed_dist, "seed_agreement": seed_agree,
                         "baseline_trained_plus_noise": nearest({n: noisy[n] for n in names})[0],
                         "baseline_cell_average": nearest(avg)[0],
                         "reference_held_out_members": real})
    if not per_case:
        return {"note": "no held-out cell with a trained architecture to audit"}
    ratio = median([r for c in per_case for r in c["nn_distance_ratio"]])
    return {
        "nn_distance_ratio_median": ratio,
        # the goal: generated nets no closer to a training checkpoint than two trained seeds
        "goal_not_closer_than_seeds": ratio is not None and ratio >= 1.0,
        "agreement_with_nearest_median": median([a for c in per_case for a in c["agreement_with_nearest"]]),
        "seed_agreement_median": median([c["seed_agreement"] for c in per_case]),
        "baseline_trained_plus_noise_median": median([c["baseline_trained_plus_noise"] for c in per_case]),
        "baseline_cell_average_median": median([c["baseline_cell_average"] for c in per_case]),
        "reference_held_out_members_median": median([r for c in per_case for r in c["reference_held_out_members"]]),
        "samples_per_case": samples,
        "per_case": per_case,
    }
