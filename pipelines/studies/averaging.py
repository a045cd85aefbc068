"""Model averaging per cell: the seeds' average after weight matching, and the plain average.

The members of a cell are trained from different inits; their plain average sits on a loss
barrier unless the cell is well connected. Weight matching (hypernet.symmetry: Git Re-Basin's
linear assignment over hidden units) first permutes every member into the reference member's
(the lowest seed's) basis, so the average is taken between aligned units. BatchNorm statistics of
an average are not the average of the statistics: they are re-estimated on training inputs.
The literature (Schürholt et al. 2025) expects averaging to work in the connected, high-CKA phase.
"""
from __future__ import annotations

import torch
from torch import nn

from zoo.nets import reset_batchnorm
from hypernet.symmetry import SUPPORTED, canonicalize
from pipelines.studies.common import as_tensors, build, load_task, require_family, scores

SETTINGS = {"calibrate": 1024}  # training inputs that re-estimate BatchNorm statistics of an average


def average(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The elementwise mean of state dicts (floating-point entries; integer buffers such as
    BatchNorm's num_batches_tracked are taken from the first)."""
    out = {}
    for k, v in states[0].items():
        out[k] = torch.stack([s[k] for s in states]).mean(0) if v.is_floating_point() else v.clone()
    return out


def matched(states: list[dict[str, torch.Tensor]], module: nn.Module) -> list[dict[str, torch.Tensor]]:
    """Every state permuted into states[0]'s basis (states[0] itself unchanged)."""
    return [states[0]] + [canonicalize(s, states[0], module) for s in states[1:]]


def calibrated(state: dict[str, torch.Tensor], module: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """`state` with its BatchNorm statistics re-estimated on inputs x (unchanged without BatchNorm)."""
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules()):
        return state
    module.load_state_dict(state)
    reset_batchnorm(module, x)
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def compute(payload: dict, states: list[dict], settings: dict) -> dict:
    """The members' scores, the plain and the matched average's, and how they compare."""
    require_family(payload, SUPPORTED, "averaging")
    if len(states) < 2:
        return {"skipped": f"{len(states)} trained member(s): averaging needs two"}
    task = load_task(payload)
    module = build(payload, task)
    sd = as_tensors(states, module)
    x = task.x_train[: int(settings["calibrate"])]
    plain = calibrated(average(sd), module, x)
    aligned = calibrated(average(matched(sd, module)), module, x)
    vals, metric, higher = scores(payload, task, sd + [plain, aligned])
    members, p, m = vals[:-2], vals[-2], vals[-1]
    mean = sum(members) / len(members)
    sign = 1.0 if higher else -1.0  # deltas > 0 = the average is better
    return {"metric": metric, "higher_is_better": higher, "members": members, "member_mean": mean,
            "plain": p, "matched": m, "plain_delta": sign * (p - mean), "matched_delta": sign * (m - mean),
            "matched_gain": sign * (m - p),
            # per member: matched average minus that member, for the by-phase intervals
            "per_seed": {"matched_delta": [sign * (m - v) for v in members], "plain_delta": [sign * (p - v) for v in members]}}


FIGURES = {"matched_delta": "matched average − members' mean", "plain_delta": "plain average − members' mean"}
COLUMNS = ("member_mean", "plain", "matched", "plain_delta", "matched_delta")
