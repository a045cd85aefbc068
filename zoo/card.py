"""The dataset card (README.md): YAML `configs:` + `dataset_info` features per zoo, then prose."""
from __future__ import annotations

from pathlib import Path

import yaml

from zoo import store


def _yaml_header(manifest: dict) -> dict:
    cell_feats = store.cell_features()._to_yaml_list()
    configs, infos = [], []
    for name, z in sorted(manifest["zoos"].items()):
        if z.get("status") != "complete":
            continue
        cfg = {"config_name": name, "data_files": [{"split": "train", "path": f"data/{name}/models-*.parquet"}]}
        if not configs:
            cfg["default"] = True
        configs.append(cfg)
        infos.append({"config_name": name, "features": store.features(z.get("spec", {}).get("phase", "grid"))._to_yaml_list()})
        if "phases" in z:  # the metrics stage ran: the per-cell table is its own config
            configs.append({"config_name": f"{name}_cells",
                            "data_files": [{"split": "train", "path": f"data/{name}/cells-*.parquet"}]})
            infos.append({"config_name": f"{name}_cells", "features": cell_feats})
    return {
        "pretty_name": f"{manifest.get('collection', 'zoo')} model zoo",
        "tags": ["weight-space-learning", "model-zoo", "phase-transitions", "safetensors"],
        "configs": configs,
        "dataset_info": infos,
    }


def _fmt_values(values) -> str:
    return ", ".join(f"{v:g}" for v in values)


def _fmt_axis(axis: dict) -> str:
    """A grid axis (values) or a sampled one (a range, log or linear, or values to choose from)."""
    if axis.get("values") is not None:
        return f"{axis['param']}: {_fmt_values(axis['values'])}"
    lo, hi = axis["range"]
    return f"{axis['param']}: {lo:g}–{hi:g}{' (log)' if axis.get('log', True) else ''}"


def _fmt_plane(spec: dict) -> tuple[str, str]:
    """(temperature, load) cells of the zoo table: the grid's axes, or the sampled plane's ranges
    with the number of points."""
    if spec.get("phase") == "random":
        sp = spec["sampling"]
        return f"{_fmt_axis(sp['temperature'])}; {sp['points']} {sp['method']} points", _fmt_axis(sp["load"])
    if spec.get("phase") == "pbt":
        p = spec["pbt"]
        muts = ", ".join(f"{k} {_fmt_axis({'param': '', **m}).lstrip(': ')}" for k, m in sorted(p["mutations"].items()))
        return (f"{_fmt_axis(spec['axes']['temperature'])}; PBT ({p.get('scheduler', 'pbt')}): {p['population']} members "
                f"per load, mutating {muts} every {p['perturbation_interval']} epochs",
                f"{_fmt_axis(spec['axes']['load'])} (one experiment each)")
    return _fmt_axis(spec["axes"]["temperature"]), _fmt_axis(spec["axes"]["load"])


def _fmt_acc(acc: dict | None) -> str:
    return f"{acc['best']:.3f} / {acc['median']:.3f}" if acc else "–"


def _fmt_phases(phases: dict | None, uncertain: dict | None = None) -> str:
    """Cells per phase and, when the manifest has the counts (built since the margins exist), how
    many of them are uncertain, e.g. `I: 7, II: 15 (3 uncertain), III: 2; 3 of 24 uncertain`."""
    if not phases:
        return "not computed"
    counts = ", ".join(f"{p or 'undetermined'}: {n}" + (f" ({uncertain[p]} uncertain)" if uncertain and uncertain.get(p) else "")
                       for p, n in phases.items())
    if uncertain is None:
        return counts
    return f"{counts}; {sum(uncertain.values())} of {sum(phases.values())} uncertain"


def render(manifest: dict, repo_id: str | None = None) -> str:
    header = yaml.safe_dump(_yaml_header(manifest), sort_keys=False)
    where = repo_id or "path/to/dataset"
    zoos = sorted(n for n, z in manifest["zoos"].items() if z.get("status") == "complete")
    lines = [
        "---", header.rstrip(), "---", "",
        f"# {manifest.get('collection', 'zoo')}: a model zoo on the phase plane",
        "",
        "Populations of small neural networks trained across a phase diagram of hyperparameters: "
        "for every zoo one task, one model family, a grid of (temperature, load) cells or points "
        "sampled on that plane, one or many architectures, and several seeds per cell. Temperature is the noise of training (batch size or learning rate); load is "
        "data relative to capacity (width, data fraction, label noise, or a PDE coefficient). One row per model and "
        "checkpoint epoch, with its hyperparameters, metrics, learning curve and weights.",
        "",
        "## Zoos",
        "",
        "| zoo | task | family | temperature | load | seeds | architectures | epochs | models | rows | diverged | parameters "
        "| final test acc (best / median) | phases (cells) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in zoos:
        z = manifest["zoos"][name]
        s = z["spec"]
        t, l = _fmt_plane(s)
        archs = z.get("architectures", 1)
        sampled = " (sampled)" if s.get("architectures") else ""
        lines.append(
            f"| {name} | {s['task']} | {s['model']['family']} | {t} | {l} | {len(s['seeds'])} | {archs}{sampled} | {s['training']['epochs']} "
            f"| {z['models']} | {z['rows']} | {z['diverged']} | {z['n_params']['min']:,}–{z['n_params']['max']:,} "
            f"| {_fmt_acc(z.get('final_test_acc'))} | {_fmt_phases(z.get('phases'), z.get('phases_uncertain'))} |"
        )
    first = zoos[0] if zoos else "<zoo>"
    lines += [
        "",
        "## How to load",
        "",
        "```python",
        "from datasets import load_dataset",
        "import zoo",
        f'ds = load_dataset("{where}", "{first}", split="train").with_format("torch")',
        'a = ds[0]["arch_id"]                          # one architecture (rows of one arch_id share a shape)',
        'one = ds.filter(lambda i: i == a, input_columns="arch_id")',
        'X, acc = one["weights"][:], one["test_acc"][:]  # (rows, n_weights) and (rows,)',
        "model = zoo.load_model(ds[0])               # the net with those weights, ready to run",
        'zoo.evaluate(model, ds[0])                  # reproduces the row\'s test metrics (its task and task_args)',
        "```",
        "",
        "Canonical weights are in `weights/<zoo>/shard-*.safetensors`, tensors named "
        "`<model_id>/<epoch>/<param>` with their exact shapes; `zoo.load_model(row, root=DIR)` reads "
        "them when a row has no flat `weights` (models above the size limit).",
        "",
        "Each zoo with computed landscape metrics also has a `<zoo>_cells` config: one row per cell "
        "(its Hessian, CKA, mode-connectivity curves and phase label), e.g. "
        f'`load_dataset("{where}", "{first}_cells", split="train")`.',
        "",
        "## Phases",
        "",
        "Every cell is labelled by one explicit rule (`zoo/landscape/phases.py`, thresholds in the "
        "spec's `metrics.phases`): a cell is trained when its training loss and Hessian trace are low; "
        "under-trained cells are phase I (a barrier between seeds: mode connectivity mc below minus "
        "the tolerance) or II (connected); trained cells are III (barrier) or IV (connected), split "
        "by the CKA of the seeds' logits into IV-A (low) and IV-B (high). The label and the cell's "
        "metrics are copied onto every model row of the cell.",
        "",
        "A label near a threshold is not robust: float32 training rounds differently on different CPUs, "
        "so a rebuild elsewhere can move a metric across it. Each cell therefore records `phase_margin`, "
        "the distance of its deciding metric from its threshold in units of the seeds' sample standard "
        "deviation of that metric (the smallest along the decision path), `phase_decided_by`, the metric "
        "with that margin, and `phase_uncertain`, true when the margin is below the spec's "
        "`metrics.phases.margin` (default 1 spread) or cannot be estimated (fewer than 2 seeds or seed "
        "pairs). The table above counts the uncertain cells of each phase; the phase diagram hatches them.",
        "",
        "## Columns",
        "",
        "| column | type | description |",
        "|---|---|---|",
    ]
    for col, (typ, desc) in store.COLUMNS.items():
        lines.append(f"| `{col}` | {typ} | {desc} |")
    if any(z.get("spec", {}).get("phase") == "pbt" for z in manifest.get("zoos", {}).values()):
        lines += ["", "Columns of the PBT zoos (`--phase pbt`) besides these:", "", "| column | type | description |",
                  "|---|---|---|"]
        lines += [f"| `{col}` | {typ} | {desc} |" for col, (typ, desc) in store.PBT_COLUMNS.items()]
    lines += ["", "Columns of the `<zoo>_cells` configs:", "", "| column | type | description |", "|---|---|---|"]
    for col, (typ, desc) in store.CELL_COLUMNS.items():
        lines.append(f"| `{col}` | {typ} | {desc} |")
    lines += [
        "",
        "## Files",
        "",
        "- `data/<zoo>/models-*.parquet`: the rows, one file per training bundle.",
        "- `weights/<zoo>/shard-*.safetensors`: the checkpoints, size-bounded shards.",
        "- `manifest.json`: each zoo's full spec, row counts, library versions and the sha256 of "
        "every file; `zoo verify DIR` checks a copy against it.",
        "",
    ]
    figs = sorted(manifest.get("figures", []))
    if figs:
        lines += ["## Phase diagrams", ""] + [f"![{Path(f).stem}]({f})" for f in figs] + [""]
    lines += _studies(manifest.get("studies", {}))
    return "\n".join(lines)


def _studies(studies: dict) -> list[str]:
    """The card's "Studies" section: per zoo and study, what it measures, its medians by phase,
    and links to its results and figures (written by `zoo study`)."""
    if not studies:
        return []
    lines = ["## Studies", "", "What the phases change downstream (`zoo study NAME DIR`); each study's "
             "results.md has the per-cell table and the intervals.", ""]
    for zoo, by_study in sorted(studies.items()):
        for name, s in sorted(by_study.items()):
            lines.append(f"### {name} on {zoo}")
            lines += ["", f"{s.get('about', name)}. [results]({s['markdown']}) ([json]({s['results']}))", ""]
            for key, med in s.get("by_phase", {}).items():
                sign = "+" if key in s.get("signed", ()) else ""
                per = ", ".join(f"{p} {v:{sign}.3f}" for p, v in med.items() if v is not None)
                if per:
                    lines.append(f"- `{key}`, median by phase: {per}")
            lines += [""] + [f"![{Path(f).stem}]({f})" for f in s.get("figures", [])] + [""]
    return lines


def write(root: Path, manifest: dict, repo_id: str | None = None) -> None:
    store.write_text_atomic(Path(root) / "README.md", render(manifest, repo_id))
