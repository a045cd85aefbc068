"""The study stage (`zoo study NAME DIR`): per-cell studies as Ray tasks, resumable, stored in the
dataset beside the zoo, and drawn over the phase plane.

    studies/<zoo>/<study>/cells/<cell>.json   one per cell, committed atomically as it finishes
    studies/<zoo>/<study>/results.json        settings, every cell, per-phase medians with intervals
    studies/<zoo>/<study>/results.md          the same as tables
    studies/<zoo>/<study>/<key>.png           the key result over the phase plane
    studies/<zoo>/<study>/<key>-by-phase.png  the same per phase (box plot, seeds as dots)

A rerun computes only the cells without a file of the current settings and inputs (all of them
with --recompute), so a killed study resumes; every stored number comes from seeded computation,
so the rerun writes the same bytes. A cell's inputs are its place and phase, its members and the
sha256 of the checkpoint shards it reads (the zoo's data and weights files for a per-zoo study):
a zoo rebuilt or relabelled under the study recomputes the cells it changed, not the others.
The files are tracked by manifest.json and linked from the card.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from rich.console import Console

from pipelines.benchmark.stats import bootstrap_ci, median_of_medians
from pipelines.runner import Job, Reporter, run_jobs
from pipelines.studies import averaging, predict, prune, transfer
from zoo import store
from zoo.errors import ZooError
from zoo.registry import Registry
from zoo.spec import ZooSpec

FORMAT = 1  # of the stored study files; part of every cell file's settings digest


@dataclass(frozen=True)
class Study:
    name: str
    about: str  # one line: what it measures (the CLI's help, the card)
    settings: dict  # the defaults; a run's settings are stored with its results
    figures: dict[str, str]  # result key -> what it is (a plane map and a by-phase plot each)
    columns: tuple[str, ...]  # the per-cell table of results.md
    compute: Callable[[dict, list[dict], dict], dict] | None = None  # (cell payload, states, settings) -> result
    supports: Callable[[ZooSpec], str | None] = lambda spec: None  # why not, or None
    per_cell: bool = True  # False: one job for the whole zoo (the WSL benchmark), payload {"root", "zoo"}
    markdown: Callable[[dict], list[str]] | None = None  # more of results.md, from the zoo job's result


def _family_in(families: tuple[str, ...], study: str) -> Callable[[ZooSpec], str | None]:
    def check(spec: ZooSpec) -> str | None:
        fam = spec.model.family
        return None if fam in families else (f"`zoo study {study}` supports the families {', '.join(families)}; "
                                             f"zoo {spec.name} is {fam!r}")
    return check


def _transfer_target(spec: ZooSpec) -> str | None:
    from zoo.tasks import TRANSFER_TARGETS

    if spec.task in TRANSFER_TARGETS:
        return None
    return (f"`zoo study transfer` has a second task for the tasks {', '.join(sorted(TRANSFER_TARGETS))}; "
            f"zoo {spec.name} trains on {spec.task!r}")


STUDIES: Registry[Study] = Registry("study")
for _s in (
    Study("averaging", "the seeds of a cell averaged, plainly and after weight matching", averaging.SETTINGS,
          averaging.FIGURES, averaging.COLUMNS, averaging.compute, _family_in(averaging.SUPPORTED, "averaging")),
    Study("transfer", "the cell's trained members fine-tuned on a shifted task vs random init, same budget",
          transfer.SETTINGS, transfer.FIGURES, transfer.COLUMNS, transfer.compute, _transfer_target),
    Study("prune", "global magnitude pruning at 50-95% sparsity, with and without a short re-training",
          prune.SETTINGS, prune.FIGURES, prune.COLUMNS, prune.compute),
    Study("predict", "test accuracy, generalization gap and phase predicted from the weights alone (WSL benchmark)",
          predict.SETTINGS, predict.FIGURES, predict.COLUMNS, predict.compute,
          _family_in(predict.wsl.SUPPORTED, "predict"), per_cell=False, markdown=predict.predict_markdown),
):
    STUDIES.register(_s.name)(_s)


def study_dir(root: Path, zoo: str, study: str) -> Path:
    return Path(root) / "studies" / zoo / study


def settings_digest(study: str, settings: dict) -> str:
    return store.spec_digest({"study": study, "settings": settings, "format": FORMAT})


def inputs_digest(root: Path, manifest: dict, where: dict, rows: list[dict] | None, zoo: str) -> str:
    """The sha256 of what one unit of a study reads: for a cell (`rows`, its members' final
    checkpoint rows) its place and phase, the members and the sha256 of each shard they are read
    from; for a per-zoo unit (rows None) every data and weights file of the zoo. Hashes come from
    the manifest (a file it does not list is hashed here)."""
    files = manifest.get("files", {})

    def sha(rel: str) -> str:
        entry = files.get(rel)
        return entry["sha256"] if entry else store.sha256_file(root / rel)

    if rows is None:
        inputs = {rel: e["sha256"] for rel, e in sorted(files.items())
                  if rel.startswith((f"data/{zoo}/", f"weights/{zoo}/"))}
    else:
        inputs = {"members": [[r["model_id"], r["tensor_prefix"], r["shard"]] for r in rows],
                  "shards": {rel: sha(rel) for rel in sorted({r["shard"] for r in rows})}}
    return store.spec_digest({"where": where, "inputs": inputs})


def study_cell(study: str, settings: dict, payload: dict, states: list[dict], threads: int) -> dict:
    """One cell of a study, or a whole zoo for a per-zoo study (a Ray task): the study's result,
    plus the seconds it took."""
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    out = STUDIES.get(study).compute(payload, states, settings)
    out["seconds"] = time.perf_counter() - t0
    return out


def resolve_settings(study: Study, overrides: dict | None) -> dict:
    """The study's defaults with `overrides` (the CLI's options) applied; an unknown name is an error."""
    out = json.loads(json.dumps(study.settings))
    for k, v in (overrides or {}).items():
        if v is None:
            continue
        if k not in out:
            raise ZooError(f"`zoo study {study.name}` has no setting {k!r}; settings: {', '.join(out) or 'none'}")
        out[k] = v
    return out


def run(study_name: str, root: str | Path, zoos: list[str] | None = None, *, settings: dict | None = None,
        address: str | None = None, workers: int | None = None, use_ray: bool = True, progress: bool = True,
        recompute: bool = False) -> dict[str, dict]:
    """Run (or complete) a study on the named zoos of the dataset at `root` (default: every zoo
    with phase labels that the study supports); returns {zoo: results}."""
    from pipelines.build import finalize
    from pipelines.zoodata import load_cells, zoo_specs

    study = STUDIES.get(study_name)
    root = Path(root)
    manifest = store.open_manifest(root)
    specs = {s.name: s for s in zoo_specs(root)}
    chosen = _choose(study, root, manifest, specs, zoos)
    settings = resolve_settings(study, settings)
    digest = settings_digest(study.name, settings)
    console = Console(stderr=True) if progress else None
    store.remove_temp_files(root)
    jobs, plans, total, done = [], {}, 0, 0
    for name in chosen:
        spec = specs[name]
        cells = load_cells(root, [name])
        phases = {r["cell"]: r for r in store.read_cells(root, name).to_pylist()}
        d = study_dir(root, name, study.name)
        where = {c.cell: _where(c, phases.get(c.cell, {})) for c in cells}
        plans[name] = where
        units = [(c, d / "cells" / f"{c.cell}.json") for c in cells] if study.per_cell else [(None, d / "zoo.json")]
        for cell, path in units:
            total += 1
            place = where.get(getattr(cell, "cell", None), {})
            inputs = inputs_digest(root, manifest, place, cell.rows if cell is not None else None, name)
            if not recompute and path.exists():
                kept = json.loads(path.read_text())
                if kept.get("settings_sha256") == digest and kept.get("inputs_sha256") == inputs:
                    done += 1
                    continue
            jobs.append(_job(study, settings, digest, inputs, root, spec, cell, place, path))
    unit = "cells" if study.per_cell else "zoos"
    if console:
        console.print(f"[bold]zoo study {study.name}[/]: {', '.join(chosen)}: {total} {unit}, {done} already done, "
                      f"{len(jobs)} to compute")
    run_jobs(study_cell, jobs, address=address, workers=workers or os.cpu_count() or 1, use_ray=use_ray,
             reporter=Reporter(console, f"study {study.name}", unit, done, total))
    out = {}
    for name in chosen:
        out[name] = _finish(study, settings, digest, root, name, plans[name], manifest)
    finalize(root, manifest)
    return out


def _choose(study: Study, root: Path, manifest: dict, specs: dict[str, ZooSpec], zoos: list[str] | None) -> list[str]:
    """The zoos a study runs on: the named ones (each must have phase labels and be supported:
    otherwise an error saying what to do), or every supported zoo with phase labels."""
    if zoos:
        unknown = sorted(set(zoos) - set(specs))
        if unknown:
            raise ZooError(f"{root}: no complete zoo {unknown}; valid: {', '.join(sorted(specs))}")
    names = zoos or sorted(specs)
    chosen, skipped = [], []
    for name in names:
        why = study.supports(specs[name])
        if why is None and (not manifest["zoos"][name].get("phases") or store.read_cells(root, name) is None):
            why = f"zoo {name} has no phase labels (data/{name}/cells-*.parquet); compute them with `zoo metrics {root} --zoo {name}`"
        if why is not None and zoos:
            raise ZooError(f"{root}: {why}")
        if why:
            skipped.append(why)
        else:
            chosen.append(name)
    if not chosen:
        raise ZooError(f"{root}: no zoo `zoo study {study.name}` can run on: " + "; ".join(skipped))
    return chosen


def _where(cell, phase_row: dict) -> dict:
    """What a cell's results are stored and drawn with: its place on the plane and its phase."""
    return {"zoo": cell.zoo, "cell": cell.cell, "ti": cell.ti, "li": cell.li, "temperature_param": cell.temperature_param,
            "temperature": cell.temperature, "load_param": cell.load_param, "load": cell.load, "arch": cell.arch,
            "phase": phase_row.get("phase") or "", "phase_uncertain": bool(phase_row.get("phase_uncertain")),
            "model_ids": [r["model_id"] for r in cell.rows], "seeds": [int(r["seed"]) for r in cell.rows]}


def _job(study: Study, settings: dict, digest: str, inputs: str, root: Path, spec: ZooSpec, cell, where: dict,
         path: Path) -> Job:
    """One cell (or, for a per-zoo study, the whole zoo: cell None) as a job that commits its file,
    stamped with the settings' and the inputs' digests."""
    from pipelines.studies.common import cell_payload

    def commit(res: dict, path=path, where=where) -> None:
        res = {k: v for k, v in res.items() if k != "seconds"}
        path.parent.mkdir(parents=True, exist_ok=True)
        store.write_text_atomic(path, _dumps({**where, **res, "settings_sha256": digest, "inputs_sha256": inputs}))

    threads = spec.compute.threads_per_worker
    if cell is None:
        return Job(f"{spec.name} (every model)", (study.name, settings, {"root": str(root), "zoo": spec.name}, None, threads),
                   1, commit)
    payload = cell_payload(cell)

    def load(rows=list(cell.rows)):  # read when submitted, not for every cell at once
        return study.name, settings, payload, [store.read_state(root, r) for r in rows], threads

    return Job(f"{cell.zoo} {cell.cell} ({len(cell.rows)} models)", (), 1, commit, load=load)


def _dumps(obj) -> str:
    """JSON with NaN as null (strict JSON), sorted keys: the same result, the same bytes."""
    return json.dumps(store.finite_json(obj), indent=1, sort_keys=True, allow_nan=False) + "\n"


PHASE_ORDER = ("I", "II", "III", "IV-A", "IV-B", "")


def by_phase(rows: list[dict], key: str) -> dict[str, dict]:
    """Per phase label: the median over its cells of each cell's median over seeds of `key`
    (the cell's value when it has no per-seed list), with the two-stage bootstrap interval."""
    out = {}
    for p in PHASE_ORDER:
        sel = [r for r in rows if (r.get("phase") or "") == p and not r.get("skipped")]
        groups = [r.get("per_seed", {}).get(key) or [r.get(key)] for r in sel]
        groups = [[float(v) for v in g if v is not None] for g in groups]
        groups = [g for g in groups if g]
        if groups:
            out[p or "unknown"] = {"median": median_of_medians(groups), "ci": bootstrap_ci(groups), "cells": len(groups)}
    return out


def _finish(study: Study, settings: dict, digest: str, root: Path, zoo: str, where: dict[str, dict], manifest: dict) -> dict:
    """Gather the cell files (or the zoo job's file) into results.json / results.md, draw the
    figures, list them in the manifest."""
    from zoo import plots

    d = study_dir(root, zoo, study.name)
    whole = None
    if study.per_cell:
        keep = {f"{c}.json" for c in where}
        for f in sorted((d / "cells").glob("*.json")):
            if f.name not in keep:
                f.unlink()  # a cell the zoo no longer has
        rows = [json.loads((d / "cells" / f"{c}.json").read_text()) for c in where]
    else:
        whole = json.loads((d / "zoo.json").read_text())
        per = whole.pop("cells", {})
        rows = [{**w, **per.get(c, {"skipped": "no checkpoint of this cell in the benchmark"})} for c, w in where.items()]
    stats = {k: by_phase(rows, k) for k in study.figures}
    results = {"study": study.name, "zoo": zoo, "about": study.about, "settings": settings, "settings_sha256": digest,
               "format": FORMAT, "versions": {k: v for k, v in store.versions().items() if k in ("torch", "numpy")},
               "machine": store.build_machine(manifest), "by_phase": stats, "cells": rows}
    if whole is not None:
        results["zoo_result"] = {k: v for k, v in whole.items() if k not in ("settings_sha256", "inputs_sha256")}
    store.write_text_atomic(d / "results.json", _dumps(results))
    figures = []
    table = [r for r in rows if not r.get("skipped")]
    for key, title in study.figures.items():
        if not any(r.get(key) is not None for r in table):
            continue
        kind = "diverging" if signed(key) else "higher"
        style = plots.MetricStyle(title, "RdBu" if kind == "diverging" else "viridis", kind)
        cells_df = [{**r, key: r.get(key) if r.get(key) is not None else float("nan"),
                     "per_seed_values": r.get("per_seed", {}).get(key)} for r in table]
        figures.append(plots.plane_map(cells_df, key, zoo, d / f"{key}.png", style))
        figures.append(plots.by_phase(cells_df, key, zoo, d / f"{key}-by-phase.png", title, per_cell="per_seed_values"))
    rel = [str(Path(p).relative_to(root)) for p in figures]
    store.write_text_atomic(d / "results.md", markdown(results, [Path(p).name for p in figures]))
    manifest.setdefault("studies", {}).setdefault(zoo, {})[study.name] = {
        "about": study.about, "results": str((d / "results.json").relative_to(root)),
        "markdown": str((d / "results.md").relative_to(root)), "figures": rel, "settings": settings,
        "by_phase": {k: {p: v["median"] for p, v in s.items()} for k, s in stats.items()},
        "signed": [k for k in stats if signed(k)]}  # differences: the card prints them with their sign
    return results


def signed(key: str) -> bool:
    """A difference (drawn centred at 0, printed with its sign), not a level or a ratio."""
    return "delta" in key or "gain" in key


def _fmt(v, sign: bool = False) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, float):
        return (f"{v:+.3f}" if sign else f"{v:.3f}") if abs(v) < 10 else f"{v:.1f}"
    return str(v)


def _fmt_ci(s: dict, sign: bool) -> str:
    ci = s.get("ci")
    m = _fmt(s["median"], sign)
    return f"{m} [{_fmt(ci[0], sign)}, {_fmt(ci[1], sign)}]" if ci else m


def markdown(results: dict, figures: list[str]) -> str:
    """results.md: what was run, the per-phase medians with intervals, every cell, the figures."""
    study = STUDIES.get(results["study"])
    lines = [f"# {results['study']} on {results['zoo']}", "", f"{results['about']}.", "",
             "Settings: " + ", ".join(f"`{k}` = {v}" for k, v in results["settings"].items()) + ".", "",
             "## By phase", "", "Median over a phase's cells of each cell's median over seeds, with a two-stage "
             "bootstrap 95% interval (cells, then seeds).", ""]
    keys = list(results["by_phase"])
    lines += ["| phase | cells | " + " | ".join(study.figures[k] for k in keys) + " |",
              "|---|---|" + "---|" * len(keys)]
    phases = [p for p in (*PHASE_ORDER[:-1], "unknown") if any(p in results["by_phase"][k] for k in keys)]
    for p in phases:
        n = max(results["by_phase"][k].get(p, {}).get("cells", 0) for k in keys)
        lines.append(f"| {p} | {n} | " + " | ".join(_fmt_ci(results["by_phase"][k][p], signed(k)) if p in results["by_phase"][k]
                                                   else "–" for k in keys) + " |")
    lines += ["", "## Cells", "", "| cell | phase | temperature | load | " + " | ".join(study.columns) + " |",
              "|---|---|---|---|" + "---|" * len(study.columns)]
    for r in results["cells"]:
        phase = (r.get("phase") or "–") + ("?" if r.get("phase_uncertain") else "")
        vals = [r.get("skipped", "skipped")] if r.get("skipped") else [_fmt(r.get(c), signed(c)) for c in study.columns]
        lines.append(f"| {r['cell']} | {phase} | {r['temperature']:g} | {r['load']:g} | " + " | ".join(vals) + " |")
    lines += ["", "(`?`: a phase label within its threshold's uncertainty bound.)", ""]
    if study.markdown is not None and "zoo_result" in results:
        lines += study.markdown(results["zoo_result"])
    lines += [f"![{f}]({f})" for f in figures] + [""]
    return "\n".join(lines)


__all__ = ["STUDIES", "Study", "by_phase", "markdown", "run", "settings_digest", "signed", "study_cell", "study_dir"]
