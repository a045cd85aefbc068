"""`hypernet train | predict | eval`: train a hypernetwork on a zoo, predict an init, benchmark it.

    hypernet train --kind ghn --zoo build/phases --out runs/ghn        # or --kind ghn-lowrank
    hypernet predict --hypernet runs/ghn --config configs/zoos/mlp_mnist1d.yaml --width 48 --out init.safetensors
    hypernet eval --hypernet runs/ghn --zoo build/phases [--out results/ghn]

User mistakes print one line `hypernet: error: ...` and exit with code 2. It lives in pipelines,
not in the hypernet library, because it calls the pipelines (hypernet_train, recipes, benchmark).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from zoo.errors import ZooError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hypernet", description="Hypernetworks that learn from a model zoo.")
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train a graph hypernetwork on the cells of a built zoo")
    from hypernet.generators import GENERATORS

    t.add_argument("--kind", help="; ".join(f"{k}: {GENERATORS.get(k).description}" for k in GENERATORS.names())
                   + " (default: the config's kind, else ghn)")
    t.add_argument("--zoo", default="build/phases", help="zoo dataset folder (default: build/phases)")
    t.add_argument("--out", help="run folder (default: runs/<kind>)")
    t.add_argument("--config", help="hypernet config YAML (default: configs/hypernets/<kind>.yaml)")
    t.add_argument("--only", action="append", metavar="ZOO", help="train on this zoo only (repeatable)")
    t.add_argument("--steps", type=int, help="override training.steps")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    t.add_argument("--eval", action="store_true", help="then run the init benchmark into results/<run folder name>")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    pr = sub.add_parser("predict", help="predict the init of one architecture and save it as safetensors")
    pr.add_argument("--hypernet", required=True, help="run folder or Hub model id")
    pr.add_argument("--config", required=True, help="zoo spec YAML that names the task and model family")
    pr.add_argument("--width", type=int, help="override the architecture's width")
    pr.add_argument("--depth", type=int, help="override the architecture's depth")
    pr.add_argument("--arch", help='more architecture knobs as JSON, e.g. \'{"heads": 2}\'')
    pr.add_argument("--temperature", type=float, help="the zoo's temperature value (default: middle of its axis)")
    pr.add_argument("--load", type=float, help="the zoo's load value (default: the width, or the middle of its axis)")
    pr.add_argument("--out", required=True, help="output .safetensors file")
    e = sub.add_parser("eval", help="the init benchmark: held-out cells and architectures, random vs hypernet vs nearest")
    e.add_argument("--hypernet", required=True, help="run folder of `hypernet train`")
    e.add_argument("--zoo", default="build/phases", help="the zoo it was trained on (default: build/phases)")
    e.add_argument("--out", help="results folder (default: results/<run folder name>)")
    e.add_argument("--seeds", type=int, nargs="+", help="seeds per case (default: 5, the zoo's member seeds first)")
    e.add_argument("--threads", type=int, help="torch threads to train with (default: torch's, one per core); "
                   "results.json records it")
    e.add_argument("--samples", type=int, default=1, help="nets a sampling generator (diffusion, igpg) draws per "
                   "case, keeping the lowest training loss (default: 1)")
    e.add_argument("--cells", type=int, metavar="N", help="benchmark at most N of the held-out cells, spread over "
                   "the architectures and the plane (for big zoos; default: all); every held-out architecture runs")
    e.add_argument("--audit-only", action="store_true", help="redo only the memorization audit of the results "
                   "already in --out (their cases, seeds and samples), keeping the trained curves")
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    c = sub.add_parser("compare", help="one table of several `hypernet eval` results on the same held-out cases")
    c.add_argument("results", nargs="+", help="results folders (or results.json files) of `hypernet eval`")
    c.add_argument("--out", help="also write the table to this markdown file")
    return p


def cmd_compare(a) -> int:
    from pipelines.benchmark import compare, read_results

    table = compare([read_results(r) for r in a.results])
    print(table, end="")
    if a.out:
        out = Path(a.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(table)
    return 0


def cmd_train(a) -> int:
    from pipelines.recipes import load_config, train

    cfg = load_config(a.config, a.kind)
    if a.steps is not None:
        if a.steps < 1:
            raise ZooError(f"--steps must be >= 1 (got {a.steps})")
        cfg.training.steps = a.steps
    out = Path(a.out or f"runs/{cfg.kind}")
    meta = train(a.zoo, out, cfg, zoos=a.only, resume=a.resume, progress=not a.quiet)
    dec = f" (decoder {meta['decoder_params']:,})" if "decoder_params" in meta else ""
    print(f"{out}: {cfg.kind}, {meta['n_params']:,} parameters{dec}, "
          f"{meta['steps']} steps in {meta['seconds_this_run']:.0f} s on {len(meta['train_cells'])} training cells; "
          f"held out {len(meta['split']['held_out_cells'])} cells and {len(meta['split']['arch_cases'])} architectures")
    if a.eval:
        return _eval(out, Path(a.zoo), Path("results") / out.name, None, a.quiet)
    return 0


def _eval(run: Path, zoo: Path, out: Path, seeds, quiet: bool, threads: int | None = None, samples: int = 1,
          n_cells: int | None = None, audit_only: bool = False) -> int:
    import torch

    from pipelines.benchmark import benchmark, summary_line

    if seeds is not None and (len(set(seeds)) != len(seeds) or min(seeds) < 0):
        raise ZooError(f"--seeds {' '.join(map(str, seeds))}: seeds must be distinct non-negative integers")
    if n_cells is not None and n_cells < 1:
        raise ZooError(f"--cells {n_cells}: must be at least 1")
    if threads is not None:
        if threads < 1:
            raise ZooError(f"--threads {threads}: must be at least 1")
        torch.set_num_threads(threads)

    if audit_only and (seeds is not None or samples != 1 or n_cells is not None):
        raise ZooError("--audit-only takes the seeds, samples and cells of the results it re-audits; "
                       "leave out --seeds, --samples and --cells")
    doc = benchmark(run, zoo, out=out, seeds=seeds, progress=not quiet, samples=samples, n_cells=n_cells,
                    audit_only=audit_only)
    print(summary_line(doc))
    print(f"wrote {out}/results.json, results.md and curves-*.png")
    return 0


def cmd_eval(a) -> int:
    run = Path(a.hypernet)
    return _eval(run, Path(a.zoo), Path(a.out or f"results/{run.name}"), a.seeds, a.quiet, a.threads, a.samples,
                 a.cells, a.audit_only)


def cmd_predict(a) -> int:
    from safetensors.torch import save_file

    from hypernet.api import condition_for, load_hypernet, predict_init
    from zoo import nets, tasks
    from zoo.spec import load_spec

    spec = load_spec(a.config)
    arch = {**nets.knobs(spec.model.family), **spec.model.knobs}
    if a.arch:
        try:
            extra = json.loads(a.arch)
        except json.JSONDecodeError as e:
            raise ZooError(f"--arch: not valid JSON ({e})") from None
        if not isinstance(extra, dict):
            raise ZooError("--arch: expected a JSON object of architecture knobs")
        arch.update(extra)
    for k in ("width", "depth"):
        if getattr(a, k) is not None:
            arch[k] = getattr(a, k)
    nets.check_knobs(spec.model.family, arch)
    task = tasks.load(spec.task, spec.task_args)
    try:
        model = nets.build(spec.model.family, task, **arch)
    except (ValueError, TypeError) as e:
        raise ZooError(f"cannot build {spec.model.family} {arch}: {e}") from None
    ghn = load_hypernet(a.hypernet)
    zoo_name = spec.name if ghn.conditions and spec.name in ghn.conditions.zoos else None
    _, resolved = condition_for(ghn, model, task=spec.task, zoo=zoo_name, temperature=a.temperature, load=a.load)
    predict_init(model, ghn, zoo=resolved.get("zoo"), temperature=resolved.get("temperature"), load=resolved.get("load"))
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    meta = {"arch": json.dumps({"family": spec.model.family, **arch}, sort_keys=True), "task": spec.task,
            "task_args": json.dumps(spec.task_args, sort_keys=True), "condition": json.dumps(resolved, sort_keys=True),
            "hypernet": str(a.hypernet)}
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp), metadata=meta)
    tmp.replace(out)
    n = sum(p.numel() for p in model.parameters())
    print(f"{out}: {n:,} parameters of {spec.model.family} {arch} for {resolved or 'no condition'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    from pipelines.zoo_cli import run_command

    return run_command("hypernet", _parser(), {"train": cmd_train, "predict": cmd_predict, "eval": cmd_eval,
                                               "compare": cmd_compare}, argv,
                       "`hypernet train --resume` continues from the last checkpoint")


if __name__ == "__main__":
    sys.exit(main())
