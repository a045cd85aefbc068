"""The metrics stage: landscape metrics per cell as Ray tasks, phase labels, plots, card.

Resumable like training: each cell's result is committed as data/<zoo>/cells-<i>-<j>.parquet;
a rerun computes only missing cells (all of them when the metrics settings changed). Phase labels,
their margins (how many seed spreads the deciding metric lies from its threshold) and the
uncertain flag are (re)applied from the spec's thresholds at the end, from the stored values
alone, then the labels are copied onto every model row.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pyarrow.parquet as pq
from rich.console import Console

from pipelines.cell import cell_metrics, finite_mean
from pipelines.runner import Job, Reporter, run_jobs
from zoo import store
from zoo.errors import ZooError
from zoo.landscape.phases import decide_cell
from zoo.spec import ZooSpec, parse_spec


def _settings_digest(spec: ZooSpec) -> str:
    m = spec.to_json()["metrics"]
    m.pop("phases", None)  # thresholds only relabel, they do not require recomputing
    return store.spec_digest({"metrics": m, "training": spec.training_json()})


def compute(out: str | Path, zoos: list[str] | None = None, *, address: str | None = None, workers: int | None = None,
            use_ray: bool = True, progress: bool = True, manifest: dict | None = None, recompute: bool = False) -> dict:
    """Compute (or complete) the metrics of the named zoos (default: all) of the dataset at `out`."""
    out = Path(out)
    if manifest is None:
        manifest = store.open_manifest(out)
    workers = workers or os.cpu_count() or 1
    available = sorted(manifest.get("zoos", {}))
    zoos = zoos or available
    for name in zoos:
        if name not in manifest.get("zoos", {}):
            raise ZooError(f"{out}: no zoo {name!r}; zoos there: {', '.join(available) or 'none'}")
        if manifest["zoos"][name].get("status") not in ("trained", "complete"):
            raise ZooError(f"{out}: zoo {name!r} is not fully trained (status {manifest['zoos'][name].get('status')!r});"
                           " rerun `zoo build` first")
    store.remove_temp_files(out)
    console = Console(stderr=True) if progress else None
    specs = {name: parse_spec(manifest["zoos"][name]["spec"], f"{out}/manifest.json: zoo {name}") for name in zoos}
    jobs: list[Job] = []
    total = done = 0
    for name, spec in specs.items():
        entry = manifest["zoos"][name]
        digest = _settings_digest(spec)
        if recompute or entry.get("metrics_sha256") != digest:
            for f in store.cell_files(out, name):
                f.unlink()  # stale: computed with other settings
        entry["metrics_sha256"] = digest
        entry["status"] = "trained"
        store.write_manifest(out, manifest)
        cell_jobs, n_cells = _plan(out, spec)
        jobs += cell_jobs
        total += n_cells
        done += n_cells - len(cell_jobs)
    if console:
        console.print(f"[bold]zoo metrics[/]: {total} cells, {done} already done, {len(jobs)} to compute")
    run_jobs(cell_metrics, jobs, address=address, workers=workers, use_ray=use_ray,
             reporter=Reporter(console, "metrics", "cells", done, total))
    for name, spec in specs.items():
        _finish(out, spec, manifest["zoos"][name], manifest)
    return manifest


def _plan(out: Path, spec: ZooSpec) -> tuple[list[Job], int]:
    rows = store.read_rows(out, spec.name).to_pandas()
    at = rows[rows["epoch"] == spec.metrics.epoch]
    spec_json = spec.to_json()
    jobs = []
    groups = _groups(spec, at)
    for group, (cell, arch_id) in groups.items():
        path = store.cell_file(out, spec.name, group)
        if path.exists():
            continue
        sel = at[at["cell"] == group].sort_values("seed")
        if sel.empty:
            raise ZooError(f"{out}: zoo {spec.name} has no rows for cell {group} at epoch {spec.metrics.epoch}")
        ok = sel[sel["status"] == "ok"]
        measured = ok.head(spec.metrics.seeds) if spec.metrics.seeds else ok  # the lowest seeds (sorted above)
        ids = measured["model_id"].tolist()
        summary = {
            "zoo": spec.name, "cell": group, "arch_id": arch_id, "temperature_param": cell.temperature_param,
            "temperature": float(cell.temperature), "load_param": cell.load_param, "load": float(cell.load),
            "metrics_epoch": spec.metrics.epoch, "n_models": len(ok), "n_diverged": int(len(sel) - len(ok)),
            "train_loss": finite_mean(ok["train_loss"]), "train_error": _train_error(ok),
            "test_loss": finite_mean(ok["test_loss"]), "test_acc": finite_mean(ok["test_acc"]),
            "test_rel_l2": finite_mean(ok["test_rel_l2"]),
            "member_train_loss": [float(v) for v in measured["train_loss"]],  # seed order, like member_ids
        }

        def commit(res, path=path, summary=summary):
            res = {k: v for k, v in res.items() if k != "seconds"}
            store.write_cell(path, {**summary, **res, "phase": ""})  # labelled by _finish

        def load(rows=measured.to_dict("records"), cell_id=group, ids=ids):  # read when submitted, not now
            return spec_json, cell_id, ids, [store.read_state(out, r) for r in rows]

        jobs.append(Job(f"{spec.name} cell {group} ({len(ids)} models)", (), 1, commit, load=load))
    return jobs, len(groups)


def _groups(spec: ZooSpec, at) -> dict:
    """group -> (its Cell, arch_id), in plan order. A grid or sampled plane: the spec's groups. A
    PBT zoo: the grid cells its members ended nearest to (the rows' `cell` at the metrics epoch);
    a cell no member reached has no metrics."""
    if spec.phase != "pbt":
        return {g: (ms[0].cell, ms[0].arch_id) for g, ms in spec.groups().items()}
    reached = dict(zip(at["cell"], at["arch_id"]))
    return {c.id: (c, reached[c.id]) for c in spec.cells() if c.id in reached}


def _train_error(ok) -> float:
    """1 − accuracy for classifiers; the relative L2 error for a PDE (which has no accuracy)."""
    acc = finite_mean(ok["train_acc"])
    return 1 - acc if math.isfinite(acc) else finite_mean(ok["train_rel_l2"])


def _same(a, b) -> bool:
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


def _finish(out: Path, spec: ZooSpec, entry: dict, manifest: dict) -> None:
    """Label phases (with margins), copy cell metrics onto model rows, plot, and mark the zoo complete.

    Cheap: only the stored cell rows are read, so new thresholds relabel without recomputing. A
    cell file written before a column existed (e.g. the per-seed lists) is rewritten in the current
    schema, the missing values null; its margin is then NaN and the cell counts as uncertain.
    """
    th = spec.metrics.phases
    schema = store.cell_schema()
    cells = {}
    for f in store.cell_files(out, spec.name):
        t = pq.read_table(f)
        old = t.to_pylist()[0]
        d = decide_cell(old, th)
        row = {name: old.get(name) for name in schema.names}
        row.update(phase=d.label, phase_margin=d.margin, phase_decided_by=d.decided_by, phase_uncertain=d.uncertain)
        if not t.schema.equals(schema) or any(not _same(row[k], old.get(k)) for k in row):
            store.write_cell(f, row)
        cells[row["cell"]] = row
    store.annotate_models(out, spec.name, cells)
    draw_figures(out, spec.name, list(cells.values()), manifest)
    labels = [c["phase"] for c in cells.values()]
    unsure = [c["phase"] for c in cells.values() if c["phase_uncertain"]]
    entry.update(status="complete", phases={p: labels.count(p) for p in sorted(set(labels))},
                 phases_uncertain={p: unsure.count(p) for p in sorted(set(labels))})  # same keys, 0 included


def draw_figures(out: Path, zoo: str, cells: list[dict], manifest: dict) -> list[Path]:
    """The phase diagrams and learning curves of one zoo into out/figures; lists them in the manifest."""
    from zoo import plots

    fig_dir = out / "figures"
    phases_spec = manifest.get("zoos", {}).get(zoo, {}).get("spec", {}).get("metrics", {}).get("phases", {})
    bound = phases_spec.get("margin", 1.0)  # the uncertainty bound the legend names; older specs: the default
    paths = plots.plot_zoo(cells, zoo, fig_dir, margin_bound=bound)
    rows = store.read_rows(out, zoo).to_pandas()
    metric = "test_acc" if rows["test_acc"].notna().any() else "test_rel_l2"  # a PDE zoo has no accuracy
    spec = manifest.get("zoos", {}).get(zoo, {}).get("spec", {})
    pbt = spec.get("phase") == "pbt"
    # a PBT member's temperature moves with its hyperparameters: its curves are drawn by phase
    curves = plots.learning_curves if plots.is_grid(cells) and not pbt else plots.learning_curves_by_phase
    paths.append(curves(rows, zoo, fig_dir / f"{zoo}-learning-curves.png", metric=metric))
    if pbt:
        from zoo.pbt import temperature_coordinate

        base, t_param = spec["training"], spec["axes"]["temperature"]["param"]
        coordinate = lambda hp: temperature_coordinate(t_param, hp, base, base["optimizer"])  # noqa: E731
        paths.append(plots.pbt_schedules(rows, zoo, fig_dir / f"{zoo}-schedules.png", coordinate))
        for grid_zoo in same_plane_grids(out, zoo, manifest):
            paths.append(plots.pbt_on_phase_map(store.read_cells(out, grid_zoo).to_pandas(), grid_zoo, rows, zoo,
                                                fig_dir / f"{zoo}-on-{grid_zoo}-phases.png", margin_bound=bound))
    figs = [f for f in manifest.get("figures", []) if not Path(f).name.startswith(f"{zoo}-")]
    manifest["figures"] = sorted(figs + [str(Path(p).relative_to(out)) for p in paths])
    return paths


def same_plane_grids(out: Path, zoo: str, manifest: dict) -> list[str]:
    """The grid zoos of the dataset with labelled phases on the same plane (task, family, axes)
    as the PBT zoo `zoo`: what its members are drawn over."""
    z = manifest["zoos"][zoo]["spec"]
    key = lambda s: (s.get("task"), s.get("model", {}).get("family"), json.dumps(s.get("axes"), sort_keys=True))
    return [name for name, other in sorted(manifest.get("zoos", {}).items())
            if other.get("spec", {}).get("phase", "grid") == "grid" and "phases" in other
            and key(other["spec"]) == key(z) and store.cell_files(out, name)]
