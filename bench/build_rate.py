"""Models per second of `zoo build`'s training stage, three ways, the same members in one run.

The members: the default plane (MLPs on MNIST-1D, batch 16-256 x width 4-256, SGD lr 0.05
momentum 0.9) with 16 seeds per cell, trained through the build's own code (pipelines.plan,
pipelines.bundle.train_bundle, pipelines.runner.run_jobs on one local Ray session) as

- `one_per_task`: one model per Ray task, a population of one (how the reference phase zoo
  trains: one trial per model);
- `cell_bundles`: the default zoo's bundles before packing: a cell's 3 seeds per population and
  per task (the 16 seeds of a cell in bundles of at most 3);
- `packed`: every member that can share a step in one population (here a cell's 16 seeds: the
  default plane's cells differ in batch size and width, so nothing packs across them) and small
  populations packed into bundles of up to 32 models (compute.bundle_members: two populations a
  task, so there are still more tasks than workers).

The three ways alternate within each repeat (one_per_task, cell_bundles, packed, then again), so
a change of machine load hits all three; each repeat gives models/s = models / wall seconds from
the first task submitted to the last result committed (Ray's start-up is paid once, before). The
claim is the median ratio over repeats with its bootstrap 95% interval (bench/stats.py). Last
stdout line: JSON.

    python bench/build_rate.py --quick      # 4 cells x 16 seeds, 2 epochs, 3 repeats: about a minute
    python bench/build_rate.py              # 25 cells x 16 seeds, 2 epochs, 3 repeats
    python bench/build_rate.py --spec configs/zoos/mlp_mnist1d_10k.yaml   # 20 of its points x 16 seeds
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.stats import median_ci, rounded  # noqa: E402
from pipelines.bundle import train_bundle  # noqa: E402
from pipelines.plan import plan, populations  # noqa: E402
from pipelines.runner import Job, Reporter, run_jobs, start_ray  # noqa: E402
from zoo.machine import machine_info  # noqa: E402
from zoo.spec import load_spec, parse_spec  # noqa: E402

SPEC = Path(__file__).resolve().parent.parent / "configs" / "zoos" / "mlp_mnist1d.yaml"
SEEDS = list(range(16))
QUICK_CELLS = {"batch_size": [32, 128], "width": [16, 64]}
WAYS = ("one_per_task", "cell_bundles", "packed")


def make_spec(quick: bool, epochs: int, path: Path = SPEC, points: int = 20) -> dict:
    """The benchmark's members: `path`'s plane (the default zoo's grid, or `points` points of a
    sampled plane) with 16 seeds and `epochs` epochs."""
    data = load_spec(path).to_json()
    data.update(name="build_rate", seeds=SEEDS, checkpoints=[0, epochs])
    data["training"]["epochs"] = epochs
    if data.get("phase") == "random":
        data["sampling"]["points"] = points
    elif quick:
        data["axes"]["temperature"]["values"] = QUICK_CELLS["batch_size"]
        data["axes"]["load"]["values"] = QUICK_CELLS["width"]
    data["metrics"].update(enabled=False, epoch=epochs)
    return data


def bundles_for(spec_json: dict, way: str) -> list[list[list[str]]]:
    """Each bundle as its populations' model ids, the way `way` trains the members."""
    spec = parse_spec(spec_json)
    if way == "one_per_task":
        return [[[m.model_id]] for m in spec.members()]
    # packed: bundles of up to 32 members, so the 16-seed populations go two to a task and the
    # tasks still outnumber the workers (one bundle of everything would leave a worker idle)
    compute = {"max_members": 3, "bundle_members": None} if way == "cell_bundles" else {"max_members": 64, "bundle_members": 32}
    spec = parse_spec({**spec_json, "compute": {**spec_json["compute"], **compute}})
    return [b.member_ids() for b in plan(spec)]


def run_way(spec_json: dict, bundles: list[list[list[str]]], workers: int) -> float:
    """Wall seconds to train every bundle on the running Ray session (results kept in memory only)."""
    n = sum(len(p) for b in bundles for p in b)
    got = []
    jobs = [Job(f"bundle {i}", (spec_json, b, f"b{i}"), sum(len(p) for p in b), got.append) for i, b in enumerate(bundles)]
    t0 = time.perf_counter()
    run_jobs(train_bundle, jobs, address=None, workers=workers, use_ray=True, reporter=Reporter(None, "", "", 0, n))
    seconds = time.perf_counter() - t0
    assert sum(len(r["rows"]) for r in got) == n * len(spec_json["checkpoints"])
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="4 cells (batch 32/128 x width 16/64), about a minute")
    ap.add_argument("--epochs", type=int, default=2, help="epochs per model (default 2)")
    ap.add_argument("--repeats", type=int, default=3, help="repeats of the three ways (default 3)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="concurrent Ray tasks (default: cores)")
    ap.add_argument("--spec", type=Path, default=SPEC, help="another zoo's plane, e.g. configs/zoos/mlp_mnist1d_10k.yaml "
                    "(whose points share populations across the plane); default: the default zoo")
    ap.add_argument("--points", type=int, default=20, help="points of a sampled plane (--spec with phase: random)")
    args = ap.parse_args()
    epochs, repeats = args.epochs, args.repeats
    spec_json = make_spec(args.quick, epochs, args.spec, args.points)
    spec = parse_spec(spec_json)
    n_models = len(spec.members())
    layouts = {w: bundles_for(spec_json, w) for w in WAYS}
    print(f"{args.spec.name}: {n_models} models ({len(spec.cells())} cells x {len(SEEDS)} seeds), {epochs} epoch(s), {repeats} repeats, "
          f"{args.workers} workers, 1 torch thread each; tasks: "
          + ", ".join(f"{w} {len(b)}" for w, b in layouts.items())
          + f"; populations when packed: {len(populations(parse_spec(spec_json)))}", flush=True)

    import ray

    start_ray(None, args.workers)
    try:
        run_way(spec_json, layouts["packed"][:args.workers], args.workers)  # warm the workers (imports, data)
        seconds = {w: [] for w in WAYS}
        for r in range(repeats):
            for w in WAYS:
                seconds[w].append(run_way(spec_json, layouts[w], args.workers))
                print(f"repeat {r + 1}/{repeats} {w:>13}: {seconds[w][-1]:7.1f} s, {n_models / seconds[w][-1]:6.1f} models/s",
                      flush=True)
    finally:
        ray.shutdown()
    rate = {w: [n_models / s for s in seconds[w]] for w in WAYS}
    speedup = [p / o for p, o in zip(rate["packed"], rate["one_per_task"])]
    vs_cell = [p / c for p, c in zip(rate["packed"], rate["cell_bundles"])]
    load = os.getloadavg()[0]
    print(f"\n| way | tasks | models/s [95% CI] |\n|---|---|---|")
    for w in WAYS:
        m, lo, hi = median_ci(rate[w])
        print(f"| {w} | {len(layouts[w])} | {m:.2f} [{lo:.2f}, {hi:.2f}] |")
    m, lo, hi = median_ci(speedup)
    print(f"packed / one_per_task: {m:.1f}x [{lo:.1f}, {hi:.1f}]; packed / cell_bundles: {median_ci(vs_cell)[0]:.2f}x; "
          f"load average {load:.1f}")
    print(json.dumps({
        "benchmark": "build_rate", "spec": str(args.spec), "quick": args.quick, "models": n_models, "epochs": epochs, "repeats": repeats,
        "workers": args.workers, "tasks": {w: len(b) for w, b in layouts.items()},
        "models_per_s": {w: rounded(median_ci(rate[w]), 3) for w in WAYS},
        "speedup_vs_one_per_task": rounded(median_ci(speedup), 3),
        "speedup_vs_cell_bundles": rounded(median_ci(vs_cell), 3),
        "load_average": round(load, 2), "machine": machine_info(torch_threads=1),
    }))


if __name__ == "__main__":
    main()
