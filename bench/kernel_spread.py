"""How much the zoo's own numbers move when only the CPU kernels change, and what narrows it.

The same members of the default zoo (MLPs on MNIST-1D, SGD with momentum 0.9, lr 0.05, seeds 0-2,
widths 8 / 64 / 256, batch sizes 16 / 128) are trained in fresh processes under several kernel
settings of this one machine:

- `threads=1` (the baseline: the build's `compute.threads_per_worker: 1`), `threads=2`;
- `capability=default`: ATEN_CPU_CAPABILITY=default, torch's non-vectorized kernels, which sum in
  another order: the nearest this machine gets to another CPU's kernels;
- `deterministic`: torch.use_deterministic_algorithms(True), 1 thread.

Each setting is compared with the baseline: are the final weights bitwise equal, the largest
relative weight difference, and the largest change of a member's test accuracy, set beside the
seed-to-seed spread (standard deviation of test accuracy over the 3 seeds of a cell), cell by
cell: that spread is what a phase label's margin is measured in. The last stdout line is JSON.

    python bench/kernel_spread.py --quick     # 5 epochs
    python bench/kernel_spread.py             # 40 epochs, the default zoo's budget
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SETTINGS = {
    "threads=1": ({}, 1, False),
    "threads=2": ({}, 2, False),
    "capability=default": ({"ATEN_CPU_CAPABILITY": "default"}, 1, False),
    "deterministic": ({}, 1, True),
}
WIDTHS = (8, 64, 256)
BATCHES = (16, 128)
SEEDS = (0, 1, 2)


def child(out: Path, epochs: int, threads: int, deterministic: bool) -> None:
    """Train every (width, batch) population and write final weights (npz, no pickle) + test accuracies."""
    import torch

    from zoo import tasks
    from zoo.machine import machine_info
    from zoo.train import MemberConfig, Population, flat_weights

    torch.set_num_threads(threads)
    if deterministic:
        torch.use_deterministic_algorithms(True)
    task = tasks.load("mnist1d")
    arrays, accs = {}, {}
    for width, batch in itertools.product(WIDTHS, BATCHES):
        common = {"optimizer": "sgd", "momentum": 0.9, "batch_size": batch, "epochs": epochs, "schedule": "constant"}
        members = [MemberConfig(f"s{s}", s, 0.05) for s in SEEDS]
        res = Population(task, {"family": "mlp", "width": width, "depth": 2}, "kaiming_uniform", common,
                         members).fit([epochs])
        for s, r in zip(SEEDS, res):
            key = f"w{width}-b{batch}-s{s}"
            arrays[key] = flat_weights(r.checkpoints[epochs]["state"])
            accs[key] = r.checkpoints[epochs]["metrics"]["test_acc"]
    np.savez(out / "weights.npz", **arrays)
    (out / "acc.json").write_text(json.dumps({"acc": accs, "machine": machine_info()}))


def run_setting(name: str, epochs: int, root: Path) -> tuple[dict, dict, float]:
    env_extra, threads, det = SETTINGS[name]
    out = root / name.replace("=", "_")
    out.mkdir()
    env = {**os.environ, **env_extra, "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, __file__, "--child", str(out), "--epochs", str(epochs), "--threads", str(threads)]
    if det:
        cmd.append("--deterministic")
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True)
    with np.load(out / "weights.npz", allow_pickle=False) as z:
        weights = {k: z[k] for k in z.files}
    doc = json.loads((out / "acc.json").read_text())
    return weights, doc, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--child")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--deterministic", action="store_true")
    a = ap.parse_args()
    epochs = a.epochs or (5 if a.quick else 40)
    if a.child:
        child(Path(a.child), epochs, a.threads, a.deterministic)
        return
    with tempfile.TemporaryDirectory() as tmp:
        runs = {name: run_setting(name, epochs, Path(tmp)) for name in SETTINGS}
    base_w, base_doc, _ = runs["threads=1"]
    base_acc = base_doc["acc"]
    cells = sorted({k.rsplit("-s", 1)[0] for k in base_acc})
    seed_sd = {c: float(np.std([base_acc[f"{c}-s{s}"] for s in SEEDS], ddof=1)) for c in cells}
    print(f"machine: {base_doc['machine']}; {epochs} epochs; seed-to-seed sd of test acc per cell: "
          + ", ".join(f"{c} {v:.4f}" for c, v in seed_sd.items()))
    report = {}
    for name, (w, doc, secs) in runs.items():
        rel = max(float(np.abs(w[k].astype(np.float64) - base_w[k]).max() / max(np.abs(base_w[k]).max(), 1e-30))
                  for k in base_w)
        bitwise = all(np.array_equal(w[k], base_w[k]) for k in base_w)
        dacc = {k: abs(doc["acc"][k] - base_acc[k]) for k in base_acc}
        per_cell = {c: {"max_test_acc_diff": max(dacc[f"{c}-s{s}"] for s in SEEDS), "seed_sd": seed_sd[c]} for c in cells}
        for c, v in per_cell.items():
            v["in_seed_sd"] = v["max_test_acc_diff"] / v["seed_sd"] if v["seed_sd"] else 0.0
        worst = max(cells, key=lambda c: per_cell[c]["in_seed_sd"])
        report[name] = {"bitwise_equal": bitwise, "max_rel_weight_diff": rel, "max_test_acc_diff": max(dacc.values()),
                        "max_in_seed_sd": per_cell[worst]["in_seed_sd"], "worst_cell": worst, "cells": per_cell,
                        "seconds": secs}
        print(f"{name:>20}: bitwise {'yes' if bitwise else 'no ':>3}  max rel weight diff {rel:.2e}  "
              f"max |d test_acc| {max(dacc.values()):.4f}; per cell |d test_acc| / seed sd: "
              + ", ".join(f"{c} {v['max_test_acc_diff']:.4f}/{v['seed_sd']:.4f}" for c, v in per_cell.items())
              + f"  {secs:.0f} s")
    print(json.dumps({"epochs": epochs, "machine": base_doc["machine"], "settings": report}))


if __name__ == "__main__":
    main()
