"""`zoo build`: plan bundles from the specs, train them as Ray tasks, commit each atomically,
then compute the landscape metrics and phases of every cell (pipelines.metrics).

Resumable: a bundle whose parquet file exists is finished and is not trained again; model and
bundle ids are stable hashes, so a resumed build writes exactly the rows an uninterrupted one
would. The driver (not the workers) writes files, so workers on other machines of a cluster
need no shared disk.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from rich.console import Console

from pipelines import metrics as metrics_stage
from pipelines.bundle import train_bundle
from pipelines.plan import plan
from pipelines.runner import Job, Reporter, run_jobs
from zoo import card, store, tasks
from zoo.errors import ZooError
from zoo.machine import resolve_device
from zoo.spec import PHASES, Collection, ZooSpec, parse_spec


def _check_existing(manifest: dict, spec: ZooSpec, out: Path) -> None:
    old = manifest.get("zoos", {}).get(spec.name)
    if old and old.get("training_sha256") != store.spec_digest(spec.training_json()):
        raise ZooError(
            f"{out}: zoo {spec.name!r} there was built from a different spec; "
            f"use another --out, or delete {out}/data/{spec.name} and {out}/weights/{spec.name}"
        )


def check_out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ZooError(f"--out {out}: exists and is not a folder")
    if out.exists() and any(out.iterdir()) and not (out / "manifest.json").exists():
        raise ZooError(f"--out {out}: folder is not empty and holds no zoo dataset (no manifest.json); "
                       "choose a new or empty folder")


def check_phase(phase: str | None) -> None:
    if phase is not None and phase not in PHASES:
        raise ZooError(f"--phase {phase!r} is not valid; valid: {', '.join(PHASES)}")


def set_phase(collection: Collection, phase: str | None) -> None:
    """Apply --phase to every zoo (None: each spec's own `phase`), validated again: a grid needs
    `axes`, a random plane a `sampling` block, and each error names the collection file and zoo."""
    check_phase(phase)
    if phase is None:
        return
    where = collection.path or "<collection>"
    collection.zoos[:] = [s if s.phase == phase else parse_spec({**s.to_json(), "phase": phase}, f"{where}: zoo {s.name}")
                          for s in collection.zoos]


def place(collection: Collection, device: str | None = None, address: str | None = None) -> None:
    """Resolve every zoo's compute.device in place (`device`, from --device, overrides the specs):
    auto becomes cuda or cpu here, where the build starts; cuda without a GPU here is a ZooError,
    except on a cluster (`address`), whose GPU nodes Ray schedules the bundles on."""
    for spec in collection.zoos:
        requested = device or spec.compute.device
        where = "--device" if device else f"zoo {spec.name}: compute.device"
        if address and requested == "cuda":
            spec.compute.device = "cuda"  # the cluster's GPUs, not this machine's
            continue
        spec.compute.device = resolve_device(requested, where)


def gpu_share(compute) -> float:
    """GPUs a bundle's Ray task asks for: compute.gpus_per_worker on CUDA, none on the CPU."""
    return compute.gpus_per_worker if compute.device == "cuda" else 0.0


def build(collection: Collection, out: str | Path, phase: str | None = None, address: str | None = None,
          workers: int | None = None, use_ray: bool = True, progress: bool = True, metrics: bool = True,
          device: str | None = None) -> dict:
    """Build every zoo of the collection into `out` (training, then metrics); returns the manifest.
    `phase` (grid | random) and `device` (auto | cpu | cuda) override the specs' phase and
    compute.device."""
    set_phase(collection, phase)
    place(collection, device, address)
    out = Path(out)
    workers = workers or os.cpu_count() or 1
    if workers < 1:
        raise ZooError(f"--workers must be >= 1 (got {workers})")
    check_out_dir(out)
    manifest = store.read_manifest(out) if out.exists() else {"format": store.FORMAT, "zoos": {}, "files": {}}
    for spec in collection.zoos:
        _check_existing(manifest, spec, out)
    for spec in collection.zoos:
        for args in sorted({json.dumps(m.task_args, sort_keys=True) for m in spec.members()}):
            try:  # fail early on a bad task or task argument; warms the data cache
                tasks.load(spec.task, json.loads(args))
            except ZooError as e:
                raise ZooError(f"zoo {spec.name}: {e}") from None
    out.mkdir(parents=True, exist_ok=True)
    store.remove_temp_files(out)
    manifest["collection"] = collection.name
    for spec in collection.zoos:
        old = manifest["zoos"].get(spec.name, {})
        manifest["zoos"][spec.name] = {
            "status": "building", "spec": spec.to_json(),
            "training_sha256": store.spec_digest(spec.training_json()),
            **({"metrics_sha256": old["metrics_sha256"]} if "metrics_sha256" in old else {}),
        }
    store.write_manifest(out, manifest)

    specs = {s.name: s for s in collection.zoos}
    spec_json = {s.name: s.to_json() for s in collection.zoos}
    bundles = [b for s in collection.zoos for b in plan(s)]
    done = {s.name: store.committed_bundles(out, s.name, s.phase) for s in collection.zoos}
    pending = [b for b in bundles if b.bundle_id not in done[b.zoo]]
    pbt_zoos = [s for s in collection.zoos if s.phase == "pbt"]
    if pbt_zoos and not use_ray:
        raise ZooError(f"--no-ray: zoo {pbt_zoos[0].name} is a PBT zoo (--phase pbt), which trains on Ray Tune")
    total = sum(len(b.members) for b in bundles)
    finished = total - sum(len(b.members) for b in pending)
    console = Console(stderr=True) if progress else None
    if console:
        console.print(
            f"[bold]zoo build[/]: {len(collection.zoos)} zoo(s), {total} models in {len(bundles)} bundles; "
            f"{finished} models already built, {len(pending)} bundles to train on "
            f"{'cluster ' + address if address else f'{workers} local worker(s)'}"
        )

    def commit(b):
        return lambda res: store.write_bundle(out, b.zoo, b.index, b.bundle_id, res["rows"], res["tensors"],
                                              specs[b.zoo].storage.shard_max_mb)

    jobs = [Job(f"{b.zoo} bundle {b.index} ({len(b.members)} models)",
                (spec_json[b.zoo], b.member_ids(), b.bundle_id), len(b.members), commit(b),
                num_gpus=gpu_share(specs[b.zoo].compute))
            for b in pending if specs[b.zoo].phase != "pbt"]
    t0 = time.perf_counter()
    # the bar counts the bundles run_jobs trains; a PBT zoo's members are counted by its own
    # (member-epochs, pipelines.pbt)
    grid_total = sum(len(b.members) for b in bundles if specs[b.zoo].phase != "pbt")
    run_jobs(train_bundle, jobs, address=address, workers=workers, use_ray=use_ray,
             reporter=Reporter(console, "training", "models", grid_total - sum(j.weight for j in jobs), grid_total))
    for spec in pbt_zoos:
        from pipelines import pbt

        pbt.train(spec, out, workers=workers, address=address, console=console)
    if console and pending:
        took = time.perf_counter() - t0
        console.print(f"trained {total - finished} models in {took:.1f}s ({(total - finished) / took:.2f} models/s, "
                      "Ray start-up included)")
    for spec in collection.zoos:
        manifest["zoos"][spec.name].update(store.zoo_summary(out, spec.name), status="trained",
                                           bundles=sum(b.zoo == spec.name for b in bundles))
    store.write_manifest(out, manifest)
    names = [s.name for s in collection.zoos if s.metrics.enabled and metrics]
    if names:
        manifest = metrics_stage.compute(out, names, address=address, workers=workers, use_ray=use_ray,
                                         progress=progress, manifest=manifest)
    for spec in collection.zoos:
        if spec.name not in names:
            manifest["zoos"][spec.name]["status"] = "complete"
    return finalize(out, manifest)


def finalize(out: Path, manifest: dict) -> dict:
    """Write the dataset card, then the manifest with the sha256 of every file. A zoo summarized
    before a summary field existed (its final test accuracy) gets it here, from its rows."""
    for name, z in manifest.get("zoos", {}).items():
        if z.get("status") == "complete" and "final_test_acc" not in z:
            z["final_test_acc"] = store.zoo_summary(out, name)["final_test_acc"]
    card.write(out, manifest)
    return store.refresh_manifest(out, manifest)
