"""The init benchmark's protocol (`hypernet eval`): does a generator's initialization train faster than random?

The protocol every weight generator shares (the GHNs and the diffusion generator):

* Cases. The held-out cells of pipelines.zoodata.make_split (about 20% of every plane, never seen by
  the generator) and per zoo the held-out architectures of pipelines.zoodata.ARCH_VARIANTS (unseen
  widths, depths, activation and depth x width), each trained with the hyperparameters of a zoo cell.
* Inits (GENERATORS), per case and seed: (a) `random`: the zoo's own init scheme (for a held-out
  cell and a zoo seed this is exactly the zoo member's init); (b) the generator's prediction; and
  the BASELINES of baseline_states: `nearest` (the final weights of the nearest training cell's
  member, same architecture only, by distance of the normalized (temperature, load) condition),
  `weight_selection` (from the nearest larger trained member), `lsuv`, `zero` and `orthogonal`
  (hypernet.baselines). All are trained together by the same zoo.train.Population code the zoo
  was built with, with the case's own hyperparameters, the zoo's epoch budget and the same data
  order per seed. An init with nothing for a case is recorded in the case's `unsupported`.
* Measures. Test accuracy (test rel_l2 for a PDE zoo, where lower is better) at step 0, 10, 100,
  after 1% and 10% of the step budget and at the end, evaluated on a grid of steps (every epoch, and a ~1.15x geometric grid, so early
  steps are resolved). steps-to-target = the first evaluated step at which the score reaches the
  final score of (a) with the same seed; speedup = steps of (a) / steps of (b), both counted as at
  least 1 (a target reached at step 0 means "within the first step"). When (b) never reaches it,
  the speedup is reported as steps(a) / total steps, an upper bound, flagged `reached: false`.
  A case's speedup is the median over the seeds that have a target (random init did not diverge).
* Bounds. Per seed a speedup is exact, a lower bound (b at the target at step 0) or an upper bound
  (b never at it). The median is monotone in every seed's value, so a case's median is a lower
  bound when some seeds are lower bounds and none an upper bound (mark "≥"), an upper bound in the
  mirror case ("<"), and neither when both occur ("~", `speedup_bound: "mixed"`); see speedup_bound.
* Summary. Medians over cases of the per-case medians over seeds, with two-stage bootstrap 95%
  intervals (pipelines.benchmark.stats), per generator (`by_generator`) and per zoo; the best
  baseline on held-out architectures and the ratio to it; the GOALS.

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
from hypernet import baselines
from hypernet.conditions import ConditionSpec
from hypernet.generators import kind_of
from pipelines.benchmark.stats import bootstrap_ci, median_of_medians
from pipelines.zoodata import ZooCell
from zoo import nets
from zoo.errors import ZooError
from zoo.train import MemberConfig, Population


BASELINES = ("nearest", "weight_selection", "lsuv", "zero", "orthogonal")
GENERATORS = ("random", "hypernet", *BASELINES)
DEFAULT_SEEDS = 5
LSUV_BATCH = 256  # training inputs LSUV scales its layers on
BUDGET_FRACTIONS = {"1%": 0.01, "10%": 0.10}  # score after these fractions of the step budget


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


def budget_step(total: int, fraction: float) -> int:
    """The step after `fraction` of the budget (at least step 1)."""
    return max(1, int(round(fraction * total)))


def eval_steps(total: int, per_epoch: int, ratio: float = 1.15) -> list[int]:
    """Steps at which the score is measured: 0, 10, 100, 1% and 10% of the budget, every epoch end,
    and a geometric grid."""
    s = {0, total, *range(per_epoch, total + 1, per_epoch)}
    s |= {k for k in (10, 100) if k <= total}
    s |= {budget_step(total, f) for f in BUDGET_FRACTIONS.values()}
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


def subset_cells(cases: list[Case], n: int | None) -> list[Case]:
    """At most `n` of the held-out cell cases (every architecture case kept), for zoos too large to
    benchmark whole: the cells are grouped by (zoo, architecture), each group gets a share of n
    proportional to its size (largest remainder; every group at least one while n allows) and takes
    that many cells evenly spaced through its plan order. Deterministic, so two runs with the same
    n benchmark the same cells. None, or n at least the number of cells: every case."""
    cells = [c for c in cases if c.group == "cells"]
    if n is None or n >= len(cells):
        return list(cases)
    if n < 1:
        raise ZooError(f"--cells {n}: must be at least 1 (the zoo has {len(cells)} held-out cells)")
    groups: dict[tuple, list[Case]] = {}
    for c in cells:
        groups.setdefault((c.zoo, repr(sorted(c.arch.items()))), []).append(c)
    order = sorted(groups, key=lambda g: (-len(groups[g]), g))
    take = {g: 0 for g in order}
    for g in order[:n]:  # at least one a group, the largest groups first
        take[g] = 1
    left = n - sum(take.values())
    if left > 0:
        quota = {g: len(groups[g]) * n / len(cells) - take[g] for g in order}
        while left > 0:  # largest remainder, never more than a group has
            g = max((g for g in order if take[g] < len(groups[g])), key=lambda g: (quota[g], -order.index(g)))
            take[g] += 1
            quota[g] -= 1
            left -= 1
    keep = set()
    for g in order:
        m, k = len(groups[g]), take[g]
        keep |= {groups[g][int((i + 0.5) * m / k)].key for i in range(k)}
    return [c for c in cases if c.group != "cells" or c.key in keep]


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


def larger_cell(case: Case, train_cells: list[ZooCell], spec: ConditionSpec) -> ZooCell | None:
    """The source of weight selection: the training cell of the same zoo whose architecture is
    larger than the case's (every tensor of the case's net exists in it, each dimension at least as
    large, one larger) and at least as deep (a net without hidden layers only from one without),
    nearest in normalized condition, then the fewest parameters. None when the zoo has no larger net."""
    small = {k: tuple(v.shape) for k, v in case.cell.build(case.arch).state_dict().items()}
    depth = case.arch.get("depth")
    shapes: dict[str, dict | None] = {}
    v = spec.vector(case.zoo, case.temperature, case.load)
    found = []
    for c in train_cells:
        if c.zoo != case.zoo or not c.rows or c.arch.get("family") != case.arch.get("family"):
            continue
        if depth is not None and (c.arch.get("depth", 0) < depth or (depth == 0) != (c.arch.get("depth", 0) == 0)):
            continue
        key = repr(sorted(c.arch.items()))
        if key not in shapes:
            big = {k: tuple(t.shape) for k, t in c.build().state_dict().items()}
            ok = set(small) <= set(big) and all(
                len(big[k]) == len(s) and all(b >= d for b, d in zip(big[k], s)) for k, s in small.items())
            shapes[key] = big if ok and any(big[k] != s for k, s in small.items()) else None
        big = shapes[key]
        if big is not None:
            n = sum(math.prod(s) for s in big.values())
            found.append((float((spec.vector(c.zoo, c.temperature, c.load) - v).norm()), n, c.cell, c))
    return min(found, key=lambda f: f[:3])[3] if found else None


def baseline_states(name: str, case: Case, seeds: list[int], train_cells: list[ZooCell], spec: ConditionSpec,
                    zoo_root: Path, task) -> tuple[list[dict], str | None]:
    """One init per seed from baseline `name` (see BASELINES) and the zoo cell it drew weights from
    (nearest / weight selection), or a ZooError saying why the baseline has nothing for this case.

    nearest: the final weights of the nearest training cell of the same architecture (its members
    in turn over the seeds); weight_selection: hypernet.baselines.weight_selection from the members
    of larger_cell; lsuv: orthonormal then unit output variance per layer on the first LSUV_BATCH
    training inputs, seeded; zero: ZerO (deterministic: one init, the seeds differ in data order);
    orthogonal: orthogonal weights with the ReLU gain, seeded."""
    cell = case.cell
    build = lambda: cell.build(case.arch)  # noqa: E731
    if name == "nearest":
        near = nearest_cell(case, train_cells, spec)
        if near is None:
            raise ZooError("no training cell has this architecture")
        st = near.states(zoo_root)
        return [st[i % len(st)] for i in range(len(seeds))], near.cell
    if name == "weight_selection":
        src = larger_cell(case, train_cells, spec)
        if src is None:
            raise ZooError("the zoo has no larger trained net to select from")
        st = src.states(zoo_root)
        return [baselines.weight_selection(build(), st[i % len(st)]).state_dict() for i in range(len(seeds))], src.cell
    if name == "lsuv":
        x = task.x_train[:LSUV_BATCH]
        return [baselines.lsuv(build(), x, seed=s).state_dict() for s in seeds], None
    if name == "zero":
        st = baselines.zero(build()).state_dict()
        return [st for _ in seeds], None
    if name == "orthogonal":
        return [baselines.orthogonal(build(), seed=s).state_dict() for s in seeds], None
    raise ZooError(f"unknown baseline {name!r}; valid: {', '.join(BASELINES)}")


def case_members(cell: ZooCell, named_seeds: list[tuple[str, int]]) -> list[MemberConfig]:
    """Population members with a cell's hyperparameters, one per (name, seed): the seed sets the data
    order (and, with no state given, the init) as in the zoo's own training."""
    t = cell.training
    return [MemberConfig(name, s, float(t["lr"]), float(t["weight_decay"]), float(t["label_noise"]))
            for name, s in named_seeds]


def run_case(case: Case, ghn, spec: ConditionSpec, train_cells: list[ZooCell], zoo_root: Path,
             seeds: list[int], generator_name: str = "hypernet", samples: int = 1,
             baseline_names: tuple[str, ...] = BASELINES, extra_inits: dict[str, dict] | None = None) -> dict:
    """Train every generator's init on one case; curves and the measures above, per seed. `ghn`
    None benchmarks the baselines alone. extra_inits: more named inits (state_dicts, one for every
    seed, as the generator's prediction), trained and measured beside them."""
    cell = case.cell
    task = cell.load_task()
    common = dict(cell.training)
    template = cell.build(case.arch)
    states, labels = [], []
    unsupported: dict[str, str] = {}
    # (a) random: the zoo's own init scheme and seeds
    for s in seeds:
        states.append(nets.init_(cell.build(case.arch), s, cell.init).state_dict())
        labels.append(("random", s))
    # (b) the generator's prediction (one per case: the condition does not depend on the seed)
    resolved = None
    if ghn is not None:
        cond, resolved = condition_for(ghn, template, zoo=case.zoo, temperature=case.temperature, load=case.load)
        try:
            params = predict_params(ghn, template, cond, zoo=case.zoo, n=samples, seed=0)
        except ZooError as e:  # e.g. a diffusion generator asked for a depth it has no statistics for
            unsupported[generator_name] = str(e)
        else:
            pred = cell.build(case.arch)
            pred.load_state_dict({**pred.state_dict(), **{k: v.detach() for k, v in params.items()}})
            if kind_of(ghn).samples:  # sampled nets get BatchNorm statistics of the training data
                reset_batchnorm(pred, task.x_train[:512])
            for s in seeds:
                states.append(pred.state_dict())
                labels.append((generator_name, s))
    for name, st in (extra_inits or {}).items():
        states += [st for _ in seeds]
        labels += [(name, s) for s in seeds]
    # (c) the baselines
    sources: dict[str, str | None] = {}
    for b in baseline_names:
        try:
            got, sources[b] = baseline_states(b, case, seeds, train_cells, spec, zoo_root, task)
        except (ZooError, ValueError) as e:
            unsupported[b] = str(e)
            continue
        states += got
        labels += [(b, s) for s in seeds]
    members = case_members(cell, [(f"{g}/{s}", s) for g, s in labels])
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
           "nearest_cell": sources.get("nearest"), "sources": {k: v for k, v in sources.items() if v},
           "generators": {}, "unsupported": unsupported}
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
    budget = {k: at(budget_step(total, f)) for k, f in BUDGET_FRACTIONS.items()}
    return {"at_step": {"0": at(0), "10": at(10), "100": at(100), **budget, "end": vals[-1]}, "final": vals[-1],
            "steps_to_target": reached, "target": target, "diverged_epoch": diverged}


def median(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    return float(np.median(xs)) if xs else None


def _per_seed(results: list[dict], group: str | None, g: str, value) -> list[list[float]]:
    """Per case of `group` (None: every case) where generator g ran: value(rec, i) for each seed i."""
    out = []
    for r in results:
        if (group is None or r["group"] == group) and g in r["generators"]:
            rec = r["generators"][g]
            out.append([value(rec, r, i) for i in range(len(rec["per_seed"]))])
    return out


def _speedups(rec, r, i):
    return rec["speedup_per_seed"][i]


def _final_delta(rec, r, i):
    return rec["per_seed"][i]["final"] - r["generators"]["random"]["per_seed"][i]["final"]


def _at(key):
    return lambda rec, r, i: rec["per_seed"][i]["at_step"].get(key)


def _stat(groups: list[list[float]]) -> tuple[float | None, list[float] | None]:
    return median_of_medians(groups), bootstrap_ci(groups)


def generator_summary(results: list[dict], g: str) -> dict:
    """One generator's medians over cases (of the per-case medians over seeds) with bootstrap 95%
    intervals over cases and seeds: speedup on held-out cells and architectures, final-score
    difference to random init, and the score after 1% / 10% of the budget; also per zoo."""
    out: dict = {"generator": g, "n_cases": {grp: len(_per_seed(results, grp, g, _speedups)) for grp in ("cells", "archs")}}
    for grp in ("cells", "archs"):
        out[f"median_speedup_{grp}"], out[f"median_speedup_{grp}_ci"] = _stat(_per_seed(results, grp, g, _speedups))
    out["final_acc_delta_median"], out["final_acc_delta_median_ci"] = _stat(_per_seed(results, None, g, _final_delta))
    for grp in ("cells", "archs"):
        out[f"final_acc_delta_median_{grp}"] = median_of_medians(_per_seed(results, grp, g, _final_delta))
    for k in ("0", *BUDGET_FRACTIONS):
        name = "step0" if k == "0" else "budget_" + k.rstrip("%") + "pct"
        for grp in ("cells", "archs"):
            out[f"score_{name}_{grp}"], out[f"score_{name}_{grp}_ci"] = _stat(_per_seed(results, grp, g, _at(k)))
    out["per_zoo"] = {}
    for zoo in sorted({r["zoo"] for r in results}):
        rz = [r for r in results if r["zoo"] == zoo]
        z = {}
        for grp in ("cells", "archs"):
            z[f"median_speedup_{grp}"], z[f"median_speedup_{grp}_ci"] = _stat(_per_seed(rz, grp, g, _speedups))
        z["final_acc_delta_median"] = median_of_medians(_per_seed(rz, None, g, _final_delta))
        out["per_zoo"][zoo] = z
    return out


def ratio_to(results: list[dict], g: str, base: str, group: str = "archs") -> tuple[float | None, list[float] | None]:
    """Median over the cases of `group` where both ran of the per-case median over seeds of
    speedup(g) / speedup(base) (both against the same random-init target, so the ratio is
    steps(base) / steps(g)), with its bootstrap interval."""
    groups = []
    for r in results:
        if r["group"] == group and g in r["generators"] and base in r["generators"]:
            a, b = r["generators"][g]["speedup_per_seed"], r["generators"][base]["speedup_per_seed"]
            groups.append([x / y for x, y in zip(a, b) if math.isfinite(x) and math.isfinite(y) and y > 0])
    return _stat(groups)


def summarize(results: list[dict], generator: str) -> dict:
    """The summary of a results.json: the generator's medians and intervals (generator_summary),
    the best baseline on held-out architectures and the ratio to it, the seed noise, the bound
    counts, the goals, and `by_generator`: the same summary for random init and every baseline."""
    present = list(dict.fromkeys(g for r in results for g in r["generators"]))
    by_gen = {g: generator_summary(results, g) for g in present}
    s = dict(by_gen.get(generator) or generator_summary(results, generator))

    noise = median([float(np.std([p["final"] for p in r["generators"]["random"]["per_seed"]]))
                    for r in results])
    ranked = [(by_gen[b]["median_speedup_archs"], b) for b in BASELINES
              if b in by_gen and by_gen[b]["median_speedup_archs"] is not None]
    best = max(ranked)[1] if ranked else None
    ratio, ratio_ci = ratio_to(results, generator, best) if best else (None, None)
    seeds = sorted({len(r["generators"]["random"]["per_seed"]) for r in results})
    s.update({
        "seeds": seeds[0] if len(seeds) == 1 else seeds,
        "best_baseline": best,
        "best_baseline_median_speedup_archs": by_gen[best]["median_speedup_archs"] if best else None,
        "ratio_to_best_baseline_archs": ratio,
        "ratio_to_best_baseline_archs_ci": ratio_ci,
        "seed_noise_final_std_median": noise,
        "nearest_median_speedup_cells": (by_gen.get("nearest") or {}).get("median_speedup_cells"),
        "nearest_final_acc_delta_median_cells": (by_gen.get("nearest") or {}).get("final_acc_delta_median_cells"),
        "step0_median": {g: median([r["generators"][g]["at_step"]["0"] for r in results if g in r["generators"]])
                         for g in present},
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
        "unsupported": {r["case"]: r["unsupported"][generator] for r in results if generator in r.get("unsupported", {})},
        "n_cases": {"cells": sum(r["group"] == "cells" for r in results),
                    "archs": sum(r["group"] == "archs" for r in results)},
    })
    s["goals"] = goals(s)
    s["by_generator"] = by_gen
    return s


GOALS = {
    "archs_speedup_ge_3_ci_above_1": "held-out architectures: median speedup vs random >= 3, CI lower bound > 1",
    "archs_ge_1.5x_best_baseline_ci_above_1": "held-out architectures: >= 1.5x the best baseline, CI lower bound > 1",
    "cells_speedup_ge_10": "held-out cells: median speedup >= 10",
    "final_not_worse_beyond_noise": "median final score difference to random >= -(seed-to-seed std of random's final)",
}


def goals(s: dict) -> dict[str, bool]:
    """The goals of GOALS, true/false, from a summary."""
    def lo(ci):
        return ci[0] if ci else None

    sa, sc, r, d = s["median_speedup_archs"], s["median_speedup_cells"], s["ratio_to_best_baseline_archs"], s["final_acc_delta_median"]
    return {
        "archs_speedup_ge_3_ci_above_1": sa is not None and sa >= 3 and (lo(s["median_speedup_archs_ci"]) or 0) > 1,
        "archs_ge_1.5x_best_baseline_ci_above_1": r is not None and r >= 1.5 and (lo(s["ratio_to_best_baseline_archs_ci"]) or 0) > 1,
        "cells_speedup_ge_10": sc is not None and sc >= 10,
        "final_not_worse_beyond_noise": d is not None and d >= -(s["seed_noise_final_std_median"] or 0.0),
    }


def bound_counts(results: list[dict], generator: str) -> dict[str, int]:
    kinds = [speedup_bound(r["generators"]["random"]["steps_to_target"], r["generators"][generator]["steps_to_target"])
             for r in results if generator in r["generators"]]
    return {k: kinds.count(k) for k in BOUNDS}
