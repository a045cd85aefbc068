"""Cost of the Hessian metrics: 16 members batched together vs a plain PyTorch loop.

A population of 16 MLPs on mnist1d (width 32, depth 2, 4 seeds x 4 learning rates, SGD with
momentum 0.9, batch 128) is trained for one epoch so the Hessian is not that of the
initialization. Then every member's top Hessian eigenvalue (power iteration) and Hutchinson
trace (Rademacher probes) of its training loss on the same samples (`--batches` batches of 128
concatenated) are computed two ways, in the same run:
- batched: `zoo.landscape.hessian_metrics` once on the 16-member Population (one stacked
  double-backward graph, every HVP serves all members);
- plain loop (the baseline a user would write): for each member an ordinary `nn.Module` holding
  its trained weights (`pop.member_module(i)`, eval mode), its cross-entropy on the samples,
  `torch.autograd.grad(..., create_graph=True)` on the module's own parameters once, then every
  HVP is a second `torch.autograd.grad` through that gradient graph (double backward).
Both run the same algorithm with the same numbers: exactly `iters` power iterations (tol 0) and
`probes` probes per member. The plain loop also draws the same random vectors: hessian_metrics
gives member m its own generators seeded by derived_seed("hessian_eigenvalue" / "hessian_trace",
0, model_id) and draws each parameter tensor in parameter order, which the loop reproduces; inner
products are accumulated in float64 on both sides. Module construction is not timed; the
forward, the gradient graph and the HVPs are, on both sides. Each side is warmed up on a
throwaway call, then the two alternate `--repeats` times (default 7, 3 with --quick).

How to read it: `speedup` = plain-loop seconds / batched seconds of the same repeat; the median
over repeats is reported with a bootstrap 95% interval over the repeats (bench/stats.py, fixed
seed). It is measured side by side, so it holds on a busy machine where absolute seconds do
not. `seconds_per_cell` scales the batched median to one phase-plane cell of 3 seeds
(batched_s * 3 / 16). Threads default to 1, the build's `compute.threads_per_worker`
(`--threads N` for another setting); the machine block in the JSON names the CPU.

Agreement check (the script exits 1 when it fails): both ways do the same arithmetic on the
same vectors, differing only in kernel order (baddbmm over stacked members vs one addmm per
member), so one float32 HVP differs by a few roundings of its accumulated products (~1e-7
relative). The Rayleigh quotient is first-order insensitive to an error in the vector and
|Δλ| <= ||ΔH|| for an error in the operator, so the top eigenvalues agree to ~1e-7..1e-6
relative whatever the iteration count (measured: <= 2e-7, --quick and full). Limit
EIG_RTOL = 1e-5: a 50x margin over rounding, and far below what a different operator does
(another loss, weights or samples: dropping one of 4 batches moves λ by 2e-3..3e-2 relative,
a neighbour member's weights by 40-70%; a different start vector moved an unconverged
member's λ by 9e-2 at 20 iterations, while a converged λ does not depend on it). Each
probe's vᵀHv carries the same relative rounding of its own size, so traces are compared
relative to the RMS probe value (the scale of the summed terms; their mean could be near 0):
limit TRACE_RTOL = 1e-5, for the same reason (measured: <= 5e-8). This check does see the
probes: another probe set moves a trace by about one standard error, ~RMS/sqrt(probes),
7e-3..5e-2 of the RMS at 20 probes.

The last stdout line is one JSON object: `speedup` {median, ci95}, the medians of both sides'
seconds, the per-repeat ratios, the largest differences, the `machine` block and `load_avg_1m`
(the 1-minute load average at start and end: other processes on the machine).

    python bench/landscape_cost.py --quick     # 20 power iterations, 20 probes, 4 batches, 3 repeats
    python bench/landscape_cost.py             # 100 power iterations, 100 probes, 8 batches, 7 repeats
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from stats import median_ci, rounded  # noqa: E402
from zoo import tasks  # noqa: E402
from zoo.landscape import hessian_metrics  # noqa: E402
from zoo.machine import machine_info  # noqa: E402
from zoo.train import MemberConfig, Population, derived_seed  # noqa: E402

TASK = "mnist1d"
ARCH = {"family": "mlp", "width": 32, "depth": 2}
INIT = "kaiming_uniform"
SEEDS = (0, 1, 2, 3)
LRS = (0.01, 0.03, 0.1, 0.3)
BATCH_SIZE = 128
COMMON = {"optimizer": "sgd", "momentum": 0.9, "batch_size": BATCH_SIZE, "epochs": 1, "schedule": "constant"}
CELL_SEEDS = 3  # seeds per phase-plane cell in the default zoo
HESSIAN_SEED = 0  # hessian_metrics' default `seed`
EIG_RTOL = 1e-5  # top eigenvalue, relative (see the module docstring)
TRACE_RTOL = 1e-5  # trace difference / RMS probe value (see the module docstring)


def make_members() -> list[MemberConfig]:
    return [MemberConfig(f"s{s}-lr{lr:g}", s, lr) for s, lr in itertools.product(SEEDS, LRS)]


def trained_population(task) -> Population:
    pop = Population(task, ARCH, INIT, COMMON, make_members())
    pop.train_epoch(1)
    return pop


# ---- the plain loop: one ordinary module at a time ------------------------------------------
def _dot(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    """Inner product over all parameter tensors, accumulated in float64."""
    return float(sum((x.double() * y.double()).sum() for x, y in zip(a, b)))


def _normalized(v: list[torch.Tensor]) -> list[torch.Tensor]:
    scale = torch.tensor(1.0 / max(math.sqrt(_dot(v, v)), 1e-30), dtype=v[0].dtype)
    return [t * scale for t in v]


def plain_hessian_metrics(net: nn.Module, model_id: str, x: torch.Tensor, y: torch.Tensor,
                          iters: int, probes: int) -> dict[str, float]:
    """Top eigenvalue (exactly `iters` power iterations) and Hutchinson trace (`probes`
    Rademacher probes) of one module's mean cross-entropy on (x, y), by double backward.

    x: (N, 1, 40), y: (N,). Random vectors: the same generators and draw order as hessian_metrics.
    """
    net.eval()
    params = [p for p in net.parameters() if p.requires_grad]
    loss = F.cross_entropy(net(x), y)
    grads = torch.autograd.grad(loss, params, create_graph=True)

    def hvp(v: list[torch.Tensor]) -> list[torch.Tensor]:
        return list(torch.autograd.grad(grads, params, grad_outputs=v, retain_graph=True))

    g = torch.Generator().manual_seed(derived_seed("hessian_eigenvalue", HESSIAN_SEED, model_id))
    v = _normalized([torch.randn(tuple(p.shape), generator=g) for p in params])
    eig = float("nan")
    for _ in range(iters):
        hv = hvp(v)
        eig = _dot(hv, v)  # Rayleigh quotient, |v| = 1
        v = _normalized(hv)

    g = torch.Generator().manual_seed(derived_seed("hessian_trace", HESSIAN_SEED, model_id))
    samples = []
    for _ in range(probes):
        v = [(torch.randint(0, 2, tuple(p.shape), generator=g) * 2 - 1).float() for p in params]
        samples.append(_dot(hvp(v), v))  # vᵀ H v
    s = torch.tensor(samples, dtype=torch.float64)  # (probes,)
    stderr = float(s.std() / math.sqrt(len(samples))) if len(samples) > 1 else float("nan")
    return {"top_eigenvalue": eig, "trace": float(s.mean()), "trace_stderr": stderr,
            "probe_rms": float(s.square().mean().sqrt())}


def time_plain(nets: list[nn.Module], ids: list[str], x, y, iters: int, probes: int) -> tuple[float, dict]:
    outs = []
    start = time.perf_counter()
    for i, (net, model_id) in enumerate(zip(nets, ids)):
        outs.append(plain_hessian_metrics(net, model_id, x, y[i], iters, probes))
    elapsed = time.perf_counter() - start
    return elapsed, {k: torch.tensor([o[k] for o in outs], dtype=torch.float64) for k in outs[0]}


def time_batched(pop: Population, x, y, iters: int, probes: int) -> tuple[float, dict]:
    start = time.perf_counter()
    out = hessian_metrics(pop, x, y, iters=iters, probes=probes, tol=0.0, seed=HESSIAN_SEED)
    elapsed = time.perf_counter() - start
    return elapsed, {k: v.double() for k, v in out.items()}


def warm_up(pop: Population, nets: list[nn.Module], x, y) -> None:
    """A throwaway call of each side on one batch, 2 iterations and 2 probes."""
    hessian_metrics(pop, x[:BATCH_SIZE], y[:, :BATCH_SIZE], iters=2, probes=2, tol=0.0)
    plain_hessian_metrics(nets[0], "warmup", x[:BATCH_SIZE], y[0, :BATCH_SIZE], iters=2, probes=2)


# ---- output ----------------------------------------------------------------------------------
def print_table(members: list[MemberConfig], bat: dict, pl: dict, eig_rel: torch.Tensor,
                tr_rel: torch.Tensor) -> None:
    head = (f"{'member':>12} {'eig_batch':>10} {'eig_plain':>10} {'eig_rel':>8} "
            f"{'tr_batch':>9} {'tr_plain':>9} {'tr_se':>7} {'tr_rel':>8}")
    print(head)
    print("-" * len(head))
    for i, m in enumerate(members):
        print(f"{m.model_id:>12} {bat['top_eigenvalue'][i]:>10.4f} {pl['top_eigenvalue'][i]:>10.4f} "
              f"{eig_rel[i]:>8.1e} {bat['trace'][i]:>9.3f} {pl['trace'][i]:>9.3f} "
              f"{pl['trace_stderr'][i]:>7.3f} {tr_rel[i]:>8.1e}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="20 iterations, 20 probes, 4 batches (default 100, 100, 8)")
    p.add_argument("--iters", type=int, default=None, help="power iterations per member (overrides --quick)")
    p.add_argument("--probes", type=int, default=None, help="Hutchinson probes per member (overrides --quick)")
    p.add_argument("--batches", type=int, default=None, help="training batches of 128 (overrides --quick)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1, the build's)")
    p.add_argument("--repeats", type=int, default=None,
                   help="alternating timed repeats of each side (default 7, 3 with --quick)")
    args = p.parse_args(argv)
    defaults = {"iters": (20, 100), "probes": (20, 100), "batches": (4, 8), "repeats": (3, 7)}  # (quick, full)
    for name, (quick, full) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    if min(args.iters, args.probes, args.batches, args.threads, args.repeats) < 1:
        p.error("--iters, --probes, --batches, --threads and --repeats must be >= 1")
    if args.probes < 2:
        p.error("--probes must be >= 2 (a trace standard error needs two probes)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    machine = machine_info(torch_threads=args.threads)
    load_start = os.getloadavg()[0]
    task = tasks.load(TASK)
    pop = trained_population(task)
    n = args.batches * BATCH_SIZE
    x, y = pop.x[:n], pop.y[:, :n]  # (n, 1, 40), (16, n): the first training batches, fixed
    M = len(pop.members)
    ids = [m.model_id for m in pop.members]
    nets = [pop.member_module(i) for i in range(M)]  # ordinary modules, trained weights; not timed
    print(f"task {TASK}, mlp width {ARCH['width']} depth {ARCH['depth']}, {M} members trained 1 epoch, "
          f"{n} samples ({args.batches} x {BATCH_SIZE}), {args.iters} power iterations + {args.probes} probes "
          f"per member, tol 0, {args.repeats} repeats, forward {pop.vectorized_by}")
    print(f"machine: {machine['cpu']}, {machine['cores']} cores, torch {machine['torch']} "
          f"({machine['cpu_capability']}), {args.threads} torch thread(s)")

    warm_up(pop, nets, x, y)
    batched_s, plain_s = [], []
    for _ in range(args.repeats):  # alternating, so a burst of load elsewhere hits both sides
        t, bat = time_batched(pop, x, y, args.iters, args.probes)
        o, pl = time_plain(nets, ids, x, y, args.iters, args.probes)
        batched_s.append(t)
        plain_s.append(o)
    ratios = [o / t for o, t in zip(plain_s, batched_s)]
    speedup, b_med, p_med = median_ci(ratios), median_ci(batched_s), median_ci(plain_s)

    eig_rel = (bat["top_eigenvalue"] - pl["top_eigenvalue"]).abs() / pl["top_eigenvalue"].abs()
    tr_rel = (bat["trace"] - pl["trace"]).abs() / pl["probe_rms"]
    tr_z = (bat["trace"] - pl["trace"]).abs() / pl["trace_stderr"]
    print_table(pop.members, bat, pl, eig_rel, tr_rel)
    print("per repeat (plain s / batched s): "
          + ", ".join(f"{o:.3f}/{t:.3f}" for o, t in zip(plain_s, batched_s)))
    print(f"batched {b_med[0]:.3f} s, plain loop {p_med[0]:.3f} s (medians of {args.repeats}); speedup "
          f"{speedup[0]:.2f}x (95% CI {speedup[1]:.2f}-{speedup[2]:.2f}); "
          f"{b_med[0] * CELL_SEEDS / M:.3f} s per cell of {CELL_SEEDS} seeds")

    max_eig, max_tr, max_z = float(eig_rel.max()), float(tr_rel.max()), float(tr_z.max())
    if not (max_eig <= EIG_RTOL and max_tr <= TRACE_RTOL):  # NaN fails too
        worst_e = ids[int(eig_rel.nan_to_num(math.inf).argmax())]
        worst_t = ids[int(tr_rel.nan_to_num(math.inf).argmax())]
        print(f"FAIL: batched and plain loop disagree: top eigenvalue max relative difference {max_eig:.2e} "
              f"(member {worst_e}, limit {EIG_RTOL:g}), trace max difference {max_tr:.2e} of the RMS probe "
              f"value (member {worst_t}, limit {TRACE_RTOL:g})", file=sys.stderr)
        return 1
    print(json.dumps({
        "speedup": rounded(speedup, 3),
        "seconds_per_cell": round(b_med[0] * CELL_SEEDS / M, 4),
        "batched_s": rounded(b_med),
        "plain_loop_s": rounded(p_med),
        "speedup_per_repeat": [round(r, 4) for r in ratios],
        "baseline": "plain PyTorch loop: per member nn.Module, torch.autograd.grad double backward",
        "max_eig_rel_diff": float(f"{max_eig:.3g}"),
        "max_trace_rel_diff": float(f"{max_tr:.3g}"),
        "max_trace_diff_in_stderr": float(f"{max_z:.3g}") if math.isfinite(max_z) else None,
        "tolerances": {"eig_rel": EIG_RTOL, "trace_rel_rms_probe": TRACE_RTOL},
        "members": M,
        "arch": ARCH,
        "samples": n,
        "iters": args.iters,
        "probes": args.probes,
        "tol": 0.0,
        "threads": args.threads,
        "repeats": args.repeats,
        "forward": pop.vectorized_by,
        "machine": machine,
        "load_avg_1m": [round(load_start, 2), round(os.getloadavg()[0], 2)],  # start, end: other load
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
