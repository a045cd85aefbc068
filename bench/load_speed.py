"""Seconds to load every weight of one architecture of a built zoo as one (N, P) tensor.

What a weight-space-learning user does first with a big zoo (the issue's snippet):

    ds = zoo.open("build/phases", "mlp_mnist1d_10k")
    W = ds.filter(lambda r: r["arch_id"] == a)["weights"][:]      # (N, P) torch tensor

The run uses a fresh `datasets` cache folder (HF_DATASETS_CACHE in a temporary directory), so
its first repeat is a cold first session: the parquet files are converted to an arrow cache and
the filter's result is computed and cached. The later repeats open the dataset again (what a
second session on the same machine sees). Each repeat times:

- `open`: zoo.open (parquet -> arrow cache on the first run, memory-mapped after);
- `first`: the snippet's filter + column read (cached by `datasets` after the cold session);
- `again`: the same snippet once more in the same session ("after the first load": the goal < 1 s);
- `columns`: the faster form `ds.filter(f, input_columns="arch_id")`, which reads only the id
  column instead of formatting every row's weights as a tensor.

The cold session is reported as measured; the others as a median over the later repeats with a
bootstrap 95% interval (bench/stats.py). Last stdout line: JSON.

    python bench/load_speed.py [--root build/phases] [--zoo mlp_mnist1d_10k] [--repeats 5]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.stats import median_ci, rounded  # noqa: E402


def one_repeat(root: str, name: str, arch: str | None) -> tuple[dict, str, tuple[int, int]]:
    import zoo

    t0 = time.perf_counter()
    ds = zoo.open(root, name)
    t_open = time.perf_counter() - t0
    a = arch or ds[0]["arch_id"]
    t0 = time.perf_counter()
    W = ds.filter(lambda r: r["arch_id"] == a)["weights"][:]
    t_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    W2 = ds.filter(lambda r: r["arch_id"] == a)["weights"][:]
    t_again = time.perf_counter() - t0
    t0 = time.perf_counter()
    W3 = ds.filter(lambda i: i == a, input_columns="arch_id")["weights"][:]
    t_cols = time.perf_counter() - t0
    assert W.shape == W2.shape == W3.shape and W.ndim == 2, (W.shape, W3.shape)
    return {"open": t_open, "first": t_first, "again": t_again, "columns": t_cols}, a, tuple(W.shape)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="build/phases")
    ap.add_argument("--zoo", default="mlp_mnist1d_10k")
    ap.add_argument("--arch", help="arch_id to load (default: the first row's)")
    ap.add_argument("--repeats", type=int, default=6, help="the cold session + warm ones (default 6)")
    args = ap.parse_args()
    if args.repeats < 2:
        ap.error("--repeats must be >= 2 (a cold session, then warm ones)")
    cache = tempfile.TemporaryDirectory(prefix="load_speed_")
    os.environ["HF_DATASETS_CACHE"] = cache.name  # before `datasets` is imported: a cold first session
    import torch

    from zoo.machine import machine_info

    times: dict[str, list[float]] = {}
    shape = None
    for r in range(args.repeats):
        t, arch, shape = one_repeat(args.root, args.zoo, args.arch)
        args.arch = arch
        for k, v in t.items():
            times.setdefault(k, []).append(v)
        print(f"repeat {r + 1}/{args.repeats}: " + ", ".join(f"{k} {v:.3f} s" for k, v in t.items()), flush=True)
    cold = {k: v[0] for k, v in times.items()}
    stats = {k: median_ci(v[1:]) for k, v in times.items()}
    rows = sum(1 for _ in Path(args.root, "data", args.zoo).glob("models-*.parquet"))
    print(f"\narch {args.arch}: W {shape[0]} x {shape[1]} float32 ({shape[0] * shape[1] * 4 / 2**20:.1f} MiB); "
          f"{rows} model files; load average {os.getloadavg()[0]:.1f}")
    for k, (m, lo, hi) in stats.items():
        print(f"  {k:>8}: cold {cold[k]:.3f} s; warm {m:.3f} s [{lo:.3f}, {hi:.3f}]")
    cache.cleanup()
    print(json.dumps({"benchmark": "load_speed", "zoo": args.zoo, "arch_id": args.arch, "shape": list(shape),
                      "cold_seconds": {k: round(v, 4) for k, v in cold.items()},
                      "seconds": {k: rounded(v, 4) for k, v in stats.items()}, "repeats": args.repeats,
                      "load_average": round(os.getloadavg()[0], 2), "machine": machine_info(torch.get_num_threads())}))


if __name__ == "__main__":
    main()
