"""`zoo build | metrics | plot | push | info | verify | replay`: the command line of the dataset builder.

It lives in pipelines, not in the zoo library, because it calls the pipelines (imports flow down:
the CLI -> pipelines -> zoo).

User mistakes print one line `zoo: error: ...` and exit with code 2; `verify` exits 1 when the
folder does not match its manifest.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from zoo.errors import ZooError
from zoo.machine import DEVICES

DEFAULT_OUT = "build/phases"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="zoo", description="Build, inspect and check phase-diagram model zoos.")
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="train the zoos of a spec or collection into a dataset folder")
    b.add_argument("--phase", help="how the plane is sampled, for every zoo: grid = every cell of `axes` x every seed, "
                   "random = the `sampling` block's points x every seed, pbt = population-based training on Ray Tune "
                   "(the `pbt` block) (default: each spec's `phase`, grid unless set)")
    b.add_argument("--config", help="zoo spec or collection YAML (default: the built-in configs/default.yaml: the MLP zoo and deepnets_small; configs/phases.yaml has every family)")
    b.add_argument("--out", default=DEFAULT_OUT, help=f"dataset folder (default: {DEFAULT_OUT})")
    b.add_argument("--address", help="join an existing Ray cluster (default: start a local Ray)")
    b.add_argument("--workers", type=int, help="concurrent bundles (default: the number of CPU cores)")
    b.add_argument("--no-ray", action="store_true", help="train bundles in this process (debugging)")
    b.add_argument("--quiet", action="store_true", help="no progress output")
    b.add_argument("--no-metrics", action="store_true", help="train only; compute the landscape metrics later with `zoo metrics`")
    b.add_argument("--device", choices=DEVICES,
                   help="where bundles train, for every zoo (default: each spec's compute.device, auto = CUDA when torch sees a GPU)")
    b.add_argument("--dry-run", action="store_true", help="print the plan (zoos, models, architectures, populations, "
                   "bundles, size estimate) and a JSON line; train and write nothing")
    m = sub.add_parser("metrics", help="compute (or complete) the landscape metrics and phases of a built dataset")
    m.add_argument("dir")
    m.add_argument("--zoo", action="append", help="only this zoo (repeatable; default: all)")
    m.add_argument("--recompute", action="store_true", help="discard finished cells and compute all again")
    m.add_argument("--address", help="join an existing Ray cluster (default: start a local Ray)")
    m.add_argument("--workers", type=int, help="concurrent cells (default: the number of CPU cores)")
    m.add_argument("--no-ray", action="store_true", help="compute in this process (debugging)")
    m.add_argument("--quiet", action="store_true", help="no progress output")
    pl = sub.add_parser("plot", help="(re)draw the phase diagrams and learning curves of a dataset")
    pl.add_argument("dir")
    pl.add_argument("--zoo", action="append", help="only this zoo (repeatable; default: all with metrics)")
    pu = sub.add_parser("push", help="publish a dataset folder to a Hugging Face Hub dataset repo")
    pu.add_argument("dir")
    pu.add_argument("--repo", required=True, help="dataset repo id, e.g. zoo/phases (created if missing)")
    pu.add_argument("--private", action="store_true", help="create the repo private")
    pu.add_argument("--message", help="commit message")
    pu.add_argument("--revision", help="branch to push to (default: main)")
    i = sub.add_parser("info", help="table of the zoos in a dataset folder")
    i.add_argument("dir")
    r = sub.add_parser("replay", help="retrain a PBT row from its recorded schedule and lineage, without Tune, and "
                       "compare with its stored weights (exit 1 if they differ)")
    r.add_argument("row", help="<model_id>/<epoch> (a row's tensor_prefix), or <model_id> for its last checkpoint")
    r.add_argument("--dir", default=DEFAULT_OUT, help=f"dataset folder (default: {DEFAULT_OUT})")
    r.add_argument("--save", help="also write the replayed weights to this .safetensors file")
    st = sub.add_parser("study", help="downstream studies of a built dataset per cell, drawn over the phase plane "
                        "(averaging, transfer, prune, predict), written into DIR/studies/<zoo>/<study>/")
    st.add_argument("study", help="averaging | transfer | prune | predict")
    st.add_argument("dir")
    st.add_argument("--zoo", action="append", help="only this zoo (repeatable; default: every zoo the study supports)")
    st.add_argument("--epochs", type=int, help="transfer: fine-tuning epochs; prune: re-training epochs")
    st.add_argument("--sparsity", type=float, action="append", help="prune: a sparsity in [0, 1) (repeatable; default 0.5 0.8 0.9 0.95)")
    st.add_argument("--recompute", action="store_true", help="discard finished cells and compute all again")
    st.add_argument("--address", help="join an existing Ray cluster (default: start a local Ray)")
    st.add_argument("--workers", type=int, help="concurrent cells (default: the number of CPU cores)")
    st.add_argument("--no-ray", action="store_true", help="compute in this process (debugging)")
    st.add_argument("--quiet", action="store_true", help="no progress output")
    v = sub.add_parser("verify", help="check sha256 and row counts against manifest.json (exit 1 on mismatch)")
    v.add_argument("dir")
    return p


def cmd_build(a) -> int:
    from pipelines.build import build
    from zoo.spec import default_config_path, load_config

    cfg = Path(a.config) if a.config else default_config_path()
    collection = load_config(cfg)
    if a.dry_run:
        return _print_plan(collection, a.phase, a.device)
    manifest = build(collection, a.out, phase=a.phase, address=a.address, workers=a.workers,
                     use_ray=not a.no_ray, progress=not a.quiet, metrics=not a.no_metrics, device=a.device)
    _print_info(Path(a.out), manifest)
    return 0


def cmd_metrics(a) -> int:
    from pipelines import metrics
    from pipelines.build import finalize

    root = Path(a.dir)
    manifest = metrics.compute(root, a.zoo, address=a.address, workers=a.workers, use_ray=not a.no_ray,
                               progress=not a.quiet, recompute=a.recompute)
    _print_info(root, finalize(root, manifest))
    return 0


def cmd_plot(a) -> int:
    from pipelines.build import finalize
    from pipelines.metrics import draw_figures
    from zoo import store

    root = Path(a.dir)
    manifest = store.open_manifest(root)
    names = a.zoo or [n for n, z in sorted(manifest["zoos"].items()) if "phases" in z]
    if not names:
        raise ZooError(f"{root}: no zoo with landscape metrics; run `zoo metrics {root}` first")
    written = []
    for name in names:
        cells = store.read_cells(root, name)
        if cells is None:
            raise ZooError(f"{root}: zoo {name!r} has no cell metrics; run `zoo metrics {root} --zoo {name}`")
        written += draw_figures(root, name, cells.to_pylist(), manifest)
    finalize(root, manifest)
    for p in written:
        print(p)
    return 0


def _print_plan(collection, phase: str | None, device: str | None = None) -> int:
    """`zoo build --dry-run`: one table row per zoo and, as the last stdout line, the totals as JSON."""
    import json

    from rich.console import Console
    from rich.table import Table

    from pipelines.build import place, set_phase
    from pipelines.plan import plan_summary

    set_phase(collection, phase)
    place(collection, device)
    rows = [plan_summary(spec) for spec in collection.zoos]
    phases = "/".join(sorted({s.phase for s in collection.zoos}))
    t = Table(title=f"plan of {collection.name} (--phase {phases}; nothing is trained or written)")
    for col in ("zoo", "models", "architectures", "populations", "bundles", "rows", "params", "size (est.)", "device"):
        t.add_column(col, justify="left" if col in ("zoo", "device") else "right", no_wrap=True)
    for r, spec in zip(rows, collection.zoos):
        t.add_row(r["zoo"], str(r["models"]), str(r["architectures"]), str(r["populations"]), str(r["bundles"]),
                  str(r["rows"]), f"{r['n_params']['min']:,}-{r['n_params']['max']:,}", f"{r['bytes_estimate'] / 2**20:.1f} MiB",
                  spec.compute.device)
    console = Console()
    if not console.is_terminal:
        console = Console(width=200)
    console.print(t)
    totals = {k: sum(r[k] for r in rows) for k in ("models", "architectures", "populations", "bundles")}
    print(json.dumps(totals))
    return 0


def _print_info(root: Path, manifest: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{root} ({manifest.get('collection', '?')})")
    for col in ("zoo", "status", "cells", "architectures", "models", "checkpoints", "rows", "diverged", "params", "size"):
        t.add_column(col, justify="left" if col in ("zoo", "status") else "right", no_wrap=True)
    files = manifest.get("files", {})
    for name, z in sorted(manifest.get("zoos", {}).items()):
        size = sum(f["bytes"] for k, f in files.items() if f"/{name}/" in k)
        if z.get("status") != "complete":
            t.add_row(name, z.get("status", "?"), *["-"] * 8)
            continue
        t.add_row(name, "complete", str(z["cells"]), str(z.get("architectures", "?")), str(z["models"]),
                  ",".join(map(str, z["checkpoints"])),
                  str(z["rows"]), str(z["diverged"]), f"{z['n_params']['min']:,}-{z['n_params']['max']:,}",
                  f"{size / 2**20:.1f} MiB")
    console = Console()
    if not console.is_terminal:
        console = Console(width=200)  # pipes and logs get the whole table, not a truncated one
    console.print(t)


def cmd_study(a) -> int:
    from pipelines.studies import run as studies

    study = studies.STUDIES.get(a.study)
    overrides = {}
    if a.epochs is not None:
        if a.epochs < 1:
            raise ZooError(f"--epochs must be at least 1 (got {a.epochs})")
        key = {"transfer": "epochs", "prune": "retrain_epochs"}.get(study.name)
        if key is None:
            raise ZooError(f"--epochs applies to `zoo study transfer` and `zoo study prune`, not {study.name}")
        overrides[key] = a.epochs
    if a.sparsity:
        if study.name != "prune":
            raise ZooError(f"--sparsity applies to `zoo study prune`, not {study.name}")
        bad = [s for s in a.sparsity if not 0.0 <= s < 1.0]
        if bad:
            raise ZooError(f"--sparsity must be in [0, 1) (got {bad[0]:g})")
        overrides["sparsities"] = sorted(set(a.sparsity))
    results = studies.run(study.name, a.dir, a.zoo, settings=overrides, address=a.address, workers=a.workers,
                          use_ray=not a.no_ray, progress=not a.quiet, recompute=a.recompute)
    for zoo, r in results.items():
        d = studies.study_dir(Path(a.dir), zoo, study.name)
        meds = "; ".join(f"{k}: " + ", ".join(f"{p} {v['median']:{'+' if studies.signed(k) else ''}.3f}" for p, v in s.items()
                                             if v["median"] is not None)
                         for k, s in r["by_phase"].items())
        print(f"{zoo}: {study.name} of {len(r['cells'])} cells -> {d}/results.md ({meds or 'no values'})")
    return 0


def cmd_push(a) -> int:
    from zoo import hub, store

    root = Path(a.dir)
    local = store.open_manifest(root)
    m = hub.push(root, a.repo, private=a.private, message=a.message, revision=a.revision)
    print(f"pushed {', '.join(sorted(local['zoos']))} to {a.repo}; the repo now holds "
          f"{', '.join(sorted(m['zoos']))} ({len(m['files'])} files)")
    return 0


def cmd_info(a) -> int:
    from zoo import store

    root = Path(a.dir)
    _print_info(root, store.open_manifest(root))
    return 0


def cmd_verify(a) -> int:
    from zoo import store

    root = Path(a.dir)
    problems = store.verify(root)
    if problems:
        for line in problems:
            print(f"MISMATCH {line}")
        print(f"{root}: {len(problems)} problem(s)")
        return 1
    m = store.read_manifest(root)
    print(f"{root}: OK ({len(m['files'])} files, "
          f"{sum(z['rows'] for z in m['zoos'].values())} rows in {len(m['zoos'])} zoo(s))")
    return 0


def cmd_replay(a) -> int:
    import time

    import torch

    from pipelines import pbt
    from zoo import store

    spec, row = pbt.find_row(Path(a.dir), a.row)
    t0 = time.perf_counter()
    state = pbt.replay(spec, row)
    stored = store.read_state(Path(a.dir), row)
    diff = max(float((state[k].double() - torch.from_numpy(stored[k]).double()).abs().max()) for k in stored)
    same = all(torch.equal(state[k], torch.from_numpy(stored[k])) for k in stored) and set(state) == set(stored)
    if a.save:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, a.save)
    segs = len(__import__("json").loads(row["lineage"]))
    print(f"replayed {row['model_id']}/{row['epoch']} of zoo {spec.name} ({row['epoch']} epochs, {segs} lineage "
          f"segment(s)) in {time.perf_counter() - t0:.1f}s: "
          + ("identical to the stored weights" if same else f"DIFFERS from the stored weights (max |diff| {diff:.3g})"))
    return 0 if same else 1


def run_command(prog: str, parser: argparse.ArgumentParser, commands: dict, argv: list[str] | None,
                interrupted: str) -> int:
    """Parse argv, run the chosen command; a user mistake (ZooError) is one line `<prog>: error: ...`
    and its exit code (2), Ctrl-C is `<prog>: interrupted; <interrupted>` and 130. Both CLIs use it."""
    a = parser.parse_args(argv)
    try:
        return commands[a.cmd](a)
    except ZooError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; {interrupted}", file=sys.stderr)
        return 130


def main(argv: list[str] | None = None) -> int:
    return run_command("zoo", _parser(), {"build": cmd_build, "metrics": cmd_metrics, "plot": cmd_plot,
                                          "push": cmd_push, "info": cmd_info, "verify": cmd_verify,
                                          "replay": cmd_replay, "study": cmd_study}, argv,
                       "finished bundles are kept, rerun the same command to resume")


if __name__ == "__main__":
    sys.exit(main())
