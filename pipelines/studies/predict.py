"""The weight-space learning benchmark (`zoo study predict`): from a model's weights alone, predict
its test accuracy, its generalization gap (train − test accuracy) and its cell's phase label.

Rows: the zoo's checkpoints at epoch >= `min_epoch`, status ok (default 1: an initialization
carries no trained signal, and its chance-level accuracy would make the ranking partly trivial;
min_epoch=0 takes every checkpoint). Splits: `folds`-fold cross-validation grouped by model id
(every checkpoint of a model on one side; zoo.wsl.grouped_folds, dealt cell by cell so a cell's
seeds go to different folds), the out-of-fold predictions of all folds pooled. Methods
(zoo.wsl): constant; Unterthiner et al.'s per-layer statistics + ridge and + gradient boosting;
Zhou et al.'s invariant NFN (the `nfn` extra), fit per depth group, since its layers are per
layer position (a zoo of depths 1-3 gets three NFNs per fold). Metrics: Kendall tau and R²
(regression), accuracy and balanced accuracy (phase), each with a bootstrap 95% interval over
test models (all checkpoints of a drawn model together).

    result = predict_study(Path("build/phases"), "mlp_mnist1d")   # JSON-able
    print("\\n".join(predict_markdown(result)))
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow.compute as pc
import torch

from pipelines.benchmark.stats import LEVEL, N_BOOT
from zoo import store, wsl
from zoo.errors import ZooError

SETTINGS = {"folds": 5, "seed": 0, "min_epoch": 1, "methods": list(wsl.METHODS)}
TASKS = {"test_acc": "regression", "gap": "regression", "phase": "classification"}
METRICS = {"regression": wsl.regression_metrics, "classification": wsl.classification_metrics}


def nfn_available() -> bool:
    try:
        import nfn  # noqa: F401
    except ImportError:
        return False
    return True


def load_rows(root: Path, zoo: str, min_epoch: int = 1) -> tuple[list[dict], list[dict], str]:
    """(rows, state dicts, family) of a zoo's checkpoints at epoch >= min_epoch, status ok, each
    row with `gap` and its cell's `phase` ("" when undetermined). Errors say what is missing
    and which command computes it."""
    manifest = store.open_manifest(root)
    zoos = manifest.get("zoos", {})
    if zoo not in zoos:
        raise ZooError(f"{root}/manifest.json: no zoo {zoo!r}; valid: {', '.join(sorted(zoos)) or 'none (run `zoo build`)'}")
    t = store.read_rows(root, zoo)
    need = ["model_id", "cell", "epoch", "status", "family", "test_acc", "train_acc", "shard", "tensor_prefix"]
    missing = [c for c in need if c not in t.column_names]
    if missing:
        raise ZooError(f"{store.data_dir(root, zoo)}: the rows lack the columns {missing}; rebuild the zoo with `zoo build`")
    t = t.select(need)
    t = t.filter(pc.and_(pc.equal(t["status"], "ok"), pc.greater_equal(t["epoch"], int(min_epoch))))
    rows = t.to_pylist()
    if not rows:
        raise ZooError(f"zoo {zoo}: no checkpoint with status ok at epoch >= {min_epoch}; valid min_epoch: 0..epochs")
    for col in ("test_acc", "train_acc"):
        bad = sum(1 for r in rows if r[col] is None or not math.isfinite(r[col]))
        if bad:
            raise ZooError(f"zoo {zoo}: {bad} of {len(rows)} rows have no {col}; `zoo study predict` needs the "
                           "accuracies `zoo build` records for a classification zoo (a PDE zoo has test_rel_l2 instead)")
    families = sorted({r["family"] for r in rows})
    if len(families) != 1 or families[0] not in wsl.SUPPORTED:
        raise ZooError(f"zoo {zoo}: `zoo study predict` supports the families {', '.join(wsl.SUPPORTED)}; "
                       f"this zoo has {families}")
    cells = store.read_cells(root, zoo)
    if cells is None or "phase" not in cells.column_names:
        raise ZooError(f"{store.data_dir(root, zoo)}: no cells-*.parquet, so no phase labels; "
                       f"compute them with `zoo metrics {root}`")
    phase = {r["cell"]: r["phase"] for r in cells.select(["cell", "phase"]).to_pylist()}
    for r in rows:
        r["gap"] = float(r["train_acc"]) - float(r["test_acc"])
        r["phase"] = phase.get(r["cell"]) or ""
    rows.sort(key=lambda r: (r["cell"], r["model_id"], r["epoch"]))
    states = [{k: torch.from_numpy(np.array(v)) for k, v in store.read_state(root, r).items()} for r in rows]
    return rows, states, families[0]


def _fit_predict(method: str, kind: str, X: np.ndarray, states: list[dict], y: np.ndarray, depth: np.ndarray,
                 tr: np.ndarray, te: np.ndarray, family: str, seed: int) -> np.ndarray:
    """Predictions for rows `te` of `method` fit on rows `tr`."""
    if method != "nfn":
        from threadpoolctl import threadpool_limits

        # sklearn's OpenMP (gradient boosting) inside the worker's thread budget: oversubscribed
        # cores make a second-long fit take minutes
        with threadpool_limits(torch.get_num_threads()):
            return wsl.stats_estimator(method, kind, seed).fit(X[tr], y[tr]).predict(X[te])
    out = np.empty(len(te), dtype=y.dtype)
    for d in np.unique(depth[te]):  # one NFN per depth: its equivariant layers are per layer position
        trd, at = tr[depth[tr] == d], depth[te] == d
        if len(np.unique(y[trd])) < 2:  # nothing to learn at this depth: its one training value (or the fold's)
            pool = y[trd] if len(trd) else y[tr]
            out[at] = pool[0] if kind == "classification" or len(trd) else pool.mean()
            continue
        model = wsl.NFNPredictor(kind, family=family, seed=seed).fit([states[i] for i in trd], y[trd])
        out[at] = model.predict([states[i] for i in te[at]])
    return out


def _json(v: float) -> float | None:
    return float(v) if v is not None and math.isfinite(v) else None


def _nfn_skip(states: list[dict], family: str) -> str | None:
    """Why the NFN cannot run on this zoo (None when it can)."""
    if not nfn_available():
        return f"the nfn package is not installed: {wsl.NFN_HINT}"
    try:
        wsl.to_weight_space_features(states[:1], family)
    except ZooError as e:
        return str(e)
    return None


def predict_study(root: str | Path, zoo: str, *, folds: int = 5, seed: int = 0, methods: list[str] | None = None,
                  min_epoch: int = 1, progress: Callable[[str], None] | None = None) -> dict:
    """Every task x method of the WSL benchmark on one zoo (see the module docstring), as a
    JSON-able dict: settings, the rows / models / depths used, and per task and method the
    metric values, their bootstrap intervals, n_rows, n_models, per-epoch values and seconds.
    A method that cannot run (nfn not installed, a zoo with LayerNorms) is listed in `skipped`
    with the reason. `progress(message)` is called after each task x method."""
    methods = list(wsl.METHODS if methods is None else methods)
    unknown = sorted(set(methods) - set(wsl.METHODS))
    if unknown or not methods:
        raise ZooError(f"`zoo study predict`: methods {unknown or methods} are not valid; valid: {', '.join(wsl.METHODS)}")
    root = Path(root)
    rows, states, family = load_rows(root, zoo, min_epoch)
    X = np.stack([wsl.layer_statistics(st, family) for st in states])  # (rows, N_FEATURES)
    depth = np.array([wsl.depth_of(st, family) for st in states])
    ids = np.array([r["model_id"] for r in rows])
    epochs = np.array([r["epoch"] for r in rows])
    splits = wsl.grouped_folds(ids, folds, seed=seed, strata=[r["cell"] for r in rows])
    skipped: dict[str, str] = {}
    if "nfn" in methods and (why := _nfn_skip(states, family)):
        methods.remove("nfn")
        skipped["nfn"] = why
    settings = {"folds": folds, "seed": seed, "min_epoch": min_epoch, "methods": methods, "n_boot": N_BOOT,
                "level": LEVEL, "split": "grouped by model id, a cell's models dealt to different folds",
                "features": f"zoo.wsl.layer_statistics ({wsl.N_FEATURES} per net)",
                "nfn": {**wsl.NFNPredictor(seed=seed).config(), "kind": None, "fit": "per depth group"}}
    out = {"zoo": zoo, "family": family, "rows": len(rows), "models": len(set(ids.tolist())),
           "depths": {int(d): int((depth == d).sum()) for d in np.unique(depth)},
           "epochs": sorted(set(epochs.tolist())), "settings": settings, "skipped": skipped, "tasks": {}}
    preds: dict[tuple[str, str], np.ndarray] = {}
    for task, kind in TASKS.items():
        keep = np.array([task != "phase" or bool(r["phase"]) for r in rows])
        y = np.array([r[task] for r in rows]).astype(str if kind == "classification" else np.float64)
        entry = {"kind": kind, "n_rows": int(keep.sum()), "n_models": len(set(ids[keep].tolist())), "methods": {}}
        if kind == "classification":
            entry["classes"] = {c: int((y[keep] == c).sum()) for c in sorted(set(y[keep].tolist()))}
        out["tasks"][task] = entry
        if not keep.any():
            entry["skipped"] = f"no cell of zoo {zoo} has a phase label (all undetermined)"
            continue
        metric = METRICS[kind]
        for m in methods:
            t0 = time.perf_counter()
            p = np.empty(len(rows), dtype=y.dtype)
            for tr, te in splits:
                tr, te = tr[keep[tr]], te[keep[te]]
                if len(te):
                    p[te] = _fit_predict(m, kind, X, states, y, depth, tr, te, family, seed)
            point, ci = wsl.bootstrap_metrics(metric, y[keep], p[keep], ids[keep], n_boot=N_BOOT, level=LEVEL, seed=seed)
            by_epoch = {int(e): {k: _json(v) for k, v in metric(y[keep & (epochs == e)], p[keep & (epochs == e)]).items()}
                        for e in np.unique(epochs[keep])}
            entry["methods"][m] = {"values": {k: _json(v) for k, v in point.items()}, "ci": ci,
                                   "n_rows": int(keep.sum()), "n_models": entry["n_models"], "by_epoch": by_epoch,
                                   "seconds": time.perf_counter() - t0}
            preds[(task, m)] = p
            if progress:
                progress(f"{zoo} {task} {m}: " + ", ".join(f"{k} {_fmt(v)}" for k, v in point.items())
                         + f" ({time.perf_counter() - t0:.1f}s)")
    out["best"] = {t: _best(e) for t, e in out["tasks"].items() if e["methods"]}
    out["cells"] = _per_cell(rows, preds, out["best"])
    return out


def _best(task: dict) -> str:
    """The method with the highest Kendall tau (regression) or balanced accuracy (phase)."""
    key = "kendall_tau" if task["kind"] == "regression" else "balanced_accuracy"
    vals = {m: r["values"][key] for m, r in task["methods"].items() if r["values"][key] is not None}
    return max(vals, key=vals.get) if vals else next(iter(task["methods"]))


def _per_cell(rows: list[dict], preds: dict, best: dict) -> dict[str, dict]:
    """Per cell: the best method's median absolute error on test accuracy and on the gap, and how
    often it names the phase (what the figures draw over the plane)."""
    out: dict[str, dict] = {}
    for i, r in enumerate(rows):
        c = out.setdefault(r["cell"], {"acc_error": [], "gap_error": [], "phase_correct": []})
        if "test_acc" in best:
            c["acc_error"].append(abs(float(preds[("test_acc", best["test_acc"])][i]) - r["test_acc"]))
        if "gap" in best:
            c["gap_error"].append(abs(float(preds[("gap", best["gap"])][i]) - r["gap"]))
        if r["phase"] and "phase" in best:
            c["phase_correct"].append(float(preds[("phase", best["phase"])][i] == r["phase"]))

    def med(v: list[float]) -> float | None:
        return float(np.median(v)) if v else None

    return {cell: {"abs_error_acc": med(v["acc_error"]), "abs_error_gap": med(v["gap_error"]),
                   "phase_accuracy": float(np.mean(v["phase_correct"])) if v["phase_correct"] else None,
                   "per_seed": {"abs_error_acc": v["acc_error"], "abs_error_gap": v["gap_error"]}}
            for cell, v in out.items()}


def _fmt(v, ci=None) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{v:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


METRIC_NAMES = {"kendall_tau": "Kendall τ", "r2": "R²", "accuracy": "accuracy", "balanced_accuracy": "balanced accuracy"}


def predict_markdown(result: dict) -> list[str]:
    """The task x method table (value [95% interval] per metric), the skipped methods and the
    anchors' numbers: lines of results.md (pipelines.studies.run joins them)."""
    methods = list(dict.fromkeys(m for t in result["tasks"].values() for m in t["methods"]))
    s = result["settings"]
    lines = ["## Weight-space learning", "",
             f"{result['rows']} checkpoints of {result['models']} models (epochs {', '.join(map(str, result['epochs']))}; "
             f"depth: rows {result['depths']}), {s['folds']}-fold cross-validation grouped by model id (seed {s['seed']}), "
             f"out-of-fold predictions pooled; {s['level']:.0%} bootstrap intervals over test models ({s['n_boot']} replicates).",
             "", "| task | metric | " + " | ".join(methods) + " |", "|---|---|" + "---|" * len(methods)]
    for task, t in result["tasks"].items():
        if t.get("skipped"):
            lines.append(f"| {task} | – | " + " | ".join(["skipped"] * len(methods)) + " |")
            continue
        keys = list(next(iter(t["methods"].values()))["values"]) if t["methods"] else []
        for k in keys:
            cells = []
            for m in methods:
                r = t["methods"].get(m)
                if r is None:
                    cells.append("skipped")
                    continue
                best = " **(best)**" if result.get("best", {}).get(task) == m and k in ("kendall_tau", "balanced_accuracy") else ""
                cells.append(_fmt(r["values"][k], (r["ci"] or {}).get(k)) + best)
            lines.append(f"| {task} | {METRIC_NAMES.get(k, k)} | " + " | ".join(cells) + " |")
    lines.append("")
    for task, t in result["tasks"].items():
        if t.get("skipped"):
            lines.append(f"- {task} skipped: {t['skipped']}")
    for m, why in result.get("skipped", {}).items():
        lines.append(f"- {m} skipped: {why}")
    lines += ["- constant: each fold predicts its training mean / majority class, so its pooled out-of-fold "
              "predictions vary a little by fold (hence a τ near 0, slightly negative, rather than undefined).",
              "- Anchors: Unterthiner et al. 2020 (weight statistics + GBM on 30k CNNs): R² > 0.98 for test accuracy; "
              "Zhou et al. 2023 (invariant NFN, CIFAR-10-GS): Kendall τ 0.934.", ""]
    return lines


def compute(payload: dict, states, settings: dict) -> dict:
    """The stage's entry (pipelines.studies.run, one job per zoo): payload = {"root", "zoo"}."""
    s = {**SETTINGS, **settings}
    return predict_study(Path(payload["root"]), payload["zoo"], folds=int(s["folds"]), seed=int(s["seed"]),
                         methods=list(s["methods"]), min_epoch=int(s["min_epoch"]))


FIGURES = {"abs_error_acc": "|predicted − true| test accuracy (best method)",
           "phase_accuracy": "phase predicted right (best method)"}
COLUMNS = ("abs_error_acc", "abs_error_gap", "phase_accuracy")
