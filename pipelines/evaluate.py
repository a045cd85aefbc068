"""The init benchmark (`hypernet eval`): does a generator's initialization train faster than random?

The protocol every weight generator shares (GHNs now, the diffusion generator later):

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

Outputs (`--out DIR`): results.json (entries per case and generator, `summary`, and `machine`, the
CPU, torch build and threads the numbers come from: float32 training is reproducible on one machine,
not across machines), results.md (the table) and PNG curves of the score against the step.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hypernet.api import condition_for, load_hypernet, predict_params, reset_batchnorm
from hypernet.conditions import ConditionSpec
from hypernet.generators import kind_of
from pipelines.zoodata import ArchCase, ZooCell, load_cells, make_split, split_digest
from zoo import nets
from zoo.errors import ZooError
from zoo.machine import machine_info
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


def _score_name(metrics: dict) -> tuple[str, bool]:
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
    metric, higher = _score_name(first)
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
            per_seed.append(_measures(c, finals_a[s], higher, total, pop.diverged_epoch[labels.index((g, s))]))
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
        sp = [_speedup(b["steps_to_target"], p["steps_to_target"], total) for p, b in zip(ps, base)]
        counted = [x for x in sp if math.isfinite(x)]
        rec["speedup"] = float(np.median(counted)) if counted else float("nan")
        rec["speedup_per_seed"] = sp
        rec["reached"] = all(p["steps_to_target"] is not None for p in ps)
        # random init against itself is 1 by definition, not a bound
        rec["speedup_bound"] = ("exact" if counted else None) if g == "random" else speedup_bound(
            [b["steps_to_target"] for b in base], rec["steps_to_target"])
        rec["final_delta"] = float(np.mean([p["final"] - b["final"] for p, b in zip(ps, base)]))


def _speedup(steps_a: int | None, steps_b: int | None, total: int) -> float:
    """steps(a) / steps(b), both at least 1; steps(a) / total when (b) never reaches the target;
    NaN when (a) has no final score to aim at (it diverged)."""
    if steps_a is None:
        return float("nan")
    if steps_b is None:
        return max(1, steps_a) / total
    return max(1, steps_a) / max(1, steps_b)


BOUNDS = ("exact", "lower", "upper", "mixed")
MARKS = {"exact": "", "lower": "≥", "upper": "<", "mixed": "~", None: ""}
MARK_LEGEND = ("≥ x: a lower bound (some seeds met the target at step 0, counted as one step, and none "
               "missed it); < x: an upper bound (some seeds never met it, counted as all steps, and none "
               "met it at step 0); ~ x: neither (some seeds met it at step 0, others never); no mark: exact")


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


def speedup_cell(rec: dict, random_rec: dict) -> str:
    """A generator's case speedup as printed in the tables: the bound mark, then the median."""
    sp = rec.get("speedup")  # NaN in memory, null in results.json when no seed has a target
    if sp is None or not math.isfinite(sp):
        return "–"
    kind = speedup_bound(random_rec["steps_to_target"], rec["steps_to_target"])
    return f"{MARKS[kind]}{sp:.1f}"


def _measures(curve: list[tuple[int, float]], target: float, higher: bool, total: int, diverged) -> dict:
    steps = [s for s, _ in curve]
    vals = [v for _, v in curve]

    def at(step: int) -> float:
        return vals[steps.index(step)] if step in steps else float("nan")

    reached = next((s for s, v in curve if (v >= target if higher else v <= target)), None)
    return {"at_step": {"0": at(0), "10": at(10), "100": at(100), "end": vals[-1]}, "final": vals[-1],
            "steps_to_target": reached, "target": target, "diverged_epoch": diverged}


def _median(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    return float(np.median(xs)) if xs else None


def summarize(results: list[dict], generator: str) -> dict:
    def med(group, key, g=generator):
        return _median([r["generators"][g][key] for r in results if r["group"] == group and g in r["generators"]])

    noise = _median([float(np.std([p["final"] for p in r["generators"]["random"]["per_seed"]]))
                     for r in results])
    s = {
        "generator": generator,
        "median_speedup_cells": med("cells", "speedup"),
        "median_speedup_archs": med("archs", "speedup"),
        "final_acc_delta_median": _median([r["generators"][generator]["final_delta"] for r in results
                                           if generator in r["generators"]]),
        "final_acc_delta_median_cells": med("cells", "final_delta"),
        "final_acc_delta_median_archs": med("archs", "final_delta"),
        "seed_noise_final_std_median": noise,
        "nearest_median_speedup_cells": med("cells", "speedup", "nearest"),
        "nearest_final_acc_delta_median_cells": med("cells", "final_delta", "nearest"),
        "step0_median": {g: _median([r["generators"][g]["at_step"]["0"] for r in results if g in r["generators"]])
                         for g in ("random", generator, "nearest")},
        # cases where the generator's init already scores at least random init's final score
        # before any step, for every seed (their speedup is steps(a) / 1)
        "at_target_from_step0": {grp: sum(r["group"] == grp and generator in r["generators"] and all(
            x == 0 for x in r["generators"][generator]["steps_to_target"]) for r in results) for grp in ("cells", "archs")},
        # per group, how many cases' speedups are exact, lower bounds, upper bounds or neither
        # (mixed); cases without a defined speedup are in none of them
        "speedup_bounds": {grp: _bound_counts([r for r in results if r["group"] == grp], generator)
                           for grp in ("cells", "archs")},
        "nearest_speedup_bounds_cells": _bound_counts([r for r in results if r["group"] == "cells"], "nearest"),
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


def _bound_counts(results: list[dict], generator: str) -> dict[str, int]:
    kinds = [speedup_bound(r["generators"]["random"]["steps_to_target"], r["generators"][generator]["steps_to_target"])
             for r in results if generator in r["generators"]]
    return {k: kinds.count(k) for k in BOUNDS}


def benchmark(hypernet_dir: str | Path, zoo_dir: str | Path, out: str | Path | None = None,
              seeds: list[int] | None = None, progress: bool = True, name: str | None = None) -> dict:
    """Run the init benchmark of a `hypernet train` run folder on its zoo; write results to `out`."""
    from pipelines.fit import read_run

    hypernet_dir, zoo_root = Path(hypernet_dir), Path(zoo_dir)
    meta = read_run(hypernet_dir)
    ghn = load_hypernet(hypernet_dir)
    spec = ghn.conditions
    if spec is None:
        raise ZooError(f"{hypernet_dir}: the hypernetwork has no conditions; it was not trained on a zoo")
    cells = load_cells(zoo_root, spec.names)
    split = make_split(cells)
    if split_digest(split) != split_digest(meta["split_obj"]):
        raise ZooError(f"{zoo_root}: its held-out split differs from the one {hypernet_dir} was trained with; "
                       "evaluate on the zoo the hypernetwork was trained on")
    train_cells = [c for c in cells if c.key in set(meta["train_cells"])]
    cases = cases_of(cells, split)
    if not cases:
        raise ZooError(f"{zoo_root}: no held-out cell or architecture to benchmark (see the split notes: "
                       f"{'; '.join(split.notes) or 'none'})")
    if seeds is None:
        seeds = sorted({m.seed for c in cells for m in c.members})[:2]
    name = name or hypernet_dir.name
    machine = machine_info(torch_threads=torch.get_num_threads())  # Population trains on this setting
    results, t0 = [], time.perf_counter()
    bar = _bar(progress, len(cases))
    try:
        for case in cases:
            if bar:
                bar[0].update(bar[1], info=case.key)
            results.append(run_case(case, ghn, spec, train_cells, zoo_root, seeds))
            if bar:
                bar[0].advance(bar[1])
    finally:
        if bar:
            bar[0].stop()
    doc = {
        "hypernet": name,
        "kind": meta.get("kind"),
        "zoo": str(zoo_root),
        "seeds": seeds,
        "protocol": "held-out cells and architectures; random vs generator vs nearest zoo model; "
                    "steps-to-target = first step reaching the final score of random init (same seed)",
        "split_notes": split.notes,
        "seconds": time.perf_counter() - t0,
        "machine": machine,
        "summary": summarize(results, "hypernet"),
        "results": results,
    }
    if kind_of(ghn).samples:
        doc["memorization"] = memorization(ghn, cases, train_cells, zoo_root, spec)
    if out is not None:
        write_outputs(doc, Path(out))
    return doc


def _bar(enabled: bool, n: int):
    if not enabled:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    p = Progress(TextColumn("hypernet eval"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                 TextColumn("{task.fields[info]}"))
    t = p.add_task("eval", total=n, info="")
    p.start()
    return p, t


# ---- memorization audit (generators that sample weights) --------------------------------------------------
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
    ratio = _median([r for c in per_case for r in c["nn_distance_ratio"]])
    return {
        "nn_distance_ratio_median": ratio,
        # the goal: generated nets no closer to a training checkpoint than two trained seeds
        "goal_not_closer_than_seeds": ratio is not None and ratio >= 1.0,
        "agreement_with_nearest_median": _median([a for c in per_case for a in c["agreement_with_nearest"]]),
        "seed_agreement_median": _median([c["seed_agreement"] for c in per_case]),
        "baseline_trained_plus_noise_median": _median([c["baseline_trained_plus_noise"] for c in per_case]),
        "baseline_cell_average_median": _median([c["baseline_cell_average"] for c in per_case]),
        "reference_held_out_members_median": _median([r for c in per_case for r in c["reference_held_out_members"]]),
        "samples_per_case": samples,
        "per_case": per_case,
    }


# ---- outputs ------------------------------------------------------------------------------------
def _fmt(x, digits=3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.{digits}f}"


def machine_line(m: dict | None) -> str:
    """One line naming the machine of a results.json (older files have none)."""
    if not m:
        return "machine not recorded"
    return (f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores, torch {m.get('torch', '?')} "
            f"({m.get('cpu_capability', '?')}), {m.get('torch_threads', '?')} threads")


def _bounds_note(counts: dict | None) -> str:
    """E.g. "speedups: 2 exact, 1 ≥, 0 <, 1 ~" (older summaries have no counts: "")."""
    if not counts:
        return ""
    return "speedups: " + ", ".join(f"{counts.get(k, 0)} {MARKS[k] or k}" for k in BOUNDS)


def markdown(doc: dict) -> str:
    s = doc["summary"]
    bounds = s.get("speedup_bounds", {})
    lines = [
        f"# Init benchmark: {doc['hypernet']} ({doc.get('kind')})",
        "",
        f"Zoo `{doc['zoo']}`, seeds {doc['seeds']}; score = {doc['results'][0]['metric']} "
        f"(mean over seeds). Speedup = steps for random init to reach its own final score / steps for "
        f"the generator's init (median over seeds). Machine: {machine_line(doc.get('machine'))}.",
        "",
        f"Marks: {MARK_LEGEND}.",
        "",
        f"- median speedup, held-out cells: **{_fmt(s['median_speedup_cells'], 1)}** (goal ≥ 5); "
        f"{s['at_target_from_step0']['cells']} of {s['n_cases']['cells']} cells at random init's final score "
        f"from step 0" + (f"; {_bounds_note(bounds.get('cells'))}" if bounds else ""),
        f"- median speedup, held-out architectures: **{_fmt(s['median_speedup_archs'], 1)}** (goal ≥ 2)"
        + (f"; {_bounds_note(bounds.get('archs'))}" if bounds else ""),
        f"- median final-score difference (hypernet − random): **{_fmt(s['final_acc_delta_median'])}** "
        f"(seed-to-seed std of random's final score: {_fmt(s['seed_noise_final_std_median'])})",
        f"- nearest zoo model, held-out cells: median speedup {_fmt(s['nearest_median_speedup_cells'], 1)}, "
        f"final difference {_fmt(s['nearest_final_acc_delta_median_cells'])}"
        + (f"; {_bounds_note(s.get('nearest_speedup_bounds_cells'))}" if s.get("nearest_speedup_bounds_cells") else ""),
        "",
        "| case | T | load | generator | step 0 | step 10 | step 100 | end | steps to target | speedup |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["results"]:
        for g, rec in r["generators"].items():
            steps = ", ".join("never" if x is None else str(x) for x in rec["steps_to_target"])
            sp = "1" if g == "random" else speedup_cell(rec, r["generators"]["random"])
            a = rec["at_step"]
            lines.append(f"| {r['case']} | {r['temperature']:g} | {r['load']:g} | {g} | {_fmt(a['0'])} | "
                         f"{_fmt(a['10'])} | {_fmt(a['100'])} | {_fmt(a['end'])} | {steps} / {r['steps_total']} | {sp} |")
    mem = doc.get("memorization")
    if mem and "nn_distance_ratio_median" in mem:
        lines += ["", "Memorization audit (held-out cells; distances after canonicalization, divided by the "
                  "distance between two trained seeds of a cell):", "",
                  f"- generated nets, distance to the nearest training checkpoint: **{_fmt(mem['nn_distance_ratio_median'])}**"
                  f" (goal ≥ 1: {'met' if mem.get('goal_not_closer_than_seeds') else 'not met'}; median of "
                  f"{mem['samples_per_case']} samples per cell); prediction agreement with it "
                  f"{_fmt(mem['agreement_with_nearest_median'])} (two trained seeds: {_fmt(mem['seed_agreement_median'])})",
                  f"- baselines: a training checkpoint + 10% noise {_fmt(mem['baseline_trained_plus_noise_median'])}, "
                  f"the average of a cell's members {_fmt(mem['baseline_cell_average_median'])}",
                  f"- reference: the zoo's own trained members of the held-out cells (real training runs the "
                  f"generator never saw) {_fmt(mem.get('reference_held_out_members_median'))}"]
    if doc["summary"].get("unsupported"):
        lines += ["", "Not produced by the generator: " + "; ".join(f"{k} ({v})" for k, v in
                                                                    doc["summary"]["unsupported"].items())]
    if doc.get("split_notes"):
        lines += ["", "Notes: " + "; ".join(doc["split_notes"])]
    return "\n".join(lines) + "\n"


def read_results(path: str | Path) -> dict:
    """results.json of `hypernet eval` (a results folder or the file itself)."""
    p = Path(path)
    p = p / "results.json" if p.is_dir() else p
    if not p.exists():
        raise ZooError(f"{path}: no results.json; run `hypernet eval --hypernet RUN --out {path}` first")
    try:
        doc = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ZooError(f"{p}: not valid JSON ({e})") from None
    for k in ("summary", "results", "seeds", "hypernet"):
        if k not in doc:
            raise ZooError(f"{p}: field {k!r} missing; this is not a `hypernet eval` results.json")
    return doc


def compare(docs: list[dict]) -> str:
    """One markdown table of several benchmark results on the same held-out cases (same zoo split and
    seeds, which makes random init and the nearest zoo model identical across them): per case the
    step-0 score, final-score difference to random and speedup of every generator, then the
    summaries and goals, and the memorization audits of generators that have one."""
    if not docs:
        raise ZooError("compare: no results given")
    names = [d["hypernet"] for d in docs]
    if len(set(names)) != len(names):
        raise ZooError(f"compare: two results have the same name ({', '.join(names)}); name them with --out")
    cases = [r["case"] for r in docs[0]["results"]]
    for d in docs[1:]:
        if [r["case"] for r in d["results"]] != cases or d["seeds"] != docs[0]["seeds"]:
            raise ZooError(f"compare: {d['hypernet']} was evaluated on other cases or seeds than {names[0]} "
                           f"({[r['case'] for r in d['results']]}, seeds {d['seeds']} vs {cases}, seeds "
                           f"{docs[0]['seeds']}); evaluate every run on the same zoo with the same --seeds")
    base = docs[0]["results"]
    metric = base[0]["metric"]
    gens = [("random", None), *((n, i) for i, n in enumerate(names)), ("nearest", None)]
    head = "| case | T | load | random final | " + " | ".join(
        f"{g} step 0 / Δfinal / speedup" for g, _ in gens[1:]) + " |"
    lines = [f"Same held-out cases, seeds {docs[0]['seeds']}; score = {metric}. Per generator: score at step 0, "
             "final score minus random init's, speedup (steps of random init to its final score / the "
             f"generator's, median over seeds). Marks: {MARK_LEGEND}.", ""]
    machines = [d.get("machine") for d in docs]
    if all(m == machines[0] for m in machines):
        lines += [f"Machine: {machine_line(machines[0])}.", ""]
    else:
        lines += ["Machines differ (float32 training drifts apart across CPUs, kernels and thread counts, so "
                  "differences of a few seed-noise widths may come from the machine, not the generator):", ""]
        lines += [f"- {d['hypernet']}: {machine_line(m)}" for d, m in zip(docs, machines)] + [""]
    lines += [head, "|" + "---|" * (4 + len(gens) - 1)]
    for k, case in enumerate(cases):
        r0 = base[k]
        row = [case, f"{r0['temperature']:g}", f"{r0['load']:g}", _fmt(r0["generators"]["random"]["final"])]
        for g, i in gens[1:]:
            r = (docs[i] if i is not None else docs[0])["results"][k]
            rec = r["generators"].get("hypernet" if i is not None else g)
            if rec is None:
                row.append("unsupported" if r.get("unsupported") else "–")
                continue
            row.append(f"{_fmt(rec['at_step']['0'])} / {rec['final_delta']:+.3f} / "
                       f"{speedup_cell(rec, r['generators']['random'])}")
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "| generator | median speedup, cells | median speedup, architectures | median Δfinal | "
              "median step-0 score | goals met |", "|---|---|---|---|---|---|"]
    s0 = docs[0]["summary"]
    lines.append(f"| random | 1 | 1 | 0 | {_fmt(s0['step0_median']['random'])} | – |")
    for d in docs:
        s = d["summary"]
        met = [k for k, v in s["goals"].items() if v]
        lines.append(f"| {d['hypernet']} | {_fmt(s['median_speedup_cells'], 1)} | {_fmt(s['median_speedup_archs'], 1)} | "
                     f"{_fmt(s['final_acc_delta_median'])} | {_fmt(s['step0_median']['hypernet'])} | "
                     f"{len(met)} of {len(s['goals'])}{': ' + ', '.join(met) if met else ''} |")
    lines.append(f"| nearest zoo model | {_fmt(s0['nearest_median_speedup_cells'], 1)} | – | "
                 f"{_fmt(s0['nearest_final_acc_delta_median_cells'])} (cells) | {_fmt(s0['step0_median']['nearest'])} | – |")
    for d in docs:
        mem = d.get("memorization")
        if mem and "nn_distance_ratio_median" in mem:
            lines += ["", f"Memorization ({d['hypernet']}): nearest-training-checkpoint distance / seed distance "
                      f"{_fmt(mem['nn_distance_ratio_median'])} (goal ≥ 1); checkpoint + 10% noise "
                      f"{_fmt(mem['baseline_trained_plus_noise_median'])}, cell average "
                      f"{_fmt(mem['baseline_cell_average_median'])}, the held-out cells' own trained members "
                      f"{_fmt(mem.get('reference_held_out_members_median'))}."]
    return "\n".join(lines) + "\n"


def plot_curves(doc: dict, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"random": "#555555", "hypernet": "#d62728", "nearest": "#1f77b4"}
    paths = []
    for group in ("cells", "archs"):
        rs = [r for r in doc["results"] if r["group"] == group]
        if not rs:
            continue
        n = len(rs)
        cols = min(n, 3)
        rows = math.ceil(n / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
        for ax, r in zip(axes.flat, rs):
            for g, rec in r["generators"].items():
                steps = np.array(rec["curve_steps"], dtype=float)
                vals = np.array(rec["curves"]).mean(0)
                ax.plot(np.maximum(steps, 0.5), vals, color=colors.get(g, "k"), label=g, lw=1.5)
            ax.set_xscale("log")
            ax.axhline(r["generators"]["random"]["final"], color="#999999", ls=":", lw=1)
            ax.set_title(f"{r['name']} ({r['temperature_param']} {r['temperature']:g}, "
                         f"{r['load_param']} {r['load']:g})", fontsize=9)
            ax.set_xlabel("SGD step (step 0 drawn at 0.5)")
            ax.set_ylabel(r["metric"])
            ax.grid(alpha=0.3)
        for ax in list(axes.flat)[n:]:
            ax.axis("off")
        axes.flat[0].legend(fontsize=8)
        title = "held-out cells" if group == "cells" else "held-out architectures"
        fig.suptitle(f"{doc['hypernet']}: {title} (mean over seeds; dotted: random init's final score)")
        fig.tight_layout()
        p = out / f"curves-{group}.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(p)
    return paths


def write_outputs(doc: dict, out: Path) -> None:
    """results.json, results.md and the curve PNGs, each written atomically."""
    from zoo.store import write_text_atomic

    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "results.json", json.dumps(_finite(doc), indent=1, allow_nan=False) + "\n")
    write_text_atomic(out / "results.md", markdown(doc))
    plot_curves(doc, out)


def _finite(x):
    """NaN / inf -> None (JSON null), recursively: e.g. the score at step 100 of a run shorter than that."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


def summary_line(doc: dict) -> str:
    s = doc["summary"]
    return (f"{doc['hypernet']}: median speedup {_fmt(s['median_speedup_cells'], 1)}x on held-out cells "
            f"(goal 5), {_fmt(s['median_speedup_archs'], 1)}x on held-out architectures (goal 2); "
            f"final {doc['results'][0]['metric']} vs random init {s['final_acc_delta_median']:+.3f} "
            f"(seed noise {_fmt(s['seed_noise_final_std_median'])})")
