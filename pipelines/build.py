"""`zoo build`: plan bundles from the specs, train them as Ray tasks, commit each atomically.

Resumable: a bundle whose parquet file exists is finished and is not trained again; model and
bundle ids are stable hashes, so a resumed build writes exactly the rows an uninterrupted one
would. The driver (not the workers) writes files, so workers on other machines of a cluster
need no shared disk.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from pipelines.bundle import train_bundle
from pipelines.plan import Bundle, plan
from zoo import card, store, tasks
from zoo.errors import ZooError
from zoo.spec import Collection, ZooSpec

PHASES = ("grid",)


def _check_existing(manifest: dict, spec: ZooSpec, out: Path) -> None:
    old = manifest.get("zoos", {}).get(spec.name)
    if old and old.get("spec_sha256") != store.spec_digest(spec.to_json()):
        raise ZooError(
            f"{out}: zoo {spec.name!r} there was built from a different spec; "
            f"use another --out, or delete {out}/data/{spec.name} and {out}/weights/{spec.name}"
        )


def _start_ray(address: str | None, workers: int):
    import ray

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    kw = dict(logging_level=logging.ERROR, log_to_driver=True, configure_logging=True)
    if address:
        ray.init(address=address, **kw)
    else:
        ray.init(num_cpus=workers, include_dashboard=False, **kw)
    return ray


def build(collection: Collection, out: str | Path, phase: str = "grid", address: str | None = None,
          workers: int | None = None, use_ray: bool = True, progress: bool = True) -> dict:
    """Build every zoo of the collection into `out`; returns the manifest."""
    if phase not in PHASES:
        raise ZooError(f"--phase {phase!r} is not valid; valid: {', '.join(PHASES)}")
    out = Path(out)
    workers = workers or os.cpu_count() or 1
    if workers < 1:
        raise ZooError(f"--workers must be >= 1 (got {workers})")
    if out.exists() and not out.is_dir():
        raise ZooError(f"--out {out}: exists and is not a folder")
    if out.exists() and any(out.iterdir()) and not (out / "manifest.json").exists():
        raise ZooError(f"--out {out}: folder is not empty and holds no zoo dataset (no manifest.json); "
                       "choose a new or empty folder")
    out.mkdir(parents=True, exist_ok=True)
    store.remove_temp_files(out)
    manifest = store.read_manifest(out)
    for spec in collection.zoos:
        _check_existing(manifest, spec, out)
    for spec in collection.zoos:
        tasks.load(spec.task, spec.task_args)  # fail early on a bad task; warms the data cache
    manifest["collection"] = collection.name
    for spec in collection.zoos:
        manifest["zoos"][spec.name] = {
            "status": "building", "spec": spec.to_json(), "spec_sha256": store.spec_digest(spec.to_json()),
        }
    store.write_manifest(out, manifest)

    specs = {s.name: s for s in collection.zoos}
    bundles = [b for s in collection.zoos for b in plan(s)]
    done = {s.name: store.committed_bundles(out, s.name) for s in collection.zoos}
    pending = [b for b in bundles if b.bundle_id not in done[b.zoo]]
    total = sum(len(b.members) for b in bundles)
    finished = total - sum(len(b.members) for b in pending)
    console = Console(stderr=True)
    if progress:
        console.print(
            f"[bold]zoo build[/]: {len(collection.zoos)} zoo(s), {total} models in {len(bundles)} bundles; "
            f"{finished} models already built, {len(pending)} bundles to train on "
            f"{'cluster ' + address if address else f'{workers} local worker(s)'}"
        )
    if pending:
        runner = _run_ray if use_ray else _run_local
        runner(pending, specs, out, address, workers, finished, total, console if progress else None)
    for spec in collection.zoos:
        entry = manifest["zoos"][spec.name]
        entry.update(store.zoo_summary(out, spec.name), status="complete", bundles=len(plan(spec)))
    card.write(out, manifest)
    return store.refresh_manifest(out, manifest)


def _commit(out: Path, b: Bundle, result: dict, specs: dict[str, ZooSpec]) -> None:
    store.write_bundle(out, b.zoo, b.index, b.bundle_id, result["rows"], result["tensors"],
                       specs[b.zoo].storage.shard_max_mb)


class _Reporter:
    """Progress of models done / total with ETA: a live bar on a terminal, one line per bundle in logs."""

    def __init__(self, console: Console | None, finished: int, total: int):
        self.console, self.done, self.total, self.start_done = console, finished, total, finished
        self.t0 = time.perf_counter()
        self.bar = None
        if console is not None and console.is_terminal:
            self.bar = Progress(TextColumn("[bold blue]training"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("models"), TimeElapsedColumn(), TextColumn("ETA"),
                                TimeRemainingColumn(), console=console)
            self.task = self.bar.add_task("models", total=total, completed=finished)

    def __enter__(self):
        if self.bar:
            self.bar.start()
        return self

    def __exit__(self, *exc):
        if self.bar:
            self.bar.stop()
        return False

    def advance(self, b: Bundle, seconds: float) -> None:
        self.done += len(b.members)
        if self.bar:
            self.bar.advance(self.task, len(b.members))
        elif self.console is not None:
            elapsed = time.perf_counter() - self.t0
            rate = (self.done - self.start_done) / max(elapsed, 1e-9)
            eta = (self.total - self.done) / rate if rate > 0 else float("nan")
            self.console.print(f"[{self.done}/{self.total} models] {b.zoo} bundle {b.index} "
                               f"({len(b.members)} models, {seconds:.1f}s); ETA {eta:.0f}s", highlight=False)


def _run_local(pending, specs, out, address, workers, finished, total, console) -> None:
    with _Reporter(console, finished, total) as rep:
        for b in pending:
            res = train_bundle(specs[b.zoo].to_json(), [m.model_id for m in b.members], b.bundle_id)
            _commit(out, b, res, specs)
            rep.advance(b, res["seconds"])


def _run_ray(pending, specs, out, address, workers, finished, total, console) -> None:
    ray = _start_ray(address, workers)
    try:
        remote = ray.remote(num_cpus=1, max_retries=3)(train_bundle)
        spec_refs = {name: ray.put(s.to_json()) for name, s in specs.items()}
        queue = list(pending)
        in_flight: dict = {}
        started = time.perf_counter()
        with _Reporter(console, finished, total) as rep:
            while queue or in_flight:
                while queue and len(in_flight) < workers:
                    b = queue.pop(0)
                    ref = remote.remote(spec_refs[b.zoo], [m.model_id for m in b.members], b.bundle_id)
                    in_flight[ref] = b
                ready, _ = ray.wait(list(in_flight), num_returns=1)
                for ref in ready:
                    b = in_flight.pop(ref)
                    try:
                        res = ray.get(ref)
                    except ray.exceptions.RayTaskError as e:
                        cause = e.as_instanceof_cause()
                        if isinstance(cause, ZooError):
                            raise ZooError(str(cause).splitlines()[-1]) from None
                        raise
                    _commit(out, b, res, specs)
                    rep.advance(b, res["seconds"])
        if console:
            console.print(f"trained {sum(len(b.members) for b in pending)} models in {time.perf_counter() - started:.1f}s")
    finally:
        ray.shutdown()  # stops the local Ray, or disconnects from a cluster
