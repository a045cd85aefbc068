"""The one training loop of every weight generator (`hypernet train`), and what it shares.

The loop owns what does not depend on the generator: the threads, the seeded generator of each
step (seed, step), the learning-rate schedule (linear warm-up, cosine decay; a parameter group's
`lr_mult` scales it), gradient-norm clipping, divergence, the JSON-lines log, checkpoints
(safetensors + JSON, swapped in atomically, no pickle), exact resume, the progress bar, and the
run metadata (hypernet.json, written atomically). A generator supplies a recipe (the Recipe
protocol below: pipelines.fit for the GHNs, pipelines.fit_diffusion for diffusion): its model and
optimizer, one step's losses (the recipe runs backward), what its log lines and progress show,
and its own metadata fields. Because every draw of step s comes from the generator seeded by
(seed, s), a resumed run takes exactly the steps an uninterrupted one would, for every kind.
"""
from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path
from typing import Protocol

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from zoo import store
from zoo.errors import ZooError


class Recipe(Protocol):
    """What a generator gives the loop. `config.training` has steps, seed, lr, warmup,
    min_lr_ratio, clip, log_every, checkpoint_every (and optionally threads)."""

    kind: str  # the registry's kind (hypernet.generators)
    label: str  # the progress bar's text
    config: object  # .training and .to_dict()
    model: nn.Module  # saved with save_pretrained
    opt: torch.optim.Optimizer
    root: Path  # the zoo folder
    split: object  # pipelines.zoodata.Split
    train_cells: list

    def split_digest(self) -> str: ...

    def step(self, s: int, gen: torch.Generator) -> tuple[float, dict[str, float], dict]:
        """Step s: compute the loss from `gen`'s draws and run backward. -> (loss, parts averaged
        over log_every in the log, fields logged as of the last step)."""

    def monitor(self) -> dict:
        """Extra log fields at checkpoint steps (e.g. the predicted nets' score)."""

    def info(self, rec: dict) -> str:
        """The progress bar's text for a log record."""

    def meta(self) -> dict:
        """The kind's own hypernet.json fields."""

    # optional: schedule(s) -> the learning rate of step s, for a recipe trained in stages (IGPG:
    # the quantizer, then the prior, each with its own warm-up and decay); default warmup_cosine.
    # optional: finish() after the last step, before the model is saved (IGPG: it picks the
    # sampling temperature on training data)
    # optional: sampling_keys, (section, key) pairs of the config that only affect sampling after
    # training (IGPG: the temperatures); `--resume` accepts a run whose checkpoint differs in them,
    # so a finished run can redo finish() with other settings without retraining


def warmup_cosine(step: int, t) -> float:
    """Learning rate at `step`: linear warm-up over t.warmup steps, then cosine decay to t.lr * t.min_lr_ratio."""
    if step < t.warmup:
        return t.lr * (step + 1) / t.warmup
    frac = (step - t.warmup) / max(1, t.steps - t.warmup)
    return t.lr * (t.min_lr_ratio + (1 - t.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


def fused_adamw() -> dict:
    """fused=True where this torch has the fused CPU AdamW (several times faster on a 4M-parameter GHN)."""
    try:
        torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], fused=True)
        return {"fused": True}
    except (RuntimeError, TypeError):
        return {}


def progress_bar(enabled: bool):
    if not enabled:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), TextColumn("{task.fields[info]}"))


def check_out(out: Path, resume: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ZooError(f"--out {out}: exists and is not a folder")
    if out.exists() and any(out.iterdir()) and not resume:
        hint = " (pass --resume to continue it)" if (out / "checkpoint").exists() else ""
        raise ZooError(f"--out {out}: folder is not empty{hint}; choose a new or empty folder")


def trim_log(log_path: Path, step: int) -> None:
    """On resume: drop log lines past the checkpoint's step (they will be written again)."""
    if log_path.exists():
        keep = [ln for ln in log_path.read_text().splitlines() if json.loads(ln)["step"] <= step]
        log_path.write_text("".join(ln + "\n" for ln in keep))


def save_checkpoint(ck: Path, model: nn.Module, opt: torch.optim.Optimizer, state: dict) -> None:
    """model + optimizer tensors (safetensors) + state.json, swapped in atomically as folder `ck`."""
    tmp = ck.with_name(ck.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp / "model.safetensors"))
    opt_tensors = {}
    for i, st in opt.state_dict()["state"].items():
        for k, v in st.items():
            opt_tensors[f"{i}.{k}"] = torch.as_tensor(v).contiguous()
    save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
    (tmp / "state.json").write_text(json.dumps(state, indent=2))
    old = ck.with_name(ck.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if ck.exists():
        ck.rename(old)
    tmp.rename(ck)
    shutil.rmtree(old, ignore_errors=True)


def _flat(config: dict, skip: set) -> dict:
    """{"section.key": value} of a recipe config, leaving out the (section, key) pairs in skip."""
    out = {}
    for sec, part in config.items():
        for k, v in (part.items() if isinstance(part, dict) else [("", part)]):
            if (sec, k) not in skip:
                out[f"{sec}.{k}" if k else sec] = v
    return out


def load_checkpoint(ck: Path, model: nn.Module, opt: torch.optim.Optimizer, config: dict, split: str,
                    sampling_keys=()) -> dict:
    """Restore what save_checkpoint wrote; refuses a checkpoint of another config (apart from
    `sampling_keys`, (section, key) pairs that only affect sampling) or split."""
    state = json.loads((ck / "state.json").read_text())
    skip = set(map(tuple, sampling_keys))
    old, new = _flat(state["config"], skip), _flat(config, skip)
    if old != new:
        diff = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
        raise ZooError(f"{ck}: was written with a different hypernet config (differs in {', '.join(diff)}); "
                       f"resume with the same config, or use a new --out")
    if state["split"] != split:
        raise ZooError(f"{ck}: the zoo's held-out split changed since this run started; use a new --out")
    model.load_state_dict(load_file(str(ck / "model.safetensors")))
    tensors = load_file(str(ck / "optimizer.safetensors"))
    sd = opt.state_dict()
    st: dict[int, dict] = {}
    for k, v in tensors.items():
        i, name = k.split(".", 1)
        st.setdefault(int(i), {})[name] = v
    sd["state"] = st
    opt.load_state_dict(sd)
    return state


def fit(recipe: Recipe, out: Path, resume: bool = False, progress: bool = True) -> dict:
    """Train `recipe`'s model for config.training.steps steps into the run folder `out` (resuming
    from its checkpoint with resume=True); returns the run metadata (hypernet.json)."""
    t = recipe.config.training
    if getattr(t, "threads", 0):
        torch.set_num_threads(t.threads)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    log_path, ck = out / "log.jsonl", out / "checkpoint"
    config, digest = recipe.config.to_dict(), recipe.split_digest()
    step = 0
    if resume and ck.exists():
        step = int(load_checkpoint(ck, recipe.model, recipe.opt, config, digest,
                                   getattr(recipe, "sampling_keys", ()))["step"])
        trim_log(log_path, step)
    elif log_path.exists():
        log_path.unlink()
    start, t0 = step, time.perf_counter()
    bar = progress_bar(progress)
    task_id = bar.add_task(recipe.label, total=t.steps, completed=start, info="") if bar else None
    if bar:
        bar.start()
    sums: dict[str, float] = {}
    n = 0
    try:
        while step < t.steps:
            s = step
            gen = torch.Generator().manual_seed(t.seed * 1_000_003 + s)
            lr = recipe.schedule(s) if hasattr(recipe, "schedule") else warmup_cosine(s, t)  # a staged recipe's own
            for g in recipe.opt.param_groups:
                g["lr"] = lr * g.get("lr_mult", 1.0)
            recipe.opt.zero_grad(set_to_none=True)
            loss, parts, last = recipe.step(s, gen)
            if not math.isfinite(loss):
                raise ZooError(f"{recipe.kind} training diverged at step {s} (loss {loss}); lower training.lr")
            gnorm = float(nn.utils.clip_grad_norm_(recipe.model.parameters(), t.clip))
            recipe.opt.step()
            step = s + 1
            for k, v in {"loss": loss, **parts}.items():
                sums[k] = sums.get(k, 0.0) + v
            n += 1
            at_checkpoint = step % t.checkpoint_every == 0 or step == t.steps
            if step % t.log_every == 0 or step == t.steps:
                rec = {"step": step, **{k: v / n for k, v in sums.items()}, "lr": lr, "grad_norm": gnorm, **last,
                       "seconds": time.perf_counter() - t0}
                if at_checkpoint:
                    rec.update(recipe.monitor())
                with log_path.open("a") as f:
                    f.write(json.dumps(rec) + "\n")
                sums, n = {}, 0
                if bar:
                    bar.update(task_id, info=recipe.info(rec))
            if at_checkpoint:
                save_checkpoint(ck, recipe.model, recipe.opt, {"step": step, "config": config, "split": digest})
            if bar:
                bar.update(task_id, completed=step)
    finally:
        if bar:
            bar.stop()
    seconds = time.perf_counter() - t0
    finish = getattr(recipe, "finish", None)
    if finish is not None:
        finish()
    recipe.model.save_pretrained(out)
    meta = {
        "kind": recipe.kind,
        "config": config,
        "zoo": str(Path(recipe.root).resolve()),
        "zoo_manifest_sha256": store.sha256_file(Path(recipe.root) / "manifest.json"),
        "split": recipe.split.to_json(),
        "train_cells": [c.key for c in recipe.train_cells],
        **recipe.meta(),
        "steps": step,
        "seconds_this_run": seconds,
        "resumed_from": start,
    }
    store.write_text_atomic(out / "hypernet.json", json.dumps(meta, indent=2) + "\n")
    return meta
