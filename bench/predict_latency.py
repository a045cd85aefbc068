"""Latency of `hypernet.predict_init` for the zoo's architectures, against a random init.

For every architecture of the zoos in a collection (default configs/phases.yaml: the MLP widths
4..256, and the resnet / vit / gpt / pinn zoos' architectures), a fresh module is built and its
parameters are filled (a) by the zoo's own random init (`zoo.nets.init_`, the baseline) and
(b) by `predict_init` with a graph hypernetwork: tracing the module into a graph, message
passing, decoding every tensor and copying it in. Both sides run `--repeats` times alternately and
report their median; `ratio` = predict_init / random init, measured side by side, so it holds on
a busy machine where the absolute milliseconds do not.

The hypernetwork: `--hypernet DIR` (a `hypernet train` run; only the zoos it knows are timed), or
by default untrained GHNs of the shipped configs (configs/hypernets/ghn.yaml and ghn_lowrank.yaml)
conditioned on the collection's zoos: latency does not depend on the trained weights. Both
decoders are timed then, so the table also compares tiled and low-rank decoding.

    python bench/predict_latency.py                  # all zoo architectures, both decoders
    python bench/predict_latency.py --hypernet runs/ghn --config configs/default.yaml

The last stdout line is JSON with `median_ms` (median over architectures of the first hypernet's
predict_init time), per-architecture rows, and the ratios.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hypernet.api import load_hypernet, predict_init  # noqa: E402
from hypernet.conditions import ConditionSpec  # noqa: E402
from hypernet.ghn import GraphHyperNetwork  # noqa: E402
from pipelines.recipes import load_config  # noqa: E402
from zoo import nets, tasks  # noqa: E402
from zoo.spec import load_config as load_collection  # noqa: E402


def architectures(collection) -> list[tuple]:
    """(zoo spec, arch, task_args, temperature, load) for every distinct architecture of every zoo."""
    out, seen = [], set()
    for spec in collection.zoos:
        for c in spec.cells():
            m = spec.member(c, spec.seeds[0])
            key = (spec.name, json.dumps(m.arch, sort_keys=True), json.dumps(m.task_args, sort_keys=True))
            if key in seen:
                continue
            seen.add(key)
            out.append((spec, m.arch, m.task_args, float(c.temperature), float(c.load)))
    return out


def _median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(ROOT / "configs" / "phases.yaml"), help="zoo collection YAML")
    p.add_argument("--hypernet", help="a hypernet run folder (default: untrained GHNs of the shipped configs)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    collection = load_collection(a.config)
    if a.hypernet:
        ghns = {Path(a.hypernet).name: load_hypernet(a.hypernet)}
    else:
        cond = ConditionSpec.from_zoos(collection.zoos)
        ghns = {}
        for kind in ("ghn", "ghn-lowrank"):
            torch.manual_seed(0)
            ghns[kind] = GraphHyperNetwork(load_config(None, kind).ghn_config(cond)).eval()
    rows = []
    print(f"{'zoo':16s} {'architecture':44s} {'params':>9s} {'random ms':>10s} " +
          " ".join(f"{k + ' ms':>16s}" for k in ghns) + "  ratio")
    for spec, arch, task_args, temp, load in architectures(collection):
        zoo = spec.name
        if not all(zoo in g.conditions.zoos for g in ghns.values()):
            continue
        task = tasks.load(spec.task, task_args)
        knobs = {k: v for k, v in arch.items() if k != "family"}
        init = spec.model.init

        def fresh():
            return nets.build(arch["family"], task, **knobs)

        def random_init():
            nets.init_(fresh(), 0, init)

        row = {"zoo": zoo, "arch": arch, "params": sum(q.numel() for q in fresh().parameters())}
        for fn in (random_init, *[lambda g=g: predict_init(fresh(), g, zoo=zoo, temperature=temp, load=load)
                                  for g in ghns.values()]):
            fn()  # warm-up (first trace, allocator)
        row["random_ms"] = _median_ms(random_init, a.repeats)
        for name, g in ghns.items():
            row[f"{name}_ms"] = _median_ms(lambda: predict_init(fresh(), g, zoo=zoo, temperature=temp, load=load),
                                           a.repeats)
        first = next(iter(ghns))
        row["ratio"] = row[f"{first}_ms"] / row["random_ms"]
        rows.append(row)
        label = ",".join(f"{k}={v}" for k, v in {**knobs, **task_args}.items())
        print(f"{zoo:16s} {arch['family'] + ' ' + label:44.44s} {row['params']:9,d} {row['random_ms']:10.2f} " +
              " ".join(f"{row[k + '_ms']:16.2f}" for k in ghns) + f"  {row['ratio']:.1f}x", flush=True)
    if not rows:
        print("no architecture of the collection is known to the hypernetwork", file=sys.stderr)
        return 1
    first = next(iter(ghns))
    summary = {
        "bench": "predict_latency",
        "hypernets": {k: {"n_params": g.n_params(), "decoder": getattr(g.config, "decoder", "diffusion")}
                      for k, g in ghns.items()},
        "median_ms": statistics.median(r[f"{first}_ms"] for r in rows),
        "median_ms_by_hypernet": {k: statistics.median(r[f"{k}_ms"] for r in rows) for k in ghns},
        "median_random_init_ms": statistics.median(r["random_ms"] for r in rows),
        "median_ratio_vs_random_init": statistics.median(r["ratio"] for r in rows),
        "max_ms": max(r[f"{first}_ms"] for r in rows),
        "threads": a.threads,
        "rows": rows,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
