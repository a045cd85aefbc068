"""The init benchmark's protocol (`hypernet eval`): does a generator's initialization train faster than random?

The protocol every weight generator shares (the GHNs and the diffusion generator):

* Cases. The held-out cells of pipelines.zoodata.make_split (about 20% of every plane, never seen by
  the generator) and the held-out architectures (a width between two trained widths, one wider than
  any, one layer deeper), each trained with the hyperparameters of a zoo cell.
* Generators, per case and seed: (a) `random`: the zoo's own init scheme (for a held-out cell and
  a zoo seed this is exactly the zoo member's init); (b) the generator's prediction; (c) `nearest`:
  the final weights of the nearest training cell's member (same architecture only; by distance of
  the normalized (temperature, load) condition). All are trained by the same zoo.train.Population
  code the zoo was built with, with the case's own hyperparameters, the zoo's epoch budget and the
  same data order per seed.
* Measures. Test accuracy (test rel_l2 for a PDE zoo, where lower is better) at step 0, 10, 100 and
  at the end, evaluated on a grid of steps (every epoch, and a ~1.15x geometric grid, so early
  steps are resolved). steps-to-target = the first evaluated step at which the score reaches the
  final score of (a) with the same seed; speedup = steps of (a) / steps of (b), both counted as at
  least 1 (a target reached at step 0 means "within the first step"). When (b) never reaches it,
  the speedup is reported as steps(a) / total steps, an upper bound, flagged `reached: false`.
  A case's speedup is the median over the seeds that have a target (random init did not diverge).
* Bounds. Per seed a speedup is exact, a lower bound (b at the target at step 0) or an upper bound
  (b never at it). The median is monotone in every seed's value, so a case's median is a lower
  bound when some seeds are lower bounds and none an upper bound (mark "≥"), an upper bound in the
  mirror case ("<"), and neither when both occur ("~", `speedup_bound: "mixed"`); see speedup_bound.

The benchmark is three modules and a runner: this protocol (cases, training, measures, summary),
pipelines.benchmark.audit (memorization of a generative model), pipelines.benchmark.report
(tables, the comparison across runs, plots) and pipelines.benchmark.run (`benchmark`, which runs
them in that order). Outputs (`--out DIR`): results.json (entries per case and generator, `summary`, and `machine`, the
CPU, torch build and threads the numbers come from: float32 training is reproducible on one machine,
not across machines), results.md (the table) and PNG curves of the score against the step.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hypernet.api import condition_for, predict_params, reset_batchnorm
from hypernet.conditions import ConditionSpec
from hypernet.generators import kind_of
from pipelines.zoodata import ZooCell
from zoo import nets
from zoo.errors import ZooError
from zoo.train import MemberConfig, Population


GENERATORS = ("random", "hypernet", "nearest")


@dataclass
class Case:
    key: str
    group: str  # "cells" | "archs"
    zoo: str
    name: str  # the cell id, or the held-out architecture's name
    arch: dict
    temperature: float
    load: float
    cell: ZooCell  # the cell whose hyperparameters (and, for a held-out cell, members) it uses

    def summary(self) -> dict:
        return {"case": self.key, "group": self.group, "zoo": self.zoo, "name": self.name, "arch": self.arch,
                "temperature_param": self.cell.temperature_param, "temperature": self.temperature,
                "load_param": self.cell.load_param, "load": self.load, "hyperparameters_of": self.cell.cell}


def eval_steps(total: int, per_epoch: int, ratio: float = 1.15) -> list[int]:
    """Steps at which the score is measured: 0, 10, 100, every epoch end, and a geometric grid."""
    s = {0, total, *range(per_epoch, total + 1, per_epoch)}
    s |= {k for k in (10, 100) if k <= total}
    x = 1.0
    while x <= total:
        s.add(int(round(x)))
        x *= ratio
    return sorted(s)


def cases_of(cells: list[ZooCell], split) -> list[Case]:
    by_key = {c.key: c for c in cells}
    out = [Case(k, "cells", by_key[k].zoo, by_key[k].cell, by_key[k].arch, by_key[k].temperature,
                by_key[k].load, by_key[k]) for k in split.held_out_cells]
    for a in split.arch_cases:
        ref = by_key[f"{a.zoo}/{a.reference_cell}"]
        out.append(Case(a.key, "archs", a.zoo, a.name, a.arch, a.temperature, a.load, ref))
    return out


def nearest_cell(case: Case, train_cells: list[ZooCell], spec: ConditionSpec) -> ZooCell | None:
    """The training cell of the same zoo and architecture closest in normalized condition."""
    same = [c for c in train_cells if c.zoo == case.zoo and c.arch == case.arch and c.rows]
    if not same:
        return None
    v = spec.vector(case.zoo, case.temperature, case.load)
    return min(same, key=lambda c: (float((spec.vector(c.zoo, c.temperature, c.load) - v).norm()), c.cell))


def score_name(metrics: dict) -> tuple[str, bool]:
    """(metric, higher_is_better): test accuracy, or test rel_l2 for a PDE objective."""
    return ("acc", True) if "acc" in metrics else ("rel_l2", False)


def run_case(case: Case, ghn, spec: ConditionSpec, train_cells: list[ZooCell], zoo_root: Path,
             seeds: list[int], generator_name: str = "hypernet", samples: int = 1) -> dict:
    """Train every generator's init on one case; curves and the measures above, per seed."""
    cell = case.cell
    task = cell.load_task()
    common = dict(cell.training)
    template = cell.build(case.arch)
    states, members, labels = [], [], []
    # (a) random: the zoo's own init scheme and seeds
    for s in seeds:
        states.append(nets.init_(cell.build(case.arch), s, cell.init).state_dict())
        labels.append(("random", s))
    # (b) the generator's prediction (one per case: the condition does not depend on the seed)
    cond, resolved = condition_for(ghn, template, zoo=case.zoo, temperature=case.temperature, load=case.load)
    unsupported = None
    try:
        params = predict_params(ghn, template, cond, zoo=case.zoo, n=samples, seed=0)
    except ZooError as e:  # e.g. a diffusion generator asked for a depth it has no statistics for
        unsupported = str(e)
    if unsupported is None:
        pred = cell.build(case.arch)
        pred.load_state_dict({**pred.state_dict(), **{k: v.detach() for k, v in params.items()}})
        if kind_of(ghn).samples:  # sampled nets get BatchNorm statistics of the training data
            reset_batchnorm(pred, task.x_train[:512])
        for s in seeds:
            states.append(pred.state_dict())
            labels.append((generator_name, s))
    # (c) the nearest training cell's trained members (same architecture only)
    near = nearest_cell(case, train_cells, spec)
    if near is not None:
        near_states = near.states(zoo_root)
        for i, s in enumerate(seeds):
            states.append(near_states[i % len(near_states)])
            labels.append(("nearest", s))
    for g, s in labels:
        members.append(MemberConfig(f"{g}/{s}", s, float(common["lr"]), float(common["weight_decay"]),
                                    float(common["label_noise"])))
    pop = Population(task, case.arch, cell.init, common, members, states=states)
    epochs = int(common["epochs"])
    per_epoch = pop.n_steps_per_epoch
    total = per_epoch * epochs
    when = set(eval_steps(total, per_epoch))
    first = pop.evaluate_split("test")
    metric, higher = score_name(first)
    curves: list[list[tuple[int, float]]] = [[(0, float(first[metric][i]))] for i in range(len(members))]

    def on_step(step: int) -> None:
        if step in when:
            m = pop.evaluate_split("test")[metric]
            for i in range(len(members)):
                curves[i].append((step, float(m[i])))

    for epoch in range(1, epochs + 1):
        pop.train_epoch(epoch, on_step=on_step)
    out = {**case.summary(), "metric": f"test_{metric}", "higher_is_better": higher, "steps_total": total,
           "steps_per_epoch": per_epoch, "epochs": epochs, "condition": resolved,
           "nearest_cell": near.cell if near is not None else None, "generators": {},
           "unsupported": {generator_name: unsupported} if unsupported else {}}
    finals_a = {s: curves[labels.index(("random", s))][-1][1] for s in seeds}
    for g in dict.fromkeys(lab[0] for lab in labels):
        per_seed = []
        for s in seeds:
            c = curves[labels.index((g, s))]
            per_seed.append(measures(c, finals_a[s], higher, total, pop.diverged_epoch[labels.index((g, s))]))
        out["generators"][g] = {"per_seed": per_seed, "curve_steps": [p for p, _ in curves[labels.index((g, seeds[0]))]],
                                "curves": [[v for _, v in curves[labels.index((g, s))]] for s in seeds]}
    aggregate(out["generators"], total)
    return out


def aggregate(generators: dict[str, dict], total: int) -> None:
    """Fill each generator's record from its `per_seed` measures (in place): mean scores, steps to
    target and speedups per seed, the case's speedup (median over the seeds with a target), whether
    every seed reached the target, the speedup's bound kind, and the final-score difference to random."""
    base = generators["random"]["per_seed"]
    for g, rec in generators.items():
        ps = rec["per_seed"]
        rec["final"] = float(np.mean([p["final"] for p in ps]))
        rec["at_step"] = {k: float(np.mean([p["at_step"][k] for p in ps])) for k in ps[0]["at_step"]}
        rec["steps_to_target"] = [p["steps_to_target"] for p in ps]
        sp = [speedup(b["steps_to_target"], p["steps_to_target"], total) for p, b in zip(ps, base)]
        counted = [x for x in sp if math.isfinite(x)]
        rec["speedup"] = float(np.median(counted)) if counted else float("nan")
        rec["speedup_per_seed"] = sp
        rec["reached"] = all(p["steps_to_target"] is not None for p in ps)
        # random init against itself is 1 by definition, not a bound
        rec["speedup_bound"] = ("exact" if counted else None) if g == "random" else speedup_bound(
            [b["steps_to_target"] for b in base], rec["steps_to_target"])
        rec["final_delta"] = float(np.mean([p["final"] - b["final"] for p, b in zip(ps, base)]))


def speedup(steps_a: int | None, steps_b: int | None, total: int) -> float:
    """steps(a) / steps(b), both at least 1; steps(a) / total when (b) never reaches the target;
    NaN when (a) has no final score to aim at (it diverged)."""
    if steps_a is None:
        return float("nan")
    if steps_b is None:
        return max(1, steps_a) / total
    return max(1, steps_a) / max(1, steps_b)


BOUNDS = ("exact", "lower", "upper", "mixed")


def speedup_bound(steps_random: list[int | None], steps_gen: list[int | None]) -> str | None:
    """What a case's median speedup is: "exact", "lower" (bound), "upper" (bound) or "mixed" (neither).

    Per seed with a target (random init's steps not None), the speedup is a lower bound when the
    generator is at the target at step 0 (its true steps are at most the one counted), an upper
    bound when it never gets there (its true steps exceed the total), exact otherwise. The median
    over seeds is monotone in each seed's value, so it is a lower bound when some seed is a lower
    bound and none an upper one, the mirror for upper, and no bound at all when both occur.
    None when no seed has a target (the speedup is undefined)."""
    kinds = {"upper" if b is None else "lower" if b == 0 else "exact"
             for a, b in zip(steps_random, steps_gen) if a is not None}
    if not kinds:
        return None
    if {"lower", "upper"} <= kinds:
        return "mixed"
    return "lower" if "lower" in kinds else "upper" if "upper" in kinds else "exact"


def measures(curve: list[tuple[int, float]], target: float, higher: bool, total: int, diverged) -> dict:
    steps = [s for s, _ in curve]
    vals = [v for _, v in curve]

    def at(step: int) -> float:
        return vals[steps.index(step)] if step in steps else float("nan")

    reached = next((s for s, v in curve if (v >= target if higher else v <= target)), None)
    return {"at_step": {"0": at(0), "10": at(10), "100": at(100), "end": vals[-1]}, "final": vals[-1],
            "steps_to_target": reached, "target": target, "diverged_epoch": diverged}


def median(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    return float(np.median(xs)) if xs else None


def summarize(results: list[dict], generator: str) -> dict:
    def med(group, key, g=generator):
        return median([r["generators"][g][key] for r in results if r["group"] == group and g in r["generators"]])

    noise = median([float(np.std([p["final"] for p in r["generators"]["random"]["per_seed"]]))
                     for r in results])
    s = {
        "generator": generator,
        "median_speedup_cells": med("cells", "speedup"),
        "median_speedup_archs": med("archs", "speedup"),
        "final_acc_delta_median": median([r["generators"][generator]["final_delta"] for r in results
                                           if generator in r["generators"]]),
        "final_acc_delta_median_cells": med("cells", "final_delta"),
        "final_acc_delta_median_archs": med("archs", "final_delta"),
        "seed_noise_final_std_median": noise,
        "nearest_median_speedup_cells": med("cells", "speedup", "nearest"),
        "nearest_final_acc_delta_median_cells": med("cells", "final_delta", "nearest"),
        "step0_median": {g: median([r["generators"][g]["at_step"]["0"] for r in results if g in r["generators"]])
                         for g in ("random", generator, "nearest")},
        # cases where the generator's init already scores at least random init's final score
        # before any step, for every seed (their speedup is steps(a) / 1)
        "at_target_from_step0": {grp: sum(r["group"] == grp and generator in r["generators"] and all(
            x == 0 for x in r["generators"][generator]["steps_to_target"]) for r in results) for grp in ("cells", "archs")},
        # per group, how many cases' speedups are exact, lower bounds, upper bounds or neither
        # (mixed); cases without a defined speedup are in none of them
        "speedup_bounds": {grp: bound_counts([r for r in results if r["group"] == grp], generator)
                           for grp in ("cells", "archs")},
        "nearest_speedup_bounds_cells": bound_counts([r for r in results if r["group"] == "cells"], "nearest"),
        # cases the generator cannot produce (excluded from the medians above), with the reason
        "unsupported": {r["case"]: r["unsupported"][generator] for r in results if r.get("unsupported")},
        "n_cases": {"cells": sum(r["group"] == "cells" for r in results),
                    "archs": sum(r["group"] == "archs" for r in results)},
    }
    s["goals"] = {
        "speedup_cells_ge_5": s["median_speedup_cells"] is not None and s["median_speedup_cells"] >= 5,
        "speedup_archs_ge_2": s["median_speedup_archs"] is not None and s["median_speedup_archs"] >= 2,
        "final_not_worse_beyond_noise": s["final_acc_delta_median"] is not None
        and s["final_acc_delta_median"] >= -2 * (noise or 0.0),
    }
    return s


def bound_counts(results: list[dict], generator: str) -> dict[str, int]:
    kinds = [speedup_bound(r["generators"]["random"]["steps_to_target"], r["generators"][generator]["steps_to_target"])
             for r in results if generator in r["generators"]]
    return {k: kinds.count(k) for k in BOUNDS}
