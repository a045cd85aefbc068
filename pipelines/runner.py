"""Run independent jobs as Ray tasks (or in-process), commit each result as it arrives, show progress.

Shared by the build and metrics stages. At most `workers` jobs are in flight; Ray retries a job
whose worker process dies (max_retries). A ZooError raised in a worker reaches the user as one line.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Callable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from zoo.errors import ZooError


@dataclass
class Job:
    name: str  # shown in progress lines
    args: tuple  # arguments of the task function (plain data)
    weight: int  # units of work (models, cells) for the progress count
    on_done: Callable[[Any], None]  # commit the result (runs in the driver)
    # builds `args` when the job is submitted, for arguments too large to hold for every job at
    # once (a cell's checkpoint states): at most `workers` jobs' arguments are alive in the driver
    load: Callable[[], tuple] | None = None
    num_gpus: float = 0.0  # GPUs the Ray task asks for (a fraction shares one), 0 on the CPU

    def arguments(self) -> tuple:
        return self.load() if self.load is not None else self.args


class Reporter:
    """Units done / total with ETA: a live bar on a terminal, one line per job in logs."""

    def __init__(self, console: Console | None, label: str, unit: str, done: int, total: int):
        self.console, self.label, self.unit = console, label, unit
        self.done, self.total, self.start_done = done, total, done
        self.t0 = time.perf_counter()
        self.bar = None
        if console is not None and console.is_terminal:
            self.bar = Progress(TextColumn(f"[bold blue]{label}"), BarColumn(), MofNCompleteColumn(), TextColumn(unit),
                                TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"),
                                TimeRemainingColumn(), console=console)
            self.task = self.bar.add_task(label, total=total, completed=done, rate="")

    def __enter__(self):
        if self.bar:
            self.bar.start()
        return self

    def __exit__(self, *exc):
        if self.bar:
            self.bar.stop()
        return False

    def rate(self) -> float:
        """Units per second since this reporter started (units done before it not counted)."""
        return (self.done - self.start_done) / max(time.perf_counter() - self.t0, 1e-9)

    def advance(self, job: Job, seconds: float | None) -> None:
        self.done += job.weight
        rate = self.rate()
        if self.bar:
            self.bar.update(self.task, advance=job.weight, rate=f"{rate:.2f} {self.unit}/s")
        elif self.console is not None:
            eta = (self.total - self.done) / rate if rate > 0 else float("nan")
            took = f", {seconds:.1f}s" if seconds is not None else ""
            self.console.print(f"[{self.done}/{self.total} {self.unit}] {self.label} {job.name}{took}; "
                               f"{rate:.2f} {self.unit}/s; ETA {eta:.0f}s", highlight=False)


def start_ray(address: str | None, workers: int):
    import ray

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    kw = dict(logging_level=logging.ERROR, log_to_driver=True, configure_logging=True)
    if address:
        try:
            ray.init(address=address, **kw)
        except (ConnectionError, RuntimeError) as e:
            cause = str(e.__cause__ or e).splitlines()[0][:200]
            raise ZooError(f"--address {address}: cannot join the Ray cluster ({cause}); check the address, "
                           "and for a cluster with token authentication RAY_AUTH_MODE=token and its token") from None
    else:
        ray.init(num_cpus=workers, include_dashboard=False, **kw)
    return ray


def run_jobs(fn: Callable, jobs: list[Job], *, address: str | None, workers: int, use_ray: bool,
             reporter: Reporter) -> None:
    if not jobs:
        return
    if not use_ray:
        with reporter:
            for job in jobs:
                res = fn(*job.arguments())
                job.on_done(res)
                reporter.advance(job, res.get("seconds") if isinstance(res, dict) else None)
        return
    import ray

    owned = not ray.is_initialized()  # inside a caller's Ray session (a benchmark's): use it, leave it running
    if owned:
        start_ray(address, workers)
    try:
        remote = ray.remote(num_cpus=1, max_retries=3)(fn)
        shared: dict[int, Any] = {}  # dict arguments (specs) are shared by many jobs: put each once

        def ref_args(args: tuple) -> tuple:
            out = []
            for a in args:
                if isinstance(a, dict):
                    if id(a) not in shared:
                        shared[id(a)] = ray.put(a)
                    a = shared[id(a)]
                out.append(a)
            return tuple(out)

        queue, in_flight = list(jobs), {}
        with reporter:
            while queue or in_flight:
                while queue and len(in_flight) < workers:
                    job = queue.pop(0)
                    task = remote.options(num_gpus=job.num_gpus) if job.num_gpus else remote
                    in_flight[task.remote(*ref_args(job.arguments()))] = job
                ready, _ = ray.wait(list(in_flight), num_returns=1)
                for ref in ready:
                    job = in_flight.pop(ref)
                    try:
                        res = ray.get(ref)
                    except ray.exceptions.RayTaskError as e:
                        cause = e.as_instanceof_cause()
                        if isinstance(cause, ZooError):
                            raise ZooError(str(cause).splitlines()[-1]) from None
                        raise
                    job.on_done(res)
                    reporter.advance(job, res.get("seconds") if isinstance(res, dict) else None)
    finally:
        if owned:
            ray.shutdown()  # stops the local Ray, or disconnects from a cluster
