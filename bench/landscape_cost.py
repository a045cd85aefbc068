"""Cost of the Hessian metrics: 16 members computed together vs one model at a time.

A population of 16 MLPs on mnist1d (width 32, depth 2, 4 seeds x 4 learning rates, SGD with
momentum 0.9, batch 128) is trained for one epoch so the Hessian is not that of the
initialization. Then `zoo.landscape.hessian_metrics` (top eigenvalue by power iteration +
Hutchinson trace) runs on the same training samples (`--batches` batches of 128
concatenated) two ways, in the same run:
- together: once on the 16-member Population (one stacked double-backward graph);
- one at a time: on 16 Populations of one member each, holding the same trained weights.
Both sides use the same fixed number of HVPs (tol = 0: exactly `iters` power iterations and
`probes` Rademacher probes per member), so the work is equal. Each side is warmed up first on
a throwaway call; graph construction is timed (it is part of the metric's cost), building the
populations is not. The two sides alternate `--repeats` times (default 3) and each reports its
minimum, which damps load from other processes.

How to read it: `speedup` = one-at-a-time seconds / together seconds, measured side by side, so
it holds on a busy or slow machine where the absolute seconds do not. `seconds_per_cell` scales
the together time to one phase-plane cell of 3 seeds (together_s * 3 / 16): the Hessian cost a
metrics stage pays per cell at these settings. The agreement columns check that both ways
compute the same numbers: hessian_metrics seeds every member's random vectors by its model id,
so the two ways differ only by float rounding (top eigenvalue relative difference, trace
difference in combined standard errors); the script exits 1 if the eigenvalues differ by more
than 1e-2 relative or a trace by more than 4 standard errors. The last stdout line is JSON.

Threads default to 1, the pipeline's `compute.threads_per_worker`; on these tiny ops a second
intra-op thread mostly adds synchronisation, and is badly hurt when the machine is busy.

    python bench/landscape_cost.py --quick     # 20 power iterations, 20 probes, 4 batches
    python bench/landscape_cost.py             # 100 power iterations, 100 probes, 8 batches
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time

import torch

from zoo import tasks
from zoo.landscape import hessian_metrics
from zoo.train import MemberConfig, Population

TASK = "mnist1d"
ARCH = {"family": "mlp", "width": 32, "depth": 2}
INIT = "kaiming_uniform"
SEEDS = (0, 1, 2, 3)
LRS = (0.01, 0.03, 0.1, 0.3)
BATCH_SIZE = 128
COMMON = {"optimizer": "sgd", "momentum": 0.9, "batch_size": BATCH_SIZE, "epochs": 1, "schedule": "constant"}
CELL_SEEDS = 3  # seeds per phase-plane cell in the default zoo
EIG_RTOL = 1e-2
TRACE_Z = 4.0


def make_members() -> list[MemberConfig]:
    return [MemberConfig(f"s{s}-lr{lr:g}", s, lr) for s, lr in itertools.product(SEEDS, LRS)]


def trained_population(task) -> Population:
    pop = Population(task, ARCH, INIT, COMMON, make_members())
    pop.train_epoch(1)
    return pop


def solo_populations(pop: Population) -> list[Population]:
    """One Population per member, holding that member's trained weights."""
    solos = []
    for i, m in enumerate(pop.members):
        solo = Population(pop.task, pop.arch, pop.init, pop.common, [m])
        solo.params = {k: v[i : i + 1].detach().clone().requires_grad_(True) for k, v in pop.params.items()}
        solos.append(solo)
    return solos


def warm_up(pop: Population, solos: list[Population], x, y) -> None:
    """A throwaway call of each side on one batch, 2 iterations and 2 probes."""
    hessian_metrics(pop, x[:BATCH_SIZE], y[:, :BATCH_SIZE], iters=2, probes=2, tol=0.0)
    hessian_metrics(solos[0], x[:BATCH_SIZE], y[0, :BATCH_SIZE], iters=2, probes=2, tol=0.0)


def time_together(pop: Population, x, y, iters: int, probes: int) -> tuple[float, dict]:
    start = time.perf_counter()
    out = hessian_metrics(pop, x, y, iters=iters, probes=probes, tol=0.0)
    return time.perf_counter() - start, out


def time_one_at_a_time(solos: list[Population], x, y, iters: int, probes: int) -> tuple[float, dict]:
    outs = []
    start = time.perf_counter()
    for i, solo in enumerate(solos):
        outs.append(hessian_metrics(solo, x, y[i], iters=iters, probes=probes, tol=0.0))
    elapsed = time.perf_counter() - start
    return elapsed, {k: torch.cat([o[k] for o in outs]) for k in outs[0]}


def print_table(members: list[MemberConfig], tog: dict, one: dict, eig_rel: torch.Tensor, z: torch.Tensor) -> None:
    head = (f"{'member':>12} {'eig_tog':>9} {'eig_one':>9} {'eig_rel':>8} "
            f"{'tr_tog':>9} {'tr_one':>9} {'tr_se':>7} {'tr_z':>6}")
    print(head)
    print("-" * len(head))
    for i, m in enumerate(members):
        print(f"{m.model_id:>12} {tog['top_eigenvalue'][i]:>9.4f} {one['top_eigenvalue'][i]:>9.4f} "
              f"{eig_rel[i]:>8.1e} {tog['trace'][i]:>9.3f} {one['trace'][i]:>9.3f} "
              f"{tog['trace_stderr'][i]:>7.3f} {z[i]:>6.2f}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="20 iterations, 20 probes, 4 batches (default 100, 100, 8)")
    p.add_argument("--iters", type=int, default=None, help="power iterations per member (overrides --quick)")
    p.add_argument("--probes", type=int, default=None, help="Hutchinson probes per member (overrides --quick)")
    p.add_argument("--batches", type=int, default=None, help="training batches of 128 (overrides --quick)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats of each side; the minimum is reported")
    args = p.parse_args(argv)
    args.iters = args.iters or (20 if args.quick else 100)
    args.probes = args.probes or (20 if args.quick else 100)
    args.batches = args.batches or (4 if args.quick else 8)
    if min(args.iters, args.probes, args.batches, args.threads, args.repeats) < 1:
        p.error("--iters, --probes, --batches, --threads and --repeats must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    task = tasks.load(TASK)
    pop = trained_population(task)
    n = args.batches * BATCH_SIZE
    x, y = pop.x[:n], pop.y[:, :n]  # (n, 1, 40), (16, n): the first training batches, fixed
    solos = solo_populations(pop)
    M = len(pop.members)
    print(f"task {TASK}, mlp width {ARCH['width']} depth {ARCH['depth']}, {M} members trained 1 epoch, "
          f"{n} samples ({args.batches} x {BATCH_SIZE}), {args.iters} power iterations + {args.probes} probes "
          f"per member, tol 0, torch {torch.__version__}, {args.threads} thread(s), forward {pop.vectorized_by}")

    warm_up(pop, solos, x, y)
    together, one_at_a_time = [], []
    for _ in range(args.repeats):  # interleaved, so a burst of load elsewhere hits both sides
        t, tog = time_together(pop, x, y, args.iters, args.probes)
        o, one = time_one_at_a_time(solos, x, y, args.iters, args.probes)
        together.append(t)
        one_at_a_time.append(o)
    together_s, one_s = min(together), min(one_at_a_time)

    eig_rel = (tog["top_eigenvalue"] - one["top_eigenvalue"]).abs() / one["top_eigenvalue"].abs()
    z = (tog["trace"] - one["trace"]).abs() / (tog["trace_stderr"] ** 2 + one["trace_stderr"] ** 2).sqrt()
    print_table(pop.members, tog, one, eig_rel, z)
    speedup = one_s / together_s
    print(f"together {together_s:.3f} s, one at a time {one_s:.3f} s (min of {args.repeats}), speedup {speedup:.2f}x, "
          f"{together_s * CELL_SEEDS / M:.3f} s per cell of {CELL_SEEDS} seeds")

    max_rel, max_z = float(eig_rel.max()), float(z.max())
    if not (max_rel <= EIG_RTOL and max_z <= TRACE_Z):  # NaN fails too
        print(f"FAIL: the two ways disagree: top eigenvalue max relative difference {max_rel:.2e} "
              f"(limit {EIG_RTOL:g}), trace max {max_z:.2f} standard errors (limit {TRACE_Z:g})", file=sys.stderr)
        return 1
    print(json.dumps({
        "speedup": round(speedup, 4),
        "seconds_per_cell": round(together_s * CELL_SEEDS / M, 4),
        "together_s": round(together_s, 4),
        "one_at_a_time_s": round(one_s, 4),
        "max_eig_rel_diff": float(f"{max_rel:.3g}"),
        "max_trace_z": float(f"{max_z:.3g}") if math.isfinite(max_z) else None,
        "members": M,
        "arch": ARCH,
        "samples": n,
        "iters": args.iters,
        "probes": args.probes,
        "tol": 0.0,
        "threads": args.threads,
        "repeats": args.repeats,
        "forward": pop.vectorized_by,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
