"""Training throughput: the population trainer vs a plain one-model-at-a-time PyTorch loop.

Both sides train the *same* members (same init, data order, learning rate, SGD with momentum
0.9) on mnist1d, for 16 members (4 seeds x 4 learning rates) in each of four settings:
MLP width in {16, 64} x batch size in {32, 128}. Only the training epochs are timed (no
evaluation on either side, no construction), after a short warm-up of each side on a throwaway
copy. Both sides run with torch's default thread count, which is printed.

How to read it: `speedup` = loop seconds / population seconds, measured side by side in the same
run, so it is meaningful even on a busy or slow machine; the absolute seconds are not. `gflops` is
the population trainer's achieved rate from an analytic FLOP count (per sample, forward =
2 * sum(in * out) over the Linear layers, a training step ~ 3x forward), and `frac` divides it by
a dense 1024x1024 float32 matmul rate measured in the same run. The last stdout line is a JSON
object whose `speedup` is the smallest over the settings and whose `gflops_fraction` belongs to
that same setting. As a correctness guard, member 0's final weights must agree between the two
sides within 1e-4 (max abs diff), else the script exits with status 1.

    python bench/train_throughput.py --quick     # 1 epoch per setting
    python bench/train_throughput.py             # 3 epochs per setting
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from zoo import nets, tasks
from zoo.tasks import Task
from zoo.train import MemberConfig, Population, derived_seed

TASK = "mnist1d"
DEPTH = 2
MOMENTUM = 0.9
INIT = "kaiming_uniform"
SEEDS = (0, 1, 2, 3)
LRS = (0.01, 0.03, 0.1, 0.3)
WIDTHS = (16, 64)
BATCH_SIZES = (32, 128)
TOLERANCE = 1e-4
WARMUP_FRACTION = 0.02  # data fraction of the throwaway population used for warm-up (80 samples)
WARMUP_STEPS = 3  # steps of the throwaway plain model used for warm-up


@dataclass
class SettingResult:
    width: int
    batch_size: int
    loop_s: float
    population_s: float
    speedup: float
    gflops: float
    fraction: float
    max_diff: float


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

    def __init__(self, task: Task, width: int, member: MemberConfig):
        self.net = build_net(task, width, member.seed)
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
def make_population(task: Task, width: int, common: dict, members: list[MemberConfig]) -> Population:
    return Population(task, {"family": "mlp", "width": width, "depth": DEPTH}, INIT, common, members)


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
def max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    if a.keys() != b.keys():
        raise KeyError(f"state dicts differ in keys: {sorted(a)} vs {sorted(b)}")
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def run_setting(task: Task, width: int, batch_size: int, epochs: int, peak: float, repeats: int) -> SettingResult:
    """The two sides alternate `repeats` times and each keeps its fastest run: on a shared
    2-core machine a burst of other load hits one side's single run and skews the ratio."""
    members = make_members()
    warm_up_loop(task, width, batch_size)
    warm_up_population(task, width, batch_size, members)
    loop_s = pop_s = float("inf")
    for _ in range(repeats):
        t, loop = time_loop(task, width, batch_size, epochs, members)
        loop_s = min(loop_s, t)
        t, pop = time_population(task, width, batch_size, epochs, members)
        pop_s = min(pop_s, t)
    diff = max_abs_diff(pop.member_state(0), loop[0].net.state_dict())
    flops = training_flops(loop[0].net, task.n_train, epochs, len(members))
    gflops = flops / pop_s / 1e9
    return SettingResult(width, batch_size, loop_s, pop_s, loop_s / pop_s, gflops, gflops * 1e9 / peak, diff)


# ---- output ----------------------------------------------------------------------------------
def print_table(results: list[SettingResult], n_members: int) -> None:
    head = f"{'width':>5} {'batch':>5} {'members':>7} {'loop_s':>8} {'pop_s':>8} {'speedup':>7} " \
           f"{'GFLOP/s':>8} {'frac':>6} {'max_diff':>9}"
    print(head)
    print("-" * len(head))
    for r in results:
        print(f"{r.width:>5} {r.batch_size:>5} {n_members:>7} {r.loop_s:>8.3f} {r.population_s:>8.3f} "
              f"{r.speedup:>7.2f} {r.gflops:>8.3f} {r.fraction:>6.3f} {r.max_diff:>9.2e}")


def summary(results: list[SettingResult], peak: float, threads: int, epochs: int) -> dict:
    worst = min(results, key=lambda r: r.speedup)
    keys = ("width", "batch_size", "loop_s", "population_s", "speedup", "gflops")
    return {
        "speedup": round(worst.speedup, 4),
        "gflops_fraction": round(worst.fraction, 6),
        "peak_gflops": round(peak / 1e9, 3),
        "settings": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(r).items() if k in keys}
                     for r in results],
        "threads": threads,
        "epochs": epochs,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="1 epoch per setting (default 3)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per setting (overrides --quick)")
    p.add_argument("--repeats", type=int, default=3, help="alternating runs per side; the fastest counts")
    args = p.parse_args(argv)
    if args.epochs is None:
        args.epochs = 1 if args.quick else 3
    if args.epochs < 1 or args.repeats < 1:
        p.error("--epochs and --repeats must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    threads = torch.get_num_threads()
    task = tasks.load(TASK)
    peak = matmul_peak_flops()
    print(f"task {TASK}, mlp depth {DEPTH}, {len(make_members())} members, {args.epochs} epoch(s), "
          f"torch {torch.__version__}, {threads} thread(s), matmul peak {peak / 1e9:.2f} GFLOP/s")
    results = []
    for width, batch_size in itertools.product(WIDTHS, BATCH_SIZES):
        results.append(run_setting(task, width, batch_size, args.epochs, peak, args.repeats))
    print_table(results, len(make_members()))
    bad = [r for r in results if not r.max_diff <= TOLERANCE]
    if bad:
        for r in bad:
            print(f"FAIL: width {r.width}, batch {r.batch_size}: member 0's weights differ between population "
                  f"and loop by {r.max_diff:.3e} > {TOLERANCE:g}; they are not training the same model",
                  file=sys.stderr)
        return 1
    print(json.dumps(summary(results, peak, threads, args.epochs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
