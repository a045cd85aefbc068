"""`hypernet eval`: the init benchmark of one generator run, end to end: the protocol's cases
and training (pipelines.benchmark.protocol), the memorization audit of a generator that samples
weights (pipelines.benchmark.audit), then results.json, results.md and curves
(pipelines.benchmark.report).
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from hypernet.api import load_hypernet
from hypernet.generators import kind_of
from pipelines.zoodata import load_cells, make_split, split_digest
from zoo.errors import ZooError
from zoo.machine import machine_info
from pipelines.benchmark.audit import memorization
from pipelines.benchmark.protocol import DEFAULT_SEEDS, cases_of, run_case, subset_cells, summarize
from pipelines.benchmark.report import write_outputs

def benchmark(hypernet_dir: str | Path, zoo_dir: str | Path, out: str | Path | None = None,
              seeds: list[int] | None = None, progress: bool = True, name: str | None = None,
              samples: int = 1, n_cells: int | None = None) -> dict:
    """Run the init benchmark of a `hypernet train` run folder on its zoo; write results to `out`.
    samples: nets a sampling generator draws per case, keeping the one of lowest training loss
    (hypernet.api.predict_params); a GHN predicts one. n_cells: benchmark at most this many held-out
    cells (protocol.subset_cells: spread over the architectures and the plane), for big zoos."""
    from pipelines.fit import read_run

    hypernet_dir, zoo_root = Path(hypernet_dir), Path(zoo_dir)
    if samples < 1:
        raise ZooError(f"--samples {samples}: must be at least 1")
    meta = read_run(hypernet_dir)
    ghn = load_hypernet(hypernet_dir)
    spec = ghn.conditions
    if spec is None:
        raise ZooError(f"{hypernet_dir}: the hypernetwork has no conditions; it was not trained on a zoo")
    cells = load_cells(zoo_root, spec.names)
    split = make_split(cells)
    if split_digest(split) != split_digest(meta["split_obj"]):
        raise ZooError(f"{zoo_root}: its held-out split differs from the one {hypernet_dir} was trained with; "
                       "evaluate on the zoo the hypernetwork was trained on")
    train_cells = [c for c in cells if c.key in set(meta["train_cells"])]
    cases = cases_of(cells, split)
    n_held = sum(c.group == "cells" for c in cases)
    cases = subset_cells(cases, n_cells)
    n_bench = sum(c.group == "cells" for c in cases)
    if not cases:
        raise ZooError(f"{zoo_root}: no held-out cell or architecture to benchmark (see the split notes: "
                       f"{'; '.join(split.notes) or 'none'})")
    if seeds is None:
        seeds = default_seeds(cells)
    name = name or hypernet_dir.name
    machine = machine_info(torch_threads=torch.get_num_threads())  # Population trains on this setting
    results, t0 = [], time.perf_counter()
    bar = _bar(progress, len(cases))
    try:
        for case in cases:
            if bar:
                bar[0].update(bar[1], info=case.key)
            results.append(run_case(case, ghn, spec, train_cells, zoo_root, seeds, samples=samples))
            if bar:
                bar[0].advance(bar[1])
    finally:
        if bar:
            bar[0].stop()
    doc = {
        "hypernet": name,
        "kind": meta.get("kind"),
        "zoo": str(zoo_root),
        "seeds": seeds,
        **({"samples": samples} if samples > 1 else {}),
        **({"cells_subset": {"benchmarked": n_bench, "held_out": n_held}} if n_bench < n_held else {}),
        "protocol": "held-out cells and architectures; random vs generator vs the baselines (nearest zoo model, "
                    "weight selection, LSUV, ZerO, orthogonal); steps-to-target = first step reaching the final "
                    "score of random init (same seed); medians with bootstrap 95% intervals over cases and seeds",
        "split_notes": split.notes,
        "seconds": time.perf_counter() - t0,
        "machine": machine,
        "summary": summarize(results, "hypernet"),
        "results": results,
    }
    if kind_of(ghn).samples:
        doc["memorization"] = memorization(ghn, cases, train_cells, zoo_root, spec)
    if out is not None:
        write_outputs(doc, Path(out))
    return doc


def default_seeds(cells, n: int = DEFAULT_SEEDS) -> list[int]:
    """The zoo's member seeds first (so random init of a held-out cell is the zoo member itself),
    then the next integers, n in all."""
    seeds = sorted({m.seed for c in cells for m in c.members})[:n]
    k = 0
    while len(seeds) < n:
        if k not in seeds:
            seeds.append(k)
        k += 1
    return sorted(seeds)


def _bar(enabled: bool, n: int):
    if not enabled:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    p = Progress(TextColumn("hypernet eval"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                 TextColumn("{task.fields[info]}"))
    t = p.add_task("eval", total=n, info="")
    p.start()
    return p, t
