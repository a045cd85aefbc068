"""What one Tune trial per member costs a PBT zoo: member-epochs per second, three ways, the same
members in one run.

The members: one PBT experiment of the PBT zoo's plane (MLPs on MNIST-1D, width 64, SGD
momentum 0.9), `population` members with their first learning rates (zoo.pbt; only lr is mutated, so all keep batch size
64 and the three ways take the same steps), each epoch
followed by the evaluations a PBT row records (train, test and validation splits), trained

- `stacked`: as the grid trains a cell's seeds, one Population of all members (zoo.train), their
  hyperparameters fixed (a stacked step cannot change a member's batch size alone);
- `members`: one population of one per member, one after the other, through the PBT trial's own
  MemberRun (pipelines.pbt), no Tune: what the members cost once they stop sharing a step;
- `tune_pbt`: the PBT experiment itself on Ray Tune (pipelines.pbt.train: Tune's
  PopulationBasedTraining, synchronous, a checkpoint and a pause/resume of every trial at every
  perturbation, rows written), with one trial at a time so all three use one core.

The ways alternate within each repeat; Ray's start-up is paid once before the first repeat, a
Tune experiment's own start-up counts. The claims are the median ratios over repeats with their
bootstrap 95% intervals (bench/stats.py): stacked / members (the price of unstacking) and
members / tune_pbt (the price of Tune's orchestration). Last stdout line: JSON.

    python bench/pbt_overhead.py --quick     # 4 members, 6 epochs, 3 repeats: about a minute
    python bench/pbt_overhead.py             # 8 members, 10 epochs, 3 repeats
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import yaml  # noqa: E402

from bench.stats import median_ci, rounded  # noqa: E402
from pipelines import pbt  # noqa: E402
from pipelines.bundle import make_population  # noqa: E402
from pipelines.runner import start_ray  # noqa: E402
from zoo.machine import machine_info  # noqa: E402
from zoo.spec import parse_spec  # noqa: E402
from zoo.train import validation_indices  # noqa: E402

SPEC = Path(__file__).resolve().parent.parent / "configs" / "zoos" / "mlp_mnist1d_pbt.yaml"
WAYS = ("stacked", "members", "tune_pbt")


def make_spec(population: int, epochs: int, interval: int) -> dict:
    s = yaml.safe_load(SPEC.read_text())
    s["name"] = "pbt_overhead"
    s["axes"]["load"]["values"] = [64]
    s["training"]["epochs"] = epochs
    s["checkpoints"] = [0, epochs]
    # lr only: every member keeps the base batch size (64), so the three ways do the same steps
    s["pbt"].update(population=population, perturbation_interval=interval, mutations={"lr": s["pbt"]["mutations"]["lr"]})
    s["metrics"] = {"enabled": False}
    return s


def stacked(spec) -> None:
    pop = make_population(spec, spec.members())
    vi = validation_indices(pop.task.n_train, spec.pbt.validation_fraction)  # the split a trial ranks by
    x_val, y_val = pop.task.x_train[vi], pop.task.y_train[vi]
    for e in range(1, spec.training.epochs + 1):
        pop.train_epoch(e)
        pop.evaluate_split("train"), pop.evaluate_split("test"), pop.evaluate_on(x_val, y_val)


def members(spec) -> None:
    for m in spec.members():
        run = pbt.MemberRun(spec, m)
        for _ in range(spec.training.epochs):
            run.train_epoch()


def tune_pbt(spec) -> None:
    with tempfile.TemporaryDirectory() as d:
        pbt.train(spec, Path(d), workers=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    population, epochs, interval = (4, 6, 2) if a.quick else (8, 10, 2)
    spec = parse_spec(make_spec(population, epochs, interval))
    torch.set_num_threads(1)
    start_ray(None, 1)
    work = population * epochs
    rates = {w: [] for w in WAYS}
    fns = {"stacked": stacked, "members": members, "tune_pbt": tune_pbt}
    for r in range(a.repeats):
        for w in WAYS:
            t0 = time.perf_counter()
            fns[w](spec)
            rates[w].append(work / (time.perf_counter() - t0))
            print(f"repeat {r + 1}/{a.repeats} {w}: {rates[w][-1]:.2f} member-epochs/s", file=sys.stderr)
    unstack = [s / m for s, m in zip(rates["stacked"], rates["members"])]
    orchestration = [m / t for m, t in zip(rates["members"], rates["tune_pbt"])]
    out = {
        "benchmark": "pbt_overhead", "population": population, "epochs": epochs, "perturbation_interval": interval,
        "width": 64, "repeats": a.repeats, "machine": machine_info(torch_threads=1),
        "member_epochs_per_s": {w: rounded(median_ci(v), 2) for w, v in rates.items()},
        "stacked_over_members": rounded(median_ci(unstack), 2),
        "members_over_tune_pbt": rounded(median_ci(orchestration), 2),
    }
    for w in WAYS:
        m, lo, hi = median_ci(rates[w])
        print(f"{w:>9}: {m:7.2f} member-epochs/s  [{lo:.2f}, {hi:.2f}]", file=sys.stderr)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
