"""Global magnitude pruning per cell, with and without a short re-training.

At sparsity s, the fraction s of all weight-matrix / kernel entries (every parameter with two or
more dimensions, pooled over layers: global, not per layer) with the smallest magnitude is set to
zero; biases and normalization parameters are kept. Re-training runs the zoo's own trainer (the
cell's optimizer, lr and batch size) for `retrain_epochs` with the mask applied after every step,
so pruned weights stay zero. Reported: the score retained (pruned / original accuracy, or
original / pruned error for a PDE zoo), per sparsity, per member.
"""
from __future__ import annotations

import numpy as np
import torch

from pipelines.studies.common import as_tensors, build, load_task, population, retained, scores, train

SETTINGS = {"sparsities": [0.5, 0.8, 0.9, 0.95], "retrain_epochs": 1}


def prunable(state: dict[str, torch.Tensor], param_names: list[str]) -> list[str]:
    """The entries magnitude pruning acts on: parameters with >= 2 dims (weights, kernels, embeddings)."""
    return [k for k in param_names if state[k].dim() >= 2]


def magnitude_masks(state: dict[str, torch.Tensor], names: list[str], sparsity: float) -> dict[str, torch.Tensor]:
    """Boolean keep-masks over `names` that zero the `sparsity` fraction of smallest-magnitude
    entries across all of them together (ties broken by position, so exactly that many)."""
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1) (got {sparsity})")
    flat = torch.cat([state[k].detach().abs().flatten() for k in names])
    n_prune = int(round(sparsity * flat.numel()))
    keep = torch.ones(flat.numel(), dtype=torch.bool)
    if n_prune:
        keep[torch.argsort(flat, stable=True)[:n_prune]] = False
    out, i = {}, 0
    for k in names:
        n = state[k].numel()
        out[k] = keep[i : i + n].reshape(state[k].shape)
        i += n
    return out


def apply_masks(state: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v * masks[k].to(v.dtype) if k in masks else v.clone() for k, v in state.items()}


def compute(payload: dict, states: list[dict], settings: dict) -> dict:
    task = load_task(payload)
    module = build(payload, task)
    sd = as_tensors(states, module)
    names = prunable(sd[0], [n for n, _ in module.named_parameters()])
    sparsities = [float(s) for s in settings["sparsities"]]
    seeds = payload["seeds"]
    pruned, masks = [], []
    for s in sparsities:
        for state in sd:
            m = magnitude_masks(state, names, s)
            masks.append(m)
            pruned.append(apply_masks(state, m))
    vals, metric, higher = scores(payload, task, sd + pruned)
    base, after = vals[: len(sd)], vals[len(sd):]
    # re-training: every (sparsity, member) trains as one population, its mask reapplied after each step
    pop = population(payload, task, pruned, seeds * len(sparsities), epochs=int(settings["retrain_epochs"]))
    stacked = {k: torch.stack([m[k] for m in masks]).to(pop.params[k].dtype) for k in names}  # (S*M, *shape)

    @torch.no_grad()
    def reapply() -> None:
        for k, m in stacked.items():
            pop.params[k].mul_(m)

    train(pop, reapply)
    key = metric.removeprefix("test_")
    retrained = [float(v) for v in pop.evaluate_split("test")[key]]
    out = {"metric": metric, "higher_is_better": higher, "members": base, "sparsities": sparsities,
           "pruned": {}, "retrained": {}, "per_seed": {}}
    n = len(sd)
    for j, s in enumerate(sparsities):
        tag = f"{round(s * 100)}"
        p, r = after[j * n : (j + 1) * n], retrained[j * n : (j + 1) * n]
        out["pruned"][tag], out["retrained"][tag] = p, r
        kept = [retained(v, b, higher) for v, b in zip(p, base)]
        kept_r = [retained(v, b, higher) for v, b in zip(r, base)]
        out["per_seed"][f"retained_{tag}"], out["per_seed"][f"retained_{tag}_retrained"] = kept, kept_r
        out[f"retained_{tag}"] = float(np.median(kept)) if kept else float("nan")
        out[f"retained_{tag}_retrained"] = float(np.median(kept_r)) if kept_r else float("nan")
    return out


FIGURES = {"retained_90": "score retained at 90% sparsity, no re-training",
           "retained_90_retrained": "score retained at 90% sparsity, after re-training"}
COLUMNS = ("retained_50", "retained_80", "retained_90", "retained_95", "retained_90_retrained", "retained_95_retrained")
