"""The on-disk dataset: a Hugging Face dataset repository, the same bytes locally and on the Hub.

    README.md                                  dataset card (YAML configs + features, prose)
    data/<zoo>/models-<i>-<bundle>.parquet      one row per (model, checkpoint epoch)
    weights/<zoo>/shard-<bundle>-<k>.safetensors  tensors named <model_id>/<epoch>/<param>
    manifest.json                              spec, versions, row counts, sha256 of every file

Every file is written to a temporary name and renamed, so a crash never leaves a half-written
file; a bundle counts as committed once its parquet file exists (its shards are renamed first).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from zoo.errors import ZooError
from zoo.machine import machine_info

FORMAT = "weight-zoo/1"
TMP_SUFFIX = ".tmp"
CURVES = ("train_loss", "train_acc", "test_loss", "test_acc", "train_rel_l2", "test_rel_l2")

# column -> (arrow type, description for the dataset card)
COLUMNS: dict[str, tuple[pa.DataType, str]] = {
    "model_id": (pa.string(), "stable hash of (zoo, task, architecture, training hyperparameters, seed)"),
    "zoo": (pa.string(), "zoo (dataset config) name"),
    "task": (pa.string(), "task the model was trained on (`mnist1d`, `digits`, `pydoc`, `convection`, `hf:<repo_id>`)"),
    "task_args": (pa.string(), "JSON of the task's arguments, with the cell's value when the load axis is one (convection's beta)"),
    "family": (pa.string(), "model family (mlp, cnn, resnet, vit, gpt, pinn)"),
    "arch": (pa.string(), "JSON of the family and its knobs: enough to rebuild the net"),
    "arch_id": (pa.string(), "8 hex digits of the sha256 of `arch`: select one architecture's rows by it"),
    "init": (pa.string(), "initialization scheme of epoch 0"),
    "cell": (pa.string(), "cell id: `T<i>L<j>` on a grid (index i on the temperature axis, j on the load axis), "
                          "`P<k>` for the k-th sampled point (--phase random); with sampled architectures "
                          "suffixed by `-<arch_id>`, the group whose seeds get landscape metrics together"),
    "temperature_param": (pa.string(), "hyperparameter on the temperature axis (batch_size or lr)"),
    "temperature": (pa.float64(), "its value for this model"),
    "load_param": (pa.string(), "hyperparameter on the load axis (width, data_fraction, label_noise, or a task argument such as beta)"),
    "load": (pa.float64(), "its value for this model"),
    "seed": (pa.int64(), "seed of the initialization and the data order"),
    "epoch": (pa.int64(), "checkpoint epoch of this row (0 = the initialization)"),
    "epochs": (pa.int64(), "epochs of training in total"),
    "optimizer": (pa.string(), "sgd, adam or adamw"),
    "schedule": (pa.string(), "learning-rate schedule: constant, cosine or onecycle (per step)"),
    "lr": (pa.float64(), "base learning rate"),
    "momentum": (pa.float64(), "SGD momentum"),
    "weight_decay": (pa.float64(), "weight decay (L2 for sgd/adam, decoupled for adamw)"),
    "batch_size": (pa.int64(), "mini-batch size"),
    "width": (pa.int64(), "width knob of the net (units, channels or model dim), null if the family has none"),
    "depth": (pa.int64(), "depth knob of the net, null if the family has none"),
    "data_fraction": (pa.float64(), "fraction of the training split used (a fixed subset per fraction)"),
    "label_noise": (pa.float64(), "fraction of training labels replaced by a different class"),
    "train_loss": (pa.float64(), "training loss on the (possibly noisy) training subset at this epoch: mean "
                   "cross-entropy per prediction (per character for pydoc), or the PINN loss for convection"),
    "train_acc": (pa.float64(), "accuracy on the training subset at this epoch (next-character accuracy for "
                  "pydoc); null for convection"),
    "test_loss": (pa.float64(), "the same loss on the task's test split at this epoch"),
    "test_acc": (pa.float64(), "accuracy on the task's test split at this epoch; null for convection"),
    "train_rel_l2": (pa.float64(), "convection only: relative L2 error against the analytic solution at the "
                     "training collocation points"),
    "test_rel_l2": (pa.float64(), "convection only: relative L2 error against the analytic solution on the "
                    "test grid (51 t x 64 x)"),
    **{
        f"curve_{k}": (pa.list_(pa.float64()), f"learning curve: {k} after each epoch 0..epochs")
        for k in CURVES
    },
    "status": (pa.string(), "ok, or diverged (training loss became NaN/inf; the model was frozen then)"),
    "diverged_epoch": (pa.int64(), "epoch in which the model diverged, null if it did not"),
    "n_params": (pa.int64(), "number of trainable parameters"),
    "shard": (pa.string(), "safetensors shard holding this checkpoint, relative to the dataset root"),
    "tensor_prefix": (pa.string(), "prefix of this checkpoint's tensors in the shard: `<model_id>/<epoch>/`"),
    "bundle": (pa.string(), "id of the bundle (one Ray task) that trained the model"),
    "repo_id": (pa.string(), "Hub dataset repo the row was published to (set by `zoo push`; null locally)"),
    "revision": (pa.string(), "branch of that repo the row was published to"),
    "weights": (pa.list_(pa.float32()), "flat float32 state_dict in state_dict order; null above the size limit"),
}

# landscape metrics of the model's cell (at the spec's metrics epoch), copied onto every row
CELL_METRICS: dict[str, tuple[pa.DataType, str]] = {
    "hessian_top_eig": (pa.float64(), "top Hessian eigenvalue of the training loss (power iteration), mean over the cell's seeds"),
    "hessian_trace": (pa.float64(), "Hessian trace of the training loss (Hutchinson, Rademacher probes), mean over seeds"),
    "log_hessian_trace": (pa.float64(), "log10 of hessian_trace (null if the trace is not positive)"),
    "cka_logits": (pa.float64(), "linear CKA of the logits between seeds on held-out data, mean over seed pairs"),
    "cka_features": (pa.float64(), "linear CKA of the penultimate features between seeds, mean over seed pairs"),
    "mc_loss": (pa.float64(), "mode connectivity on training loss along a Bezier curve between seeds, ½(v0+v1) − v(t*); < 0 = barrier"),
    "mc_error": (pa.float64(), "mode connectivity on training error, same definition"),
    "phase": (pa.string(), "phase of the cell: I, II, III, IV-A or IV-B (empty when undetermined)"),
}
COLUMNS.update({k: (t, d + " [cell metric]") for k, (t, d) in CELL_METRICS.items()})

# the per-cell table: data/<zoo>/cells-<ti>-<li>.parquet, one row per cell
CELL_COLUMNS: dict[str, tuple[pa.DataType, str]] = {
    "zoo": (pa.string(), "zoo name"),
    "cell": (pa.string(), "cell id `T<i>L<j>` or `P<k>` (a sampled point), with `-<arch_id>` for sampled architectures"),
    "arch_id": (pa.string(), "architecture of the cell's models (zoo.spec.arch_id)"),
    "temperature_param": (pa.string(), "hyperparameter on the temperature axis"),
    "temperature": (pa.float64(), "its value"),
    "load_param": (pa.string(), "hyperparameter on the load axis"),
    "load": (pa.float64(), "its value"),
    "metrics_epoch": (pa.int64(), "checkpoint epoch the metrics are computed at"),
    "n_models": (pa.int64(), "models of the cell that did not diverge (the ones measured)"),
    "n_diverged": (pa.int64(), "models of the cell that diverged (excluded)"),
    "n_pairs": (pa.int64(), "seed pairs used for CKA and mode connectivity"),
    "train_loss": (pa.float64(), "mean training loss of the cell's models at the metrics epoch"),
    "train_error": (pa.float64(), "mean training error (1 - accuracy, or the relative L2 error for convection)"),
    "test_loss": (pa.float64(), "mean test loss"),
    "test_acc": (pa.float64(), "mean test accuracy (NaN for convection)"),
    "test_rel_l2": (pa.float64(), "mean test relative L2 error (convection; NaN otherwise)"),
    **{k: v for k, v in CELL_METRICS.items() if k != "phase"},
    "hessian_trace_stderr": (pa.float64(), "standard error of the Hutchinson trace, mean over seeds"),
    "curve_t": (pa.list_(pa.float64()), "positions t in [0, 1] where the Bezier curves were evaluated"),
    "curve_loss": (pa.list_(pa.float64()), "training loss along the curve, mean over seed pairs"),
    "curve_error": (pa.list_(pa.float64()), "training error along the curve, mean over seed pairs"),
    "member_ids": (pa.list_(pa.string()), "model ids measured, in seed order"),
    "member_hessian_top_eig": (pa.list_(pa.float64()), "each model's own top Hessian eigenvalue"),
    "member_hessian_trace": (pa.list_(pa.float64()), "each model's own Hessian trace"),
    "member_train_loss": (pa.list_(pa.float64()), "each model's own training loss at the metrics epoch"),
    "pair_members": (pa.list_(pa.list_(pa.int64())), "the seed pairs compared, as indices (i, j), i < j, into member_ids "
                                                      "(all pairs, or metrics.pairs of them)"),
    "pair_mc_loss": (pa.list_(pa.float64()), "mc_loss of each seed pair (in the order of pair_members)"),
    "pair_mc_error": (pa.list_(pa.float64()), "mc_error of each seed pair"),
    "pair_cka_logits": (pa.list_(pa.float64()), "cka_logits of each seed pair"),
    "pair_cka_features": (pa.list_(pa.float64()), "cka_features of each seed pair"),
    "phase": CELL_METRICS["phase"],
    "phase_margin": (pa.float64(), "distance of the label's deciding metric from its threshold in seed standard "
                                   "deviations (smallest along the decision path); NaN when no spread can be estimated"),
    "phase_decided_by": (pa.string(), "metric with that smallest margin: train_loss, log_hessian_trace, mc_loss/mc_error "
                                      "or cka_logits/cka_features"),
    "phase_uncertain": (pa.bool_(), "phase_margin below the spec's metrics.phases.margin (default 1) or NaN: "
                                    "the label may differ on another machine"),
}


# a PBT zoo's rows (`--phase pbt`) have these columns besides the others: the history of the row's
# weights, which may run through other members' weights (exploit copies them)
PBT_COLUMNS: dict[str, tuple[pa.DataType, str]] = {
    "pbt_experiment": (pa.string(), "the PBT experiment (one Tune run: one seed x one load value) the member belongs to"),
    "parent_id": (pa.string(), "model_id of the member whose weights this one last copied (PBT exploit) before this "
                               "checkpoint; null if it never copied"),
    "lineage": (pa.string(), "JSON list of the segments of this checkpoint's weight history, oldest first: "
                             "{member, seed, from_epoch}; the first is the member that initialized the weights, "
                             "each next one copied the previous one's weights (and optimizer state) at from_epoch"),
    **{f"schedule_{k}": (pa.list_(t), f"{k} used in each epoch 1..epoch of this checkpoint's history (PBT's discovered schedule)")
       for k, t in (("lr", pa.float64()), ("batch_size", pa.int64()), ("momentum", pa.float64()),
                    ("weight_decay", pa.float64()))},
    "curve_val_loss": (pa.list_(pa.float64()), "loss on the validation split PBT ranks by (carved from the training "
                                               "split), after each epoch 0..epoch of the history"),
    "curve_val_acc": (pa.list_(pa.float64()), "accuracy on that validation split, after each epoch 0..epoch"),
}


def columns(phase: str = "grid") -> dict[str, tuple[pa.DataType, str]]:
    """The row columns of a zoo built with `phase` (a PBT zoo has PBT_COLUMNS too)."""
    return {**COLUMNS, **PBT_COLUMNS} if phase == "pbt" else COLUMNS


def schema(phase: str = "grid") -> pa.Schema:
    return pa.schema([(name, typ) for name, (typ, _) in columns(phase).items()])


def features(phase: str = "grid"):
    import datasets

    return datasets.Features.from_arrow_schema(schema(phase))


def cell_schema() -> pa.Schema:
    return pa.schema([(name, typ) for name, (typ, _) in CELL_COLUMNS.items()])


def cell_features():
    import datasets

    return datasets.Features.from_arrow_schema(cell_schema())


# ---- atomic writes --------------------------------------------------------------------------
def _fsync_replace(tmp: Path, final: Path) -> None:
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, final)


def finite_json(x):
    """NaN / inf -> None (JSON null), recursively through dicts, lists and tuples: what
    json.dumps(..., allow_nan=False) accepts, so results files are strict JSON."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: finite_json(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [finite_json(v) for v in x]
    return x


def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + TMP_SUFFIX)
    tmp.write_text(text)
    _fsync_replace(tmp, path)


def write_parquet_atomic(table: pa.Table, path: Path) -> None:
    """Write a parquet file under a temporary name, fsync, then rename over `path`."""
    tmp = path.with_name(path.name + TMP_SUFFIX)
    pq.write_table(table, tmp)
    _fsync_replace(tmp, path)


def remove_temp_files(root: Path) -> int:
    """Delete leftovers of an interrupted write (*.tmp); returns how many."""
    n = 0
    if root.exists():
        for p in root.rglob(f"*{TMP_SUFFIX}"):
            p.unlink()
            n += 1
    return n


# ---- bundles --------------------------------------------------------------------------------
def data_dir(root: Path, zoo: str) -> Path:
    return root / "data" / zoo


def weights_dir(root: Path, zoo: str) -> Path:
    return root / "weights" / zoo


def parquet_name(index: int, bundle_id: str) -> str:
    return f"models-{index:05d}-{bundle_id}.parquet"


def committed_bundles(root: Path, zoo: str, phase: str = "grid") -> set[str]:
    """Ids of the bundles whose rows are committed in the current schema. A file written by an
    older version (a column missing, e.g. `arch_id`) does not count: its bundle is trained
    again, to the same weights, and its file rewritten with every column."""
    d = data_dir(root, zoo)
    if not d.exists():
        return set()
    names = schema(phase).names
    return {p.stem.split("-", 2)[2] for p in d.glob("models-*.parquet") if pq.read_schema(p).names == names}


def write_bundle(root: Path, zoo: str, index: int, bundle_id: str, rows: list[dict],
                 tensors: list[tuple[str, dict[str, np.ndarray]]], shard_max_mb: float, phase: str = "grid") -> None:
    """Commit one bundle: its shards (tensors grouped per checkpoint, never split) then its parquet.

    `tensors`: [(prefix "<model_id>/<epoch>/", state_dict), ...] in row order; the shard name of
    each row is filled in here.
    """
    from safetensors.numpy import save_file

    wdir, ddir = weights_dir(root, zoo), data_dir(root, zoo)
    wdir.mkdir(parents=True, exist_ok=True)
    ddir.mkdir(parents=True, exist_ok=True)
    limit = shard_max_mb * 2**20
    shards: list[dict[str, np.ndarray]] = [{}]
    size = 0
    prefix_shard: dict[str, int] = {}
    for prefix, state in tensors:
        nbytes = sum(np.asarray(v).nbytes for v in state.values())
        if shards[-1] and size + nbytes > limit:
            shards.append({})
            size = 0
        for k, v in state.items():
            shards[-1][prefix + k] = np.ascontiguousarray(v)
        size += nbytes
        prefix_shard[prefix] = len(shards) - 1
    names = [f"shard-{bundle_id}-{k:05d}.safetensors" for k in range(len(shards))]
    for name, content in zip(names, shards):
        tmp = wdir / (name + TMP_SUFFIX)
        # one metadata key: safetensors writes a metadata map in arbitrary order, and shards must be
        # byte-identical between runs (resumed builds are checked by sha256)
        meta = {"weight-zoo": json.dumps({"zoo": zoo, "bundle": bundle_id, "format": FORMAT}, sort_keys=True)}
        save_file(content, str(tmp), metadata=meta)
        _fsync_replace(tmp, wdir / name)
    for row in rows:
        row["shard"] = f"weights/{zoo}/{names[prefix_shard[row['tensor_prefix']]]}"
    path = ddir / parquet_name(index, bundle_id)
    write_parquet_atomic(pa.Table.from_pylist(rows, schema=schema(phase)), path)
    for old in ddir.glob(f"models-*-{bundle_id}.parquet"):  # the same bundle written by an older version
        if old != path:
            old.unlink()


def model_files(root: Path, zoo: str) -> list[Path]:
    return sorted(data_dir(root, zoo).glob("models-*.parquet"))


def read_rows(root: Path, zoo: str, columns: list[str] | None = None) -> pa.Table:
    """The zoo's model rows (every parquet file), or only `columns` of them: the flat weights
    column makes the whole table of a big zoo slow to read when only the row index is wanted."""
    files = model_files(root, zoo)
    if not files:
        raise ZooError(f"{data_dir(root, zoo)}: no parquet files for zoo {zoo!r}")
    return pa.concat_tables([pq.read_table(f, columns=columns) for f in files])


def read_state(root: Path, row: dict) -> dict[str, np.ndarray]:
    """The checkpoint of a row from its shard (canonical, shape-exact), in stored order."""
    from safetensors import safe_open

    path = Path(root) / row["shard"]
    prefix = row["tensor_prefix"]
    with safe_open(str(path), framework="np") as f:
        keys = [k for k in f.keys() if k.startswith(prefix)]
        if not keys:
            raise ZooError(f"{path}: no tensors under {prefix!r}")
        return {k[len(prefix):]: f.get_tensor(k) for k in keys}


# ---- cells ----------------------------------------------------------------------------------
def cell_file(root: Path, zoo: str, cell: str) -> Path:
    """data/<zoo>/cells-<ti>-<li>.parquet for a grid cell `T<ti>L<li>` (zero-padded so files sort
    in plane order), cells-<id>.parquet for a sampled point or a (cell, architecture) group."""
    m = re.fullmatch(r"T(\d+)L(\d+)", cell)
    stem = f"{int(m[1]):03d}-{int(m[2]):03d}" if m else cell
    return data_dir(root, zoo) / f"cells-{stem}.parquet"


def cell_files(root: Path, zoo: str) -> list[Path]:
    return sorted(data_dir(root, zoo).glob("cells-*.parquet"))


def write_cell(path: Path, row: dict) -> None:
    """Commit one cell's metrics (one-row parquet) atomically."""
    write_parquet_atomic(pa.Table.from_pylist([row], schema=cell_schema()), path)


def read_cells(root: Path, zoo: str) -> pa.Table | None:
    files = cell_files(root, zoo)
    return pa.concat_tables([pq.read_table(f) for f in files]) if files else None


def annotate_models(root: Path, zoo: str, cells: dict[str, dict]) -> None:
    """Copy each cell's metrics onto its model rows (rewrites each models file atomically)."""
    for f in model_files(root, zoo):
        t = pq.read_table(f)
        ids = t.column("cell").to_pylist()
        for col in CELL_METRICS:
            values = [cells.get(c, {}).get(col) for c in ids]
            t = t.set_column(t.schema.get_field_index(col), col, pa.array(values, type=COLUMNS[col][0]))
        write_parquet_atomic(t, f)


# ---- manifest -------------------------------------------------------------------------------
def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("weight-zoo", "torch", "datasets", "huggingface_hub", "safetensors", "pyarrow", "ray", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def build_machine(manifest: dict) -> dict:
    """The machine block of a manifest: this CPU, torch, and the training threads per worker
    (`compute.threads_per_worker` of its zoos; the largest where they differ). Bytes are
    reproducible on one machine; across CPUs the float32 training differs by rounding (README)."""
    threads = [int(z.get("spec", {}).get("compute", {}).get("threads_per_worker", 1))
               for z in manifest.get("zoos", {}).values()]
    return machine_info(torch_threads=max(threads, default=1))


def read_manifest(root: Path) -> dict:
    path = root / "manifest.json"
    if not path.exists():
        return {"format": FORMAT, "zoos": {}, "files": {}}
    try:
        m = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ZooError(f"{path}: not valid JSON ({e})") from None
    if m.get("format") != FORMAT:
        raise ZooError(f"{path}: format {m.get('format')!r} is not {FORMAT!r}")
    return m


def open_manifest(root: Path) -> dict:
    """The manifest of an existing dataset folder; a ZooError if `root` is not one."""
    if not (Path(root) / "manifest.json").exists():
        raise ZooError(f"{root}: no manifest.json; not a zoo dataset folder")
    return read_manifest(Path(root))


def write_manifest(root: Path, manifest: dict) -> None:
    write_text_atomic(root / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def spec_digest(spec_json: dict) -> str:
    return hashlib.sha256(json.dumps(spec_json, sort_keys=True).encode()).hexdigest()


def tracked_files(root: Path) -> list[Path]:
    """Files the manifest covers: the card, data/, weights/, figures/, studies/ (not the manifest itself)."""
    out = [root / "README.md"] if (root / "README.md").exists() else []
    for sub in ("data", "weights", "figures", "studies"):
        d = root / sub
        if d.exists():
            out += sorted(p for p in d.rglob("*") if p.is_file() and not p.name.endswith(TMP_SUFFIX))
    return out


def zoo_summary(root: Path, zoo: str) -> dict:
    t = read_rows(root, zoo).select(["model_id", "cell", "arch_id", "status", "n_params", "epoch", "epochs",
                                     "test_acc"]).to_pydict()
    first = {}
    for mid, st, n in zip(t["model_id"], t["status"], t["n_params"]):
        first.setdefault(mid, (st, n))
    sizes = [n for _, n in first.values()]
    return {
        "rows": len(t["model_id"]),
        "models": len(first),
        "cells": len(set(t["cell"])),
        "architectures": len(set(t["arch_id"])),
        "checkpoints": sorted(set(t["epoch"])),
        "diverged": sum(1 for st, _ in first.values() if st == "diverged"),
        "n_params": {"min": min(sizes), "max": max(sizes)},
        "final_test_acc": _final_acc(t),
    }


def _final_acc(t: dict) -> dict | None:
    """Best and median test accuracy of the models that finished training (last epoch, not
    diverged); None for a zoo without accuracy (a PDE)."""
    acc = [a for a, e, n, st in zip(t["test_acc"], t["epoch"], t["epochs"], t["status"])
           if e == n and st == "ok" and a is not None and np.isfinite(a)]
    return {"best": float(max(acc)), "median": float(np.median(acc)), "models": len(acc)} if acc else None


def refresh_manifest(root: Path, manifest: dict) -> dict:
    """Recompute the file hashes (call after the card is written)."""
    manifest["files"] = {
        str(p.relative_to(root)): {"sha256": sha256_file(p), "bytes": p.stat().st_size} for p in tracked_files(root)
    }
    manifest["versions"] = versions()
    manifest["machine"] = build_machine(manifest)
    write_manifest(root, manifest)
    return manifest


def verify(root: Path) -> list[str]:
    """Problems found comparing the folder with manifest.json (empty list = all good)."""
    root = Path(root)
    if not (root / "manifest.json").exists():
        return [f"{root}: no manifest.json (not a zoo dataset, or its build never finished)"]
    m = read_manifest(root)
    problems = []
    for name, z in m.get("zoos", {}).items():
        if z.get("status") != "complete":
            problems.append(f"zoo {name}: build not complete (status {z.get('status')!r}); rerun `zoo build`"
                            + (" or `zoo metrics`" if z.get("status") == "trained" else ""))
            continue
        try:
            s = zoo_summary(root, name)
        except ZooError as e:
            problems.append(str(e))
            continue
        for key in ("rows", "models", "cells"):
            if s[key] != z.get(key):
                problems.append(f"zoo {name}: {key} = {s[key]} in the parquet files, manifest says {z.get(key)}")
        if "phases" in z and len(cell_files(root, name)) != z.get("cells"):
            problems.append(f"zoo {name}: {len(cell_files(root, name))} cell metric files, manifest says {z.get('cells')} cells")
    listed = m.get("files", {})
    present = {str(p.relative_to(root)) for p in tracked_files(root)}
    for rel in sorted(set(listed) - present):
        problems.append(f"{rel}: listed in manifest.json but missing")
    for rel in sorted(present - set(listed)):
        problems.append(f"{rel}: present but not listed in manifest.json")
    for rel in sorted(set(listed) & present):
        if sha256_file(root / rel) != listed[rel]["sha256"]:
            problems.append(f"{rel}: sha256 differs from manifest.json")
    return problems
