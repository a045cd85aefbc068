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
              samples: int = 1, n_cells: int | None = None, audit_only: bool = False) -> dict:
    """Run the init benchmark of a `hypernet train` run folder on its zoo; write results to `out`.
    samples: nets a sampling generator draws per case, keeping the one of lowest training loss
    (hypernet.api.predict_params); a GHN predicts one. n_cells: benchmark at most this many held-out
    cells (protocol.subset_cells: spread over the architectures and the plane), for big zoos.
    audit_only: redo only the memorization audit of the results already in `out` (their cases,
    seeds and samples; the trained curves are kept), e.g. after the audit itself changed."""
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
    prior = _prior_results(out, hypernet_dir) if audit_only else None
    if prior is not None:
        if not kind_of(ghn).samples:
            raise ZooError(f"--audit-only: {hypernet_dir} is a {kind_of(ghn).name} generator, which predicts one net "
                           "and has no memorization audit")
        seeds, samples = prior["seeds"], prior.get("samples", 1)
        n_cells = (prior.get("cells_subset") or {}).get("benchmarked")
    cases = subset_cells(cases, n_cells)
    if prior is not None and [c.key for c in cases] != [r["case"] for r in prior["results"]]:
        raise ZooError(f"{Path(out) / 'results.json'}: its cases are not this run's and zoo's held-out cases "
                       "(another zoo, split or --cells); rerun the whole benchmark")
    n_bench = sum(c.group == "cells" for c in cases)
    if not cases:
        raise ZooError(f"{zoo_root}: no held-out cell or architecture to benchmark (see the split notes: "
                       f"{'; '.join(split.notes) or 'none'})")
    if seeds is None:
        seeds = default_seeds(cells)
    name = name or hypernet_dir.name
    machine = machine_info(torch_threads=torch.get_num_threads())  # Population trains on this setting
    results, t0 = [], time.perf_counter()
    audits = kind_of(ghn).samples
    # one bar for both stages: each case's training, then (for a sampling generator) each held-out
    # cell's memorization audit, which trains its fresh reference runs
    bar = _Bar(progress, (len(cases) if prior is None else 0) + (sum(c.group == "cells" for c in cases) if audits else 0))
    mem = None
    try:
        for case in cases if prior is None else []:
            bar.next(case.key)
            results.append(run_case(case, ghn, spec, train_cells, zoo_root, seeds, samples=samples))
        if audits:
            mem = memorization(ghn, cases, train_cells, zoo_root, spec, draws=samples,
                               progress=lambda key: bar.next(f"audit {key}"))
    finally:
        bar.stop()
    if prior is not None:  # the trained cases as they were; the audit new
        doc = {**prior, "memorization": mem, "audit_seconds": time.perf_counter() - t0, "audit_machine": machine}
        if out is not None:
            write_outputs(doc, Path(out))
        return doc
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
    if mem is not None:
        doc["memorization"] = mem
    if out is not None:
        write_outputs(doc, Path(out))
    return doc


def _prior_results(out, hypernet_dir: Path) -> dict:
    """The results.json an --audit-only run starts from (it must be this run's)."""
    from pipelines.benchmark.report import read_results

    if out is None:
        raise ZooError("--audit-only needs the results folder (--out) of an earlier `hypernet eval`")
    doc = read_results(out)
    if doc.get("hypernet") != hypernet_dir.name:
        raise ZooError(f"{Path(out) / 'results.json'}: holds the results of {doc.get('hypernet')!r}, "
                       f"not of {hypernet_dir.name!r}")
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


class _Bar:
    """The eval's progress bar (rich): `next(info)` marks the previous item done and names the next."""

    def __init__(self, enabled: bool, n: int):
        from pipelines.hypernet_train import progress_bar  # the training loop's bar, the same columns

        self.p = progress_bar(enabled)
        self.started = False
        if self.p is not None:
            self.t = self.p.add_task("hypernet eval", total=n, info="")
            self.p.start()

    def next(self, info: str) -> None:
        if self.p is None:
            return
        if self.started:
            self.p.advance(self.t)
        self.started = True
        self.p.update(self.t, info=info)

    def stop(self) -> None:
        if self.p is not None:
            if self.started:
                self.p.advance(self.t)
            self.p.stop()
