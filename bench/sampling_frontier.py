"""The speed / novelty trade-off of a sampling weight generator (IGPG, diffusion) on its held-out cells.

For a trained run and its zoo, each held-out cell (a `--cells` subset, as `hypernet eval` picks
it) trains side by side, with the cell's hyperparameters and the zoo's epochs (the benchmark's
`run_case`): the zoo's random init (its seeds) and one init per variant `T:sigma[:n]`, a net drawn
at sampling temperature T (the lowest training loss of n draws) plus sigma times a fresh init of the zoo's scheme (a seed no member has; the
shrink-and-perturb idea without the shrink: the added init brings the diversity of a new training
run, the draw what the generator learned). `T:sigmar` swaps inits instead: the draw, canonicalized,
minus sigma times the init its nearest training checkpoint was trained from (checkpoint 0, in the
same frame) plus sigma times the fresh init; at sigma 1 the draw's change from that init, moved
onto a new one. Per variant: the speedup to random init's final test
accuracy and the final accuracy difference (medians over cells of per-cell medians over seeds,
two-stage bootstrap 95% intervals), and its novelty as the memorization audit measures it
(pipelines.benchmark.audit): the distance to the nearest canonical training checkpoint over the
held-out cell's own seed distance, and that over the same ratio of nets trained at the cell from new
seeds (1 = as new as independent training). All variants train in one population per cell, so the
ratios are measured side by side and hold on a busy machine.

    python bench/sampling_frontier.py --hypernet runs/igpg-10k --zoo build/big --cells 16 \\
        --variants 0.1:0 0.5:0 1:0 0.1:0.5 0.1:1 0.1:1r

The last stdout line is JSON: per variant its medians and intervals, the machine and torch threads.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hypernet.api import load_hypernet, predict_params  # noqa: E402
from hypernet.generators import kind_of  # noqa: E402
from pipelines.benchmark.audit import _Bank, bank_for, fresh_runs, fresh_seeds  # noqa: E402
from pipelines.benchmark.protocol import cases_of, run_case, subset_cells  # noqa: E402
from pipelines.benchmark.stats import bootstrap_ci, median_of_medians  # noqa: E402
from pipelines.fit import read_run  # noqa: E402
from pipelines.zoodata import load_cells, make_split  # noqa: E402
from zoo import nets  # noqa: E402
from zoo.errors import ZooError  # noqa: E402
from zoo.machine import machine_info  # noqa: E402


def variant(text: str) -> tuple[float, float, int, bool]:
    """TEMPERATURE:SIGMA[:DRAWS], SIGMA with an optional r -> (temperature, sigma, draws, replace)."""
    parts = text.split(":")
    try:
        if len(parts) not in (2, 3):
            raise ValueError
        replace = parts[1].endswith("r")
        t, s = float(parts[0]), float(parts[1].removesuffix("r"))
        n = int(parts[2]) if len(parts) == 3 else 1
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected TEMPERATURE:SIGMA[:DRAWS] (SIGMA may end in r), "
                                         "e.g. 0.1:0.5, 0.1:1r or 1:0:16") from None
    if t <= 0 or s < 0 or n < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: the temperature must be > 0, sigma >= 0 and draws >= 1")
    return t, s, n, replace


def variant_name(t: float, s: float, n: int, replace: bool) -> str:
    return f"T{t:g}{' swap ' if replace else '+'}{s:g}" + (f" best of {n}" if n > 1 else "")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--hypernet", required=True, help="a `hypernet train` run of a sampling generator")
    p.add_argument("--zoo", required=True, help="the zoo it was trained on")
    p.add_argument("--cells", type=int, default=16, help="held-out cells (spread as `hypernet eval --cells`)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--variants", type=variant, nargs="+",
                   default=[(0.1, 0.0, 1, False), (0.5, 0.0, 1, False), (1.0, 0.0, 1, False), (0.1, 1.0, 1, False)],
                   help="TEMPERATURE:SIGMA[:DRAWS]: the draw plus SIGMA x a fresh init; SIGMA ending in r "
                        "(0.1:1r) replaces SIGMA of the nearest training checkpoint's own init by the fresh "
                        "one instead (needs the zoo's checkpoint 0); draws > 1 keeps the draw of lowest "
                        "training loss, as `hypernet eval --samples` does")
    p.add_argument("--fresh", type=int, default=2, help="nets trained from new seeds per cell (the calibration)")
    a = p.parse_args(argv)
    try:
        return run(a)
    except ZooError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def run(a) -> int:
    gen = load_hypernet(a.hypernet)
    if not kind_of(gen).samples or not hasattr(gen.config, "temperature"):
        raise ZooError(f"{a.hypernet}: a {kind_of(gen).name} generator has no sampling temperature")
    meta, spec = read_run(Path(a.hypernet)), gen.conditions
    zoo = Path(a.zoo)
    cells = load_cells(zoo, spec.names)
    train_cells = [c for c in cells if c.key in set(meta["train_cells"])]
    cases = [c for c in subset_cells(cases_of(cells, make_split(cells)), a.cells) if c.group == "cells"]
    new_seeds = fresh_seeds(cells, max(a.fresh, 1) + 1)
    perturb_seed, new_seeds = new_seeds[-1], new_seeds[:a.fresh]
    names = [variant_name(*v) for v in a.variants]
    per = {n: {"speedup": [], "final_delta": [], "ratio": [], "ratio_over_fresh": []} for n in names}
    banks: dict[tuple, _Bank] = {}
    t0 = time.perf_counter()
    for i, case in enumerate(cases):
        module = case.cell.build(case.arch)
        cond = spec.vector(case.zoo, case.temperature, case.load)
        fresh_init = nets.init_(case.cell.build(case.arch), perturb_seed, case.cell.init).state_dict()
        b = bank_for(banks, case, train_cells, zoo)
        inits = {}
        for n, (t, s, draws, replace) in zip(names, a.variants):
            gen.config.temperature = t
            drawn = predict_params(gen, module, cond, zoo=case.zoo, n=draws, seed=0)
            if replace:  # in the bank's frame: the draw with sigma of its nearest checkpoint's init swapped
                st = b.canonical({k: drawn.get(k, v) for k, v in fresh_init.items()})
                own = b.canonical_init(b.nearest_index(st))
                inits[n] = {k: v + s * (fresh_init[k] - own[k]) if k in b.names else v for k, v in st.items()}
            else:
                inits[n] = {k: drawn[k] + s * v if k in drawn else v for k, v in fresh_init.items()}
        rec = run_case(case, None, spec, train_cells, zoo, a.seeds, baseline_names=(), extra_inits=inits)
        sd = b.seed_distance([b.canonical(st) for st in case.cell.states(zoo)])
        fresh = float(np.median([b.nearest(b.canonical(st))[0] / sd for _, st in fresh_runs(case, new_seeds)])) \
            if new_seeds else float("nan")
        for n in names:
            g = rec["generators"][n]
            ratio = b.nearest(b.canonical(inits[n]))[0] / sd
            per[n]["speedup"].append(g["speedup_per_seed"])
            per[n]["final_delta"].append([p["final"] - q["final"] for p, q in
                                          zip(g["per_seed"], rec["generators"]["random"]["per_seed"])])
            per[n]["ratio"].append([ratio])
            per[n]["ratio_over_fresh"].append([ratio / fresh])
        print(f"[{i + 1}/{len(cases)}] {case.key}: " + ", ".join(
            f"{n} {rec['generators'][n]['speedup']:.2f}x / {per[n]['ratio'][-1][0]:.2f}" for n in names), flush=True)
    out = {"hypernet": str(a.hypernet), "zoo": str(zoo), "cells": [c.key for c in cases], "seeds": a.seeds,
           "fresh_seeds": new_seeds, "perturb_seed": perturb_seed, "seconds": time.perf_counter() - t0,
           "machine": machine_info(torch_threads=torch.get_num_threads()), "variants": {}}
    print(f"| variant (T + sigma x fresh init) | speedup, cells | Δfinal | novelty | over fresh runs |")
    print("|---|---|---|---|---|")
    for n in names:
        row = {k: {"median": median_of_medians(v), "ci95": bootstrap_ci(v)} for k, v in per[n].items()}
        out["variants"][n] = row
        print(f"| {n} | " + " | ".join(f"{row[k]['median']:.3g} [{row[k]['ci95'][0]:.3g}, {row[k]['ci95'][1]:.3g}]"
                                        for k in ("speedup", "final_delta", "ratio", "ratio_over_fresh")) + " |")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
