"""Training throughput: the population trainer vs a plain one-model-at-a-time PyTorch loop.

Both sides train the *same* members (same init, data order, learning rate, SGD with momentum
0.9) on mnist1d, for 16 members (4 seeds x 4 learning rates) in each of four settings:
MLP width in {16, 64} x batch size in {32, 128}. The baseline is what a user would write: per
member an ordinary `nn.Module`, `torch.optim.SGD`, tensor-indexed batches from its own
data-order generator, trained one member after the other. Only the training epochs are timed
(no evaluation on either side, no construction), after a short warm-up of each side on a
throwaway copy; the two sides alternate `--repeats` times per setting (default 7, 3 with
--quick).

Threads: torch intra-op threads are set at start to `--threads` (default 1, the build's
`compute.threads_per_worker`), the headline; `--also-threads K` runs every setting again with K
threads, reported in the same JSON (default 0 = not run: on a shared 2-core machine under a
load of 5, two threads slowed the plain loop ~17x and the population ~8x, so that run took
minutes and measured the contention). Both are printed and recorded; the `machine` block
names the CPU.

How to read it: `speedup` = loop seconds / population seconds of the same repeat, measured side
by side, so it is meaningful even on a busy or slow machine; the absolute seconds are not. Each
setting reports the median speedup over repeats with a bootstrap 95% interval over the repeats
(bench/stats.py, fixed seed). `gflops` is the population trainer's achieved rate at its median
time from an analytic FLOP count (per sample, forward = 2 * sum(in * out) over the Linear
layers, a training step ~ 3x forward), and `frac` divides it by a dense 1024x1024 float32 matmul
rate measured in the same run at the same thread count. The last stdout line is one JSON object;
its top-level `speedup` is the smallest median over the settings at the headline thread count,
with that setting's interval and `gflops_fraction`; `runs` holds every thread count's settings,
`load_avg_1m` the 1-minute load average at start and end (other processes on the machine).

Correctness guard (exit status 1 on failure): a float64 oracle. Per setting both sides train
the same 16 members once more, untimed, in float64 (inits drawn in float32 as always, then
cast; `Population(dtype=torch.float64)`, the loop's modules `.double()`) for min(epochs, 2)
epochs, and EVERY member's every tensor must agree relative to its size:
max|pop - loop| / max|loop| <= ORACLE_RTOL = 1e-7; on failure the worst member and tensor are
named. Why float64 and these numbers: the two sides compute the same updates with different
kernels (baddbmm over stacked members vs one addmm per member), so they start one rounding
apart and training amplifies that. The lr-0.3 members at batch 32 are chaotic (momentum 0.9):
measured on this CPU, their float32 weights drift from ~1e-7 to O(1) relative within 2-3
epochs, as large as a real bug, so no fixed float32 tolerance on final weights separates code
from CPU for them (lr <= 0.1 members stay <= 4e-6). In float64 the same growth starts at 1e-16:
<= 4e-10 after 2 epochs (<= 6e-7 after 3, hence the cap), other members <= 1e-14. A real
mismatch (a member's lr off by 1%, its data order, momentum or init) moves trained weights by
>= 3e-2 relative after one epoch, and even an lr off by 1e-4 gives 7e-5 after one epoch at
batch 128, so 1e-7 sits 250x above the drift and far below a bug.
Two epochs cover the momentum buffer's first step and the epoch boundary (a second data
permutation). The float32 weights of the timed runs are compared too, every member and tensor,
and reported (`f32_max_rel_diff`, the worst member/tensor, and how many members differ by more
than 1e-3), as information: with the chaotic members that is a property of the CPU.

    python bench/train_throughput.py --quick     # 1 epoch per setting, 3 repeats
    python bench/train_throughput.py             # 3 epochs per setting, 7 repeats
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from stats import median_ci, rounded  # noqa: E402
from zoo import nets, tasks  # noqa: E402
from zoo.machine import machine_info  # noqa: E402
from zoo.tasks import Task  # noqa: E402
from zoo.train import MemberConfig, Population, derived_seed  # noqa: E402

TASK = "mnist1d"
DEPTH = 2
MOMENTUM = 0.9
INIT = "kaiming_uniform"
SEEDS = (0, 1, 2, 3)
LRS = (0.01, 0.03, 0.1, 0.3)
WIDTHS = (16, 64)
BATCH_SIZES = (32, 128)
ORACLE_RTOL = 1e-7  # float64 oracle, per tensor: max abs diff / max abs value (see the module docstring)
ORACLE_MAX_EPOCHS = 2  # the oracle trains min(epochs, 2) epochs (chaotic growth, see the docstring)
F32_REPORT = 1e-3  # float32 members beyond this relative difference are counted (reported, not gated)
WARMUP_FRACTION = 0.02  # data fraction of the throwaway population used for warm-up (80 samples)
WARMUP_STEPS = 3  # steps of the throwaway plain model used for warm-up


@dataclass
class Agreement:
    """The worst per-tensor relative difference of final weights over all members."""
    rel_diff: float
    member: str
    tensor: str
    abs_diff: float
    n_beyond: int  # members whose worst tensor differs by more than F32_REPORT


@dataclass
class SettingResult:
    threads: int
    width: int
    batch_size: int
    loop_s: list[float]  # per repeat
    population_s: list[float]  # per repeat
    gflops: float  # at the median population time
    fraction: float
    f32: Agreement  # the timed runs' float32 weights (reported)
    oracle: Agreement | None  # the float64 oracle (gated); None where not run

    @property
    def ratios(self) -> list[float]:
        return [lo / po for lo, po in zip(self.loop_s, self.population_s)]

    @property
    def speedup(self) -> tuple[float, float, float]:
        return median_ci(self.ratios)


# ---- configuration ---------------------------------------------------------------------------
def make_members() -> list[MemberConfig]:
    """4 seeds x 4 learning rates; member 0 is (seed 0, lr 0.01)."""
    return [MemberConfig(f"s{s}-lr{lr:g}", s, lr) for s, lr in itertools.product(SEEDS, LRS)]


def make_common(batch_size: int, epochs: int, data_fraction: float = 1.0) -> dict:
    return {"optimizer": "sgd", "momentum": MOMENTUM, "batch_size": batch_size, "epochs": epochs,
            "schedule": "constant", "data_fraction": data_fraction}


def build_net(task: Task, width: int, seed: int) -> nn.Module:
    return nets.init_(nets.build("mlp", task, width=width, depth=DEPTH), seed, INIT)


# ---- FLOPs -----------------------------------------------------------------------------------
def forward_flops_per_sample(net: nn.Module) -> int:
    return sum(2 * m.in_features * m.out_features for m in net.modules() if isinstance(m, nn.Linear))


def training_flops(net: nn.Module, n_samples: int, epochs: int, n_members: int) -> float:
    return 3.0 * forward_flops_per_sample(net) * n_samples * epochs * n_members


def matmul_peak_flops(size: int = 1024, seconds: float = 1.0) -> float:
    """FLOP/s of repeated dense float32 `a @ b` (warm-up, then about `seconds` of repeats)."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=g)
    b = torch.randn(size, size, generator=g)
    for _ in range(3):
        a @ b
    reps, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        a @ b
        reps += 1
    return 2.0 * size**3 * reps / elapsed


# ---- the plain loop --------------------------------------------------------------------------
class LoopMember:
    """One member trained the plain way: its own module, SGD optimizer and data-order generator."""

    def __init__(self, task: Task, width: int, member: MemberConfig, dtype: torch.dtype = torch.float32):
        self.model_id = member.model_id
        self.net = build_net(task, width, member.seed).to(dtype)
        self.opt = torch.optim.SGD(self.net.parameters(), lr=member.lr, momentum=MOMENTUM,
                                   weight_decay=member.weight_decay)
        self.order = torch.Generator().manual_seed(derived_seed("order", member.seed))

    def step(self, xb: torch.Tensor, yb: torch.Tensor) -> None:
        loss = F.cross_entropy(self.net(xb), yb)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def train_epoch(self, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> None:
        perm = torch.randperm(x.shape[0], generator=self.order)
        for s in range(0, x.shape[0], batch_size):
            idx = perm[s : s + batch_size]
            self.step(x[idx], y[idx])


def warm_up_loop(task: Task, width: int, batch_size: int) -> None:
    throwaway = LoopMember(task, width, MemberConfig("warmup", 12345, 0.01))
    for i in range(WARMUP_STEPS):
        sl = slice(i * batch_size, (i + 1) * batch_size)
        throwaway.step(task.x_train[sl], task.y_train[sl])


def time_loop(task: Task, width: int, batch_size: int, epochs: int,
              members: list[MemberConfig]) -> tuple[float, list[LoopMember]]:
    """Seconds to train every member one after the other (construction not timed)."""
    loop = [LoopMember(task, width, m) for m in members]
    start = time.perf_counter()
    for lm in loop:
        for _ in range(epochs):
            lm.train_epoch(task.x_train, task.y_train, batch_size)
    return time.perf_counter() - start, loop


# ---- the population --------------------------------------------------------------------------
def make_population(task: Task, width: int, common: dict, members: list[MemberConfig],
                    **kw) -> Population:
    return Population(task, {"family": "mlp", "width": width, "depth": DEPTH}, INIT, common, members, **kw)


def warm_up_population(task: Task, width: int, batch_size: int, members: list[MemberConfig]) -> None:
    """One epoch of a throwaway population on a tiny data subset (a few steps)."""
    pop = make_population(task, width, make_common(batch_size, 1, WARMUP_FRACTION), members)
    pop.train_epoch(1)


def time_population(task: Task, width: int, batch_size: int, epochs: int,
                    members: list[MemberConfig]) -> tuple[float, Population]:
    """Seconds of `train_epoch` for all epochs (construction and evaluation not timed)."""
    pop = make_population(task, width, make_common(batch_size, epochs), members)
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        pop.train_epoch(epoch)
    return time.perf_counter() - start, pop


# ---- one setting -----------------------------------------------------------------------------
def compare_weights(pop: Population, loop: list[LoopMember]) -> Agreement:
    """Every member's every tensor: max|pop - loop| / max|loop|; the worst one (NaN counts as worst)."""
    worst = Agreement(-1.0, "", "", 0.0, 0)
    n_beyond = 0
    for i, lm in enumerate(loop):
        ref = lm.net.state_dict()
        got = pop.member_state(i)
        if got.keys() != ref.keys():
            raise KeyError(f"state dicts differ in keys: {sorted(got)} vs {sorted(ref)}")
        member_worst = -1.0
        for k, r in ref.items():
            abs_diff = float((got[k].double() - r.double()).abs().max())
            rel = abs_diff / max(float(r.abs().max()), 1e-30)
            if rel != rel:
                rel = float("inf")  # NaN: the worst possible
            member_worst = max(member_worst, rel)
            if rel > worst.rel_diff:
                worst = Agreement(rel, lm.model_id, k, abs_diff, 0)
        n_beyond += member_worst > F32_REPORT
    worst.n_beyond = n_beyond
    return worst


def oracle_agreement(task: Task, width: int, batch_size: int, epochs: int,
                     members: list[MemberConfig]) -> Agreement:
    """Both sides trained untimed in float64 for `epochs` epochs; their worst relative difference."""
    pop = make_population(task, width, make_common(batch_size, epochs), members, dtype=torch.float64)
    loop = [LoopMember(task, width, m, dtype=torch.float64) for m in members]
    x, y = task.x_train.double(), task.y_train
    for epoch in range(1, epochs + 1):
        pop.train_epoch(epoch)
        for lm in loop:
            lm.train_epoch(x, y, batch_size)
    return compare_weights(pop, loop)


def run_setting(task: Task, width: int, batch_size: int, epochs: int, peak: float, repeats: int,
                threads: int, oracle: bool) -> SettingResult:
    """The two sides alternate `repeats` times, so a burst of other load on a shared machine
    hits both; each repeat gives one ratio. The float32 comparison uses the last repeat's weights;
    `oracle`: also run the float64 oracle (untimed)."""
    members = make_members()
    warm_up_loop(task, width, batch_size)
    warm_up_population(task, width, batch_size, members)
    loop_s, pop_s = [], []
    for _ in range(repeats):
        t, loop = time_loop(task, width, batch_size, epochs, members)
        loop_s.append(t)
        t, pop = time_population(task, width, batch_size, epochs, members)
        pop_s.append(t)
    f32 = compare_weights(pop, loop)
    flops = training_flops(loop[0].net, task.n_train, epochs, len(members))
    gflops = flops / median_ci(pop_s)[0] / 1e9
    check = oracle_agreement(task, width, batch_size, min(epochs, ORACLE_MAX_EPOCHS), members) if oracle else None
    return SettingResult(threads, width, batch_size, loop_s, pop_s, gflops, gflops * 1e9 / peak, f32, check)


def run_threads(task: Task, threads: int, epochs: int, repeats: int,
                oracle: bool) -> tuple[float, list[SettingResult]]:
    torch.set_num_threads(threads)
    peak = matmul_peak_flops()
    print(f"-- {threads} torch thread(s): matmul peak {peak / 1e9:.2f} GFLOP/s")
    results = [run_setting(task, width, batch_size, epochs, peak, repeats, threads, oracle)
               for width, batch_size in itertools.product(WIDTHS, BATCH_SIZES)]
    print_table(results, len(make_members()))
    return peak, results


# ---- output ----------------------------------------------------------------------------------
def print_table(results: list[SettingResult], n_members: int) -> None:
    head = (f"{'width':>5} {'batch':>5} {'members':>7} {'loop_s':>8} {'pop_s':>8} {'speedup':>7} "
            f"{'95% CI':>11} {'GFLOP/s':>8} {'frac':>6} {'f32_diff':>9} {'>1e-3':>5} {'f64_diff':>9}  worst f32")
    print(head)
    print("-" * len(head))
    for r in results:
        med, lo, hi = r.speedup
        f64 = f"{r.oracle.rel_diff:>9.2e}" if r.oracle is not None else f"{'-':>9}"
        print(f"{r.width:>5} {r.batch_size:>5} {n_members:>7} {median_ci(r.loop_s)[0]:>8.3f} "
              f"{median_ci(r.population_s)[0]:>8.3f} {med:>7.2f} {f'{lo:.2f}-{hi:.2f}':>11} {r.gflops:>8.3f} "
              f"{r.fraction:>6.3f} {r.f32.rel_diff:>9.2e} {r.f32.n_beyond:>5} {f64}  {r.f32.member} {r.f32.tensor}")


def block(peak: float, results: list[SettingResult]) -> dict:
    """One thread count's part of the JSON line."""
    worst = min(results, key=lambda r: r.speedup[0])
    settings = []
    for r in results:
        row = {
            "width": r.width, "batch_size": r.batch_size,
            "speedup": rounded(r.speedup, 3),
            "speedup_per_repeat": [round(x, 3) for x in r.ratios],
            "loop_s": rounded(median_ci(r.loop_s)),
            "population_s": rounded(median_ci(r.population_s)),
            "gflops": round(r.gflops, 3), "gflops_fraction": round(r.fraction, 5),
            "f32_max_rel_diff": float(f"{r.f32.rel_diff:.3g}"),
            "f32_worst": f"{r.f32.member} {r.f32.tensor}",
            "f32_members_beyond_1e-3": r.f32.n_beyond,
        }
        if r.oracle is not None:
            row["f64_oracle_max_rel_diff"] = float(f"{r.oracle.rel_diff:.3g}")
            row["f64_oracle_worst"] = f"{r.oracle.member} {r.oracle.tensor}"
        settings.append(row)
    return {
        "threads": results[0].threads,
        "speedup": rounded(worst.speedup, 3),
        "worst_setting": {"width": worst.width, "batch_size": worst.batch_size},
        "gflops_fraction": round(worst.fraction, 5),
        "peak_gflops": round(peak / 1e9, 3),
        "settings": settings,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="1 epoch per setting, 3 repeats (default 3 epochs, 7)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per setting (overrides --quick)")
    p.add_argument("--repeats", type=int, default=None, help="alternating runs per side (overrides --quick)")
    p.add_argument("--threads", type=int, default=1, help="torch threads of the headline run (default 1, the build's)")
    p.add_argument("--also-threads", type=int, default=0,
                   help="a second run at this thread count, e.g. 2 (default 0 = none)")
    args = p.parse_args(argv)
    if args.epochs is None:
        args.epochs = 1 if args.quick else 3
    if args.repeats is None:
        args.repeats = 3 if args.quick else 7
    if min(args.epochs, args.repeats, args.threads) < 1 or args.also_threads < 0:
        p.error("--epochs, --repeats and --threads must be >= 1, --also-threads >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    machine = machine_info(torch_threads=args.threads)
    load_start = os.getloadavg()[0]
    task = tasks.load(TASK)
    thread_counts = [args.threads] + ([args.also_threads] if args.also_threads not in (0, args.threads) else [])
    print(f"task {TASK}, mlp depth {DEPTH}, {len(make_members())} members, {args.epochs} epoch(s), "
          f"{args.repeats} repeats; baseline: plain PyTorch loop, one nn.Module + torch.optim.SGD per member")
    print(f"machine: {machine['cpu']}, {machine['cores']} cores, torch {machine['torch']} "
          f"({machine['cpu_capability']}); torch threads {', then '.join(map(str, thread_counts))} "
          f"(headline {args.threads})")
    # the float64 oracle runs once, with the headline thread count
    runs = [run_threads(task, t, args.epochs, args.repeats, oracle=(j == 0)) for j, t in enumerate(thread_counts)]
    torch.set_num_threads(args.threads)

    bad = [r for r in runs[0][1] if not r.oracle.rel_diff <= ORACLE_RTOL]  # NaN fails too
    for r in bad:
        a = r.oracle
        print(f"FAIL: width {r.width}, batch {r.batch_size}: in the float64 oracle, member {a.member}'s {a.tensor} "
              f"differs between population and loop by {a.rel_diff:.3e} of its largest entry (abs {a.abs_diff:.3e}) "
              f"> {ORACLE_RTOL:g}; they are not training the same model", file=sys.stderr)
    if bad:
        return 1
    head = block(*runs[0])
    print(json.dumps({
        **{k: head[k] for k in ("speedup", "worst_setting", "gflops_fraction", "peak_gflops", "threads")},
        "baseline": "plain PyTorch loop: per member nn.Module + torch.optim.SGD, one after the other",
        "runs": [block(*run) for run in runs],
        "oracle": {"dtype": "float64", "epochs": min(args.epochs, ORACLE_MAX_EPOCHS), "rel_tolerance": ORACLE_RTOL},
        "members": len(make_members()),
        "epochs": args.epochs,
        "repeats": args.repeats,
        "machine": machine,
        "load_avg_1m": [round(load_start, 2), round(os.getloadavg()[0], 2)],  # start, end: other load
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
