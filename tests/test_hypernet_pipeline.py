"""Hypernet training, prediction and the init benchmark on a real (tiny) zoo built by `zoo build`.

The zoo: a 2x2 plane (batch 64/128 x width 4/8) of one-hidden-layer MLPs on MNIST-1D, 2 seeds,
2 epochs, built in-process (no Ray: the Ray path has its own tests). The held-out pattern keeps
T0L1 out of hypernet training.
"""
from __future__ import annotations

import copy
import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

import pyarrow.compute as pc
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import hypernet
from tests.conftest import interrupt_after, tiny_spec
from tests.hub_fixtures import hub, hub_env  # noqa: F401  (pytest fixtures)
from hypernet.api import load_hypernet, predict_init
from hypernet.conditions import AxisNorm, ConditionSpec
from pipelines.fit import HypernetConfig, Trainer, read_run
from pipelines.zoodata import load_cells
from pipelines.recipes import load_config, train
from pipelines.zoodata import held_out_cell, load_cells, make_split
from pipelines.build import build
from pipelines.benchmark import aggregate, benchmark, compare, eval_steps, markdown, speedup_bound, summarize
from zoo import nets, store
from zoo.errors import ZooError
from zoo.spec import Collection, parse_spec

pytestmark = pytest.mark.slow

TINY_GHN = {"hidden": 16, "layers": 1, "dec_hidden": 16, "max_out": 32, "max_in": 48}


def tiny_config(steps: int = 30, **training) -> HypernetConfig:
    return HypernetConfig.from_dict({
        "kind": "ghn", "ghn": TINY_GHN,
        "training": {"steps": steps, "meta_batch": 2, "batch_size": 128, "lr": 3e-3, "warmup": 2,
                     "checkpoint_every": 10, "log_every": 5, **training},
    })


@pytest.fixture(scope="module")
def zoo_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hz") / "zoo"
    spec = parse_spec(tiny_spec("hz", metrics={"enabled": False}))
    build(Collection("hz", [spec]), out, use_ray=False, progress=False)
    return out


@pytest.fixture(scope="module")
def run_dir(zoo_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hrun") / "ghn"
    train(zoo_dir, out, tiny_config(), progress=False)
    return out


# ---- conditions and split -------------------------------------------------------------------------
def test_held_out_pattern_is_one_cell_per_row_and_column_of_a_5x5_plane():
    held = [(t, l) for t in range(5) for l in range(5) if held_out_cell(t, l)]
    assert len(held) == 5
    assert sorted(t for t, _ in held) == list(range(5))
    assert sorted(l for _, l in held) == list(range(5))


def test_split_of_the_tiny_zoo(zoo_dir):
    split = make_split(load_cells(zoo_dir))
    assert split.held_out_cells == ["hz/T0L1"]
    cases = {a.name: a for a in split.arch_cases}
    assert set(cases) == {"between", "narrower", "wider", "shallower", "deeper", "depth-x-width", "activation"}
    assert cases["between"].arch["width"] == 6 and cases["between"].load == 6
    assert cases["narrower"].arch["width"] == 2 and cases["wider"].arch["width"] == 16
    assert cases["deeper"].arch["depth"] == 2 and cases["shallower"].arch["depth"] == 0
    # one architecture in the zoo: the unseen depth at the unseen width
    assert (cases["depth-x-width"].arch["depth"], cases["depth-x-width"].arch["width"]) == (2, 6)
    assert cases["activation"].arch == {"family": "mlp", "width": 8, "depth": 1, "activation": "tanh"}
    zoo_archs = [c.arch for c in load_cells(zoo_dir)]
    assert not any(a.arch in zoo_archs for a in split.arch_cases)  # none is an architecture of the zoo
    assert all(a.temperature == 128 for a in split.arch_cases)  # the middle temperature of [64, 128]


def test_split_of_a_sampled_plane(tmp_path):
    """A sampled plane has one temperature a point, so most widths have no cell at the middle
    temperature: each held-out architecture takes the cell of its base width nearest to it."""
    from tests.test_sampling import random_spec

    spec = parse_spec(random_spec(9, training={"epochs": 1}, checkpoints=[0, 1], seeds=[0], metrics={"enabled": False}))
    build(Collection("s", [spec]), tmp_path / "z", use_ray=False, progress=False)
    cells = load_cells(tmp_path / "z")
    assert len({c.temperature for c in cells}) == len(cells) and len({c.arch["width"] for c in cells}) == 3
    split = make_split(cells)
    cases = {a.name: a for a in split.arch_cases}
    assert {"between", "narrower", "wider", "shallower", "deeper"} <= set(cases)
    temps = sorted(c.temperature for c in cells)
    t_mid = temps[len(temps) // 2]
    by_key = {c.cell: c for c in cells}
    for name, base in (("between", 4), ("narrower", 4), ("wider", 16)):
        ref = by_key[cases[name].reference_cell]
        near = min((c for c in cells if c.arch["width"] == base), key=lambda c: abs(math.log(c.temperature / t_mid)))
        assert ref.arch["width"] == base and ref.cell == near.cell and cases[name].temperature == near.temperature


def test_condition_normalization_and_resolution():
    n = AxisNorm.fit("batch_size", [16, 64, 256])
    assert n.log and math.isclose(n(64, "t"), 0.0, abs_tol=1e-12)
    assert n(256, "t") > 0 > n(16, "t")
    lin = AxisNorm.fit("label_noise", [0.0, 0.2])
    assert not lin.log and math.isclose(lin(0.1, "l"), 0.0, abs_tol=1e-12)
    with pytest.raises(ZooError, match="must be > 0"):
        n(0, "temperature (batch_size)")
    spec = ConditionSpec({
        "a": {"task": "digits", "family": "resnet", "temperature": n.__dict__, "load": n.__dict__,
              "temperature_values": [16, 64, 256], "load_values": [16, 64, 256]},
        "b": {"task": "digits", "family": "vit", "temperature": n.__dict__, "load": n.__dict__,
              "temperature_values": [16, 64, 256], "load_values": [16, 64, 256]},
    })
    assert spec.n == 4
    v = spec.vector("b", 64, 256)
    assert v[:2].tolist() == [0.0, 1.0] and math.isclose(float(v[2]), 0.0, abs_tol=1e-6) and float(v[3]) > 0
    assert spec.resolve(task="digits", family="vit") == "b"
    with pytest.raises(ZooError, match="several zoos"):
        spec.resolve(task="digits")
    with pytest.raises(ZooError, match="valid: digits"):
        spec.resolve(task="mnist1d")
    assert math.isclose(spec.default("a", "temperature"), 64.0, rel_tol=1e-9)
    assert ConditionSpec.from_dict(spec.to_dict()).to_dict() == spec.to_dict()


def test_config_errors_name_the_field(tmp_path):
    with pytest.raises(ZooError, match="unknown training fields \\['stepz'\\]"):
        HypernetConfig.from_dict({"training": {"stepz": 3}})
    with pytest.raises(ZooError, match="unknown ghn fields \\['hiden'\\]"):
        HypernetConfig.from_dict({"ghn": {"hiden": 3}})
    with pytest.raises(ZooError, match="unknown generator kind 'gan'; valid: diffusion, ghn, ghn-lowrank"):
        HypernetConfig.from_dict({"kind": "gan"})
    with pytest.raises(ZooError, match="kind 'diffusion' is not a graph hypernetwork; this config is for ghn, ghn-lowrank"):
        HypernetConfig.from_dict({"kind": "diffusion"})
    with pytest.raises(ZooError, match="training.steps must be >= 1"):
        HypernetConfig.from_dict({"training": {"steps": 0}})
    for kind in ("ghn", "ghn-lowrank"):  # the shipped defaults parse, and --kind picks the decoder
        cfg = load_config(None, kind)
        assert cfg.kind == kind
    assert load_config(None, "ghn-lowrank").ghn_config(_spec()).decoder == "lowrank"


def _spec() -> ConditionSpec:
    n = AxisNorm.fit("batch_size", [64, 128]).__dict__
    return ConditionSpec({"z": {"task": "mnist1d", "family": "mlp", "temperature": n, "load": n,
                                "temperature_values": [64, 128], "load_values": [64, 128]}})


# ---- training ---------------------------------------------------------------------------------------
def test_training_run_folder_and_loss_decreases(run_dir):
    meta = read_run(run_dir)
    assert meta["steps"] == 30 and meta["kind"] == "ghn"
    assert meta["split"]["held_out_cells"] == ["hz/T0L1"]
    assert "hz/T0L1" not in meta["train_cells"] and len(meta["train_cells"]) == 3
    log = [json.loads(x) for x in (run_dir / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [5, 10, 15, 20, 25, 30]
    assert log[-1]["loss"] < 0.8 * log[0]["loss"]
    assert all(r["distill"] > 0 for r in log)  # the zoo members' outputs are part of the loss
    assert "train_cells_pred_score" in log[-1]
    assert {"config.json", "model.safetensors", "hypernet.json", "log.jsonl"} <= {p.name for p in run_dir.iterdir()}
    assert (run_dir / "checkpoint" / "optimizer.safetensors").exists()


def test_resume_after_an_interruption_is_exact(zoo_dir, run_dir, tmp_path, monkeypatch):
    out = tmp_path / "resumed"
    # meta_batch 2: interrupted inside step 14, after the checkpoint at 10
    interrupt_after(monkeypatch, Trainer, "cell_loss", 2 * 13,
                    lambda: train(zoo_dir, out, tiny_config(), progress=False))
    assert json.loads((out / "checkpoint" / "state.json").read_text())["step"] == 10
    with pytest.raises(ZooError, match="--resume"):
        train(zoo_dir, out, tiny_config(), progress=False)
    with pytest.raises(ZooError, match="different hypernet config"):
        train(zoo_dir, out, tiny_config(lr=1e-2), resume=True, progress=False)
    meta = train(zoo_dir, out, tiny_config(), resume=True, progress=False)
    assert meta["resumed_from"] == 10 and meta["steps"] == 30
    a, b = load_file(str(run_dir / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    steps = [json.loads(x)["step"] for x in (out / "log.jsonl").read_text().splitlines()]
    assert steps == [5, 10, 15, 20, 25, 30]


def test_lowrank_kind_trains(zoo_dir, tmp_path):
    cfg = tiny_config(steps=4)
    cfg.kind = "ghn-lowrank"
    meta = train(zoo_dir, tmp_path / "lr", cfg, progress=False)
    ghn = load_hypernet(tmp_path / "lr")
    assert ghn.config.decoder == "lowrank" and meta["decoder_params"] == ghn.decoder.n_params()


# ---- prediction -------------------------------------------------------------------------------------
def test_save_load_round_trip_predicts_identically(run_dir, tmp_path):
    ghn = load_hypernet(run_dir)
    ghn.save_pretrained(tmp_path / "copy")
    again = hypernet.GraphHyperNetwork.from_pretrained(str(tmp_path / "copy"))
    assert again.config == ghn.config
    model = nets.build("mlp", "mnist1d", width=6, depth=1)
    c = ghn.conditions.vector("hz", 64, 6)
    p1, p2 = ghn.predict(model, c), again.predict(model, c)
    assert all(torch.equal(p1[k], p2[k]) for k in p1)


def test_predict_init_fills_parameters_in_place(run_dir):
    model = nets.build("mlp", "mnist1d", width=6, depth=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = predict_init(model, str(run_dir), task="mnist1d", temperature=64, load=6)
    assert out is model
    ghn = load_hypernet(run_dir)
    expected = ghn.predict(model, ghn.conditions.vector("hz", 64, 6))
    for k, v in model.named_parameters():
        assert v.shape == before[k].shape and torch.equal(v.detach(), expected[k])
        assert not torch.equal(v.detach(), before[k])
    # defaults: the zoo's only task, the model's width as the load, the middle temperature
    m2 = predict_init(nets.build("mlp", "mnist1d", width=6, depth=1), ghn)
    mid = ghn.predict(model, ghn.conditions.vector("hz", math.sqrt(64 * 128), 6))
    assert all(torch.allclose(p.detach(), mid[k]) for k, p in m2.named_parameters())
    with pytest.raises(ZooError, match="not one this hypernet was trained on; valid: mnist1d"):
        predict_init(model, ghn, task="digits")


def test_predict_init_resets_batchnorm_statistics(run_dir):
    model = nets.build("resnet", "mnist1d", width=4)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert bns
    for m in bns:
        m.running_mean.fill_(3.0)
        m.running_var.fill_(7.0)
    predict_init(model, run_dir, task="mnist1d", temperature=64, load=4)
    assert all(float(m.running_mean.abs().max()) == 0 and float((m.running_var - 1).abs().max()) == 0 for m in bns)
    x = torch.randn(64, 1, 40)
    predict_init(model, run_dir, task="mnist1d", temperature=64, load=4, calibrate=x)
    assert any(float(m.running_mean.abs().max()) > 0 for m in bns)


def test_cli_predict_writes_the_init_and_errors_are_one_line(run_dir, tmp_path):
    spec = tmp_path / "hz.yaml"
    import yaml

    spec.write_text(yaml.safe_dump(tiny_spec("hz", metrics={"enabled": False})))
    out = tmp_path / "init.safetensors"
    cmd = [sys.executable, "-m", "pipelines.hypernet_cli", "predict", "--hypernet", str(run_dir), "--config", str(spec),
           "--width", "12", "--temperature", "64", "--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    model = nets.build("mlp", "mnist1d", width=12, depth=1)
    with safe_open(str(out), framework="pt") as f:
        meta = f.metadata()
        assert set(f.keys()) == set(model.state_dict())
        for k, v in model.state_dict().items():
            assert f.get_tensor(k).shape == v.shape
    cond = json.loads(meta["condition"])
    assert cond["zoo"] == "hz" and cond["temperature"] == 64 and cond["load"] == 12
    bad = subprocess.run(cmd[:-2] + ["--out", str(tmp_path / "x.safetensors"), "--arch", "{\"heads\": 2}"],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "no knob(s) ['heads']" in bad.stderr
    assert not (tmp_path / "x.safetensors").exists()
    missing = subprocess.run(cmd[:5] + [str(tmp_path / "nope")] + cmd[6:], capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2 and "no such hypernetwork folder" in missing.stderr


def test_push_to_hub_and_load_by_id(run_dir, hub, hub_env):
    ghn = load_hypernet(run_dir)
    ghn.push_to_hub("lab/ghn-tiny")
    files = hub.files("lab/ghn-tiny", repo_type="model")
    assert {"config.json", "model.safetensors"} <= set(files)
    remote = hypernet.GraphHyperNetwork.from_pretrained("lab/ghn-tiny")
    assert all(torch.equal(a, b) for a, b in zip(ghn.state_dict().values(), remote.state_dict().values()))
    model = predict_init(nets.build("mlp", "mnist1d", width=6, depth=1), "lab/ghn-tiny", temperature=64)
    local = predict_init(nets.build("mlp", "mnist1d", width=6, depth=1), ghn, temperature=64)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), local.state_dict().values()))


# ---- the init benchmark --------------------------------------------------------------------------------
def test_eval_steps_grid():
    s = eval_steps(640, 16)
    assert s[0] == 0 and s[-1] == 640 and {1, 2, 10, 100, 16, 320} <= set(s) and s == sorted(set(s))


def test_benchmark_end_to_end(zoo_dir, run_dir, tmp_path):
    out = tmp_path / "results"
    r = subprocess.run([sys.executable, "-m", "pipelines.hypernet_cli", "eval", "--hypernet", str(run_dir), "--zoo",
                        str(zoo_dir), "--out", str(out), "--quiet", "--seeds", "0", "1", "--threads", "1"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "median speedup" in r.stdout and "goals met" in r.stdout
    doc = json.loads((out / "results.json").read_text())
    s = doc["summary"]
    assert s["n_cases"] == {"cells": 1, "archs": 7} and s["seeds"] == 2 and doc["machine"]["torch_threads"] == 1
    # every recorded step count and speedup follows from the recorded curves by the documented rule,
    # and the summary's medians and counts from those records
    for x in doc["results"]:
        _check_steps_and_speedups(x)
    for grp in ("cells", "archs"):
        recs = [x["generators"]["hypernet"] for x in doc["results"] if x["group"] == grp]
        assert s[f"median_speedup_{grp}"] == pytest.approx(statistics.median(r["speedup"] for r in recs))
        lo, hi = s[f"median_speedup_{grp}_ci"]
        assert lo <= s[f"median_speedup_{grp}"] <= hi
        assert s["at_target_from_step0"][grp] == sum(all(v == 0 for v in r["steps_to_target"]) for r in recs)
        assert sum(s["speedup_bounds"][grp].values()) == len(recs)
    assert s["final_acc_delta_median"] == pytest.approx(statistics.median(
        x["generators"]["hypernet"]["final_delta"] for x in doc["results"]))
    assert s["goals"]["cells_speedup_ge_10"] == (s["median_speedup_cells"] >= 10)
    # every baseline that ran has its own summary; the best one on held-out architectures is the
    # baseline with the highest median there, and the ratio to it is taken per case and seed
    by = s["by_generator"]
    assert {"random", "hypernet", "lsuv", "zero", "orthogonal", "nearest", "weight_selection"} <= set(by)
    ranked = {b: by[b]["median_speedup_archs"] for b in ("nearest", "weight_selection", "lsuv", "zero", "orthogonal")
              if by[b]["median_speedup_archs"] is not None}
    assert s["best_baseline"] == max(ranked, key=ranked.get)
    assert s["ratio_to_best_baseline_archs"] is not None and len(s["ratio_to_best_baseline_archs_ci"]) == 2
    # the machine the numbers come from (the CLI's process keeps torch's default thread count)
    from zoo.machine import machine_info

    m = doc["machine"]
    assert {k: v for k, v in m.items() if k != "torch_threads"} == {
        k: v for k, v in machine_info().items() if k != "torch_threads"}
    assert isinstance(m["torch_threads"], int) and m["torch_threads"] >= 1
    cases = {x["case"]: x for x in doc["results"]}
    assert set(cases) == {"hz/T0L1", *(f"hz/arch:{a}" for a in
                                       ("between", "narrower", "wider", "shallower", "deeper", "depth-x-width", "activation"))}
    cell = cases["hz/T0L1"]
    # width 8 is the zoo's widest: no larger net to select weights from
    assert set(cell["generators"]) == {"random", "hypernet", "nearest", "lsuv", "zero", "orthogonal"}
    assert "no larger trained net" in cell["unsupported"]["weight_selection"]
    assert cell["nearest_cell"] == "T1L1"  # the only training cell with T0L1's width
    assert all("nearest" not in x["generators"] for k, x in cases.items() if "arch:" in k)
    # weight selection wherever a larger trained net exists: the narrower widths 2 and 6, from width 8
    ws = {k for k, x in cases.items() if "weight_selection" in x["generators"]}
    assert ws == {"hz/arch:between", "hz/arch:narrower"}
    # from the nearest larger training cell: width 6 from width 8 (T1L1), width 2 from width 4 (T1L0)
    assert {k: cases[k]["sources"]["weight_selection"] for k in ws} == {"hz/arch:between": "T1L1",
                                                                      "hz/arch:narrower": "T1L0"}
    assert cell["steps_total"] == 2 * math.ceil(2000 / 64)
    for g, rec in cell["generators"].items():
        assert len(rec["curves"]) == 2 and len(rec["curves"][0]) == len(rec["curve_steps"])
        assert rec["curve_steps"][0] == 0 and rec["curve_steps"][-1] == cell["steps_total"]
    # (a) on a held-out cell is the zoo's own training of that cell: same init, data order and code
    table = store.read_rows(zoo_dir, "hz")
    rows = table.filter(pc.and_(pc.equal(table["cell"], "T0L1"), pc.equal(table["epoch"], 2))).to_pylist()
    zoo_final = {row["seed"]: row["test_acc"] for row in rows}
    for seed, ps in zip(doc["seeds"], cell["generators"]["random"]["per_seed"]):
        assert abs(ps["final"] - zoo_final[seed]) <= 2e-3
    # a zoo member's trained weights are already at the target: nearest starts far above random
    assert cell["generators"]["nearest"]["at_step"]["0"] > cell["generators"]["random"]["at_step"]["0"] + 0.1
    md = (out / "results.md").read_text()
    assert "| hz/T0L1 | 64 | 8 | hypernet |" in md and "speedup, held-out cells" in md and "(best baseline)" in md
    assert "Baselines without an init for a case" in md and "Goals:" in md
    assert "threads" in md and m["cpu"] in md and "Marks: ≥ x: a lower bound" in md
    for png in ("curves-cells.png", "curves-archs.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _check_steps_and_speedups(r: dict) -> None:
    """A case record against its own curves: steps to target = the first recorded step at which the
    score reaches random init's final score of the same seed; speedup per seed = max(1, steps of
    random) / max(1, steps), or / total when never reached; the case's = their median."""
    total, rnd = r["steps_total"], r["generators"]["random"]
    targets = [c[-1] for c in rnd["curves"]]
    better = (lambda v, t: v >= t) if r["higher_is_better"] else (lambda v, t: v <= t)
    for g, rec in r["generators"].items():
        assert rec["curve_steps"][0] == 0 and rec["curve_steps"][-1] == total
        per_seed = []
        for i, curve in enumerate(rec["curves"]):
            hit = next((st for st, v in zip(rec["curve_steps"], curve) if better(v, targets[i])), None)
            assert rec["steps_to_target"][i] == hit, (r["case"], g, i)
            a = rnd["steps_to_target"][i]
            per_seed.append(max(1, a) / (total if hit is None else max(1, hit)))
        assert rec["speedup_per_seed"] == pytest.approx(per_seed), (r["case"], g)
        assert rec["speedup"] == pytest.approx(statistics.median(per_seed)), (r["case"], g)
        assert rec["reached"] == all(h is not None for h in rec["steps_to_target"])
        assert rec["final_delta"] == pytest.approx(statistics.mean(
            c[-1] - t for c, t in zip(rec["curves"], targets)), abs=1e-12)
    # random init reaches its own final score, at the last step at the latest
    assert all(a is not None and a <= total for a in rnd["steps_to_target"])


def test_benchmark_refuses_a_different_zoo(run_dir, tmp_path):
    other = tmp_path / "other"
    spec = parse_spec(tiny_spec("other", metrics={"enabled": False}, seeds=[0]))
    build(Collection("other", [spec]), other, use_ray=False, progress=False)
    with pytest.raises(ZooError, match="no complete zoo \\['hz'\\]"):
        benchmark(run_dir, other, progress=False)


# ---- the diffusion generator through the same pipeline -------------------------------------------------
def test_diffusion_trains_predicts_and_benchmarks(zoo_dir, tmp_path):
    from hypernet.diffusion import WeightDiffusion
    from pipelines.fit_diffusion import DiffusionRunConfig
    from pipelines.recipes import train as train_diffusion

    cfg = DiffusionRunConfig.from_dict({
        "kind": "diffusion",
        "diffusion": {"token_size": 16, "d_model": 32, "layers": 1, "heads": 2, "timesteps": 50, "sample_steps": 5,
                      "prediction": "v_prediction", "base_rows": 4},
        "training": {"steps": 12, "batch_size": 4, "lr": 3e-3, "warmup": 2, "augment": 0.5,
                     "checkpoint_every": 6, "log_every": 3},
    })
    out = tmp_path / "diff"
    meta = train_diffusion(zoo_dir, out, cfg, progress=False)
    assert meta["kind"] == "diffusion" and meta["split"]["held_out_cells"] == ["hz/T0L1"]
    assert meta["n_training_members"] == 3 * 2  # 3 training cells x 2 seeds
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [3, 6, 9, 12] and all(math.isfinite(r["loss"]) for r in log)
    # the task term trains through the decoded clean estimates: CE of a 10-class problem, KL >= 0
    assert all(0 < r["task"] < 10 and r["distill"] >= 0 and r["denoise"] > 0 for r in log)
    assert all(abs(r["loss"] - r["denoise"] - r["task"] - r["distill"]) < 1e-4 for r in log)
    gen = load_hypernet(out)
    assert isinstance(gen, WeightDiffusion) and gen.config.family == "mlp" and gen.config.tokenizer
    # sampling fills every parameter with exactly its shape, for a width the zoo never had
    model = nets.build("mlp", "mnist1d", width=6, depth=1)
    shapes = {k: v.shape for k, v in model.named_parameters()}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    predict_init(model, gen, temperature=64, load=6, n=2, seed=3)
    assert {k: v.shape for k, v in model.named_parameters()} == shapes
    assert all(torch.isfinite(v).all() for v in model.state_dict().values())
    assert any(not torch.equal(v, before[k]) for k, v in model.state_dict().items())
    again = predict_init(nets.build("mlp", "mnist1d", width=6, depth=1), str(out), temperature=64, load=6, n=2, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    # the shared benchmark runs on it unchanged
    doc = benchmark(out, zoo_dir, out=tmp_path / "res", seeds=[0], progress=False)
    assert doc["kind"] == "diffusion" and doc["summary"]["n_cases"] == {"cells": 1, "archs": 7}
    from zoo.machine import machine_info

    assert doc["machine"] == machine_info(torch_threads=torch.get_num_threads())
    for x in doc["results"]:
        _check_steps_and_speedups(x)
    mem = doc["memorization"]  # T0L1 (width 8) has a trained architecture: T1L1
    assert mem["nn_distance_ratio_median"] > 0 and len(mem["per_case"][0]["nn_distance_ratio"]) == 4
    assert mem["baseline_trained_plus_noise_median"] < mem["baseline_cell_average_median"]
    assert 0 <= mem["agreement_with_nearest_median"] <= 1
    assert len(mem["per_case"][0]["reference_held_out_members"]) == 2  # the held-out cell's own 2 seeds
    assert mem["reference_held_out_members_median"] > mem["baseline_trained_plus_noise_median"]
    # the denominator is the held-out cell's own seed distance (it has 2 members); the calibration:
    # nets trained there from seeds no member has, as far from every checkpoint as training makes them
    case0 = mem["per_case"][0]
    assert case0["seed_distance_from"] == "held-out cell" and case0["seed_distance_training_cells"] > 0
    zoo_seeds = {m.seed for c in load_cells(zoo_dir) for m in c.members}
    assert len(mem["fresh_seeds"]) == 2 and not zoo_seeds & set(mem["fresh_seeds"])
    assert len(case0["reference_fresh_runs"]) == 2
    # how far those runs moved from their inits: real training (> 0), in seed distances
    assert len(case0["fresh_run_travel"]) == 2 and all(0 < t < 10 for t in case0["fresh_run_travel"])
    assert mem["fresh_run_travel_median"] == pytest.approx(statistics.median(
        [statistics.median(c["fresh_run_travel"]) for c in mem["per_case"]]))
    assert "moved the fresh runs from their own inits" in (tmp_path / "res" / "results.md").read_text()
    assert mem["reference_fresh_runs_median"] > 3 * mem["baseline_trained_plus_noise_median"]
    lo, hi = mem["nn_distance_ratio_ci"]
    assert lo <= mem["nn_distance_ratio_median"] <= hi
    fresh0 = statistics.median(case0["reference_fresh_runs"])
    assert case0["ratio_over_fresh_runs"] == pytest.approx([r / fresh0 for r in case0["nn_distance_ratio"]])
    assert mem["goal_as_new_as_fresh_runs"] == (mem["ratio_over_fresh_runs_median"] >= 1)
    assert mem["goal_not_closer_than_seeds"] == (mem["nn_distance_ratio_median"] >= 1)
    assert (tmp_path / "res" / "results.json").exists()
    # --audit-only redoes the audit alone: the trained cases stay, the audit is the same for the same run
    from pipelines.hypernet_cli import main as hypernet_main

    before = json.loads((tmp_path / "res" / "results.json").read_text())
    assert hypernet_main(["eval", "--hypernet", str(out), "--zoo", str(zoo_dir), "--out", str(tmp_path / "res"),
                          "--audit-only", "--quiet"]) == 0
    after = json.loads((tmp_path / "res" / "results.json").read_text())
    assert after["results"] == before["results"] and after["summary"] == before["summary"]
    assert after["memorization"] == before["memorization"] and after["audit_seconds"] > 0
    assert hypernet_main(["eval", "--hypernet", str(out), "--zoo", str(zoo_dir), "--out", str(tmp_path / "res"),
                          "--audit-only", "--seeds", "0", "--quiet"]) == 2
    assert hypernet_main(["eval", "--hypernet", str(out), "--zoo", str(zoo_dir), "--out", str(tmp_path / "none"),
                          "--audit-only", "--quiet"]) == 2
    # the comparison table puts runs on the same cases side by side, and refuses other cases or seeds
    from pipelines.benchmark import compare, read_results

    other = json.loads((tmp_path / "res" / "results.json").read_text())
    other["hypernet"] = "copy"
    (tmp_path / "copy").mkdir()
    (tmp_path / "copy" / "results.json").write_text(json.dumps(other))
    assert hypernet_main(["compare", str(tmp_path / "res"), str(tmp_path / "copy"),
                          "--out", str(tmp_path / "cmp.md")]) == 0
    table = (tmp_path / "cmp.md").read_text()
    assert "| hz/T0L1 |" in table and "diff step 0" in table and "copy step 0" in table
    assert "| hz/arch:deeper |" in table and "unsupported" in table and "Memorization (diff)" in table
    other["seeds"] = [0, 1]
    with pytest.raises(ZooError, match="other cases or seeds"):
        compare([read_results(tmp_path / "res"), other])
    with pytest.raises(ZooError, match="no results.json"):
        read_results(tmp_path / "nowhere")
    # depth 2 was never in this zoo: the tokenizer has no statistics for its extra layer, and the
    # benchmark records that instead of failing
    assert list(doc["summary"]["unsupported"]) == ["hz/arch:deeper", "hz/arch:depth-x-width"]
    assert all("stat key" in why for why in doc["summary"]["unsupported"].values())
    with pytest.raises(ZooError, match="--resume"):
        train_diffusion(zoo_dir, out, cfg, progress=False)


def test_diffusion_resume_after_an_interruption_is_exact(zoo_dir, tmp_path, monkeypatch):
    """The task loss draws data from the step's generator and the base net has its own lr group:
    a run interrupted after its step-4 checkpoint and resumed ends bitwise equal to one that was not."""
    from pipelines.fit_diffusion import DiffusionRunConfig, DiffusionTrainer
    from pipelines.recipes import train as train_diffusion

    cfg = {"kind": "diffusion",
           "diffusion": {"token_size": 16, "d_model": 32, "layers": 1, "heads": 2, "timesteps": 50, "sample_steps": 1,
                         "prediction": "v_prediction", "base_rows": 4},
           "training": {"steps": 8, "batch_size": 3, "lr": 3e-3, "warmup": 2, "augment": 0.5, "data_batch": 16,
                        "checkpoint_every": 4, "log_every": 2}}
    whole = train_diffusion(zoo_dir, tmp_path / "whole", DiffusionRunConfig.from_dict(cfg), progress=False)
    out = tmp_path / "resumed"
    interrupt_after(monkeypatch, DiffusionTrainer, "task_loss", 6,  # inside step 7, after the checkpoint at 4
                    lambda: train_diffusion(zoo_dir, out, DiffusionRunConfig.from_dict(cfg), progress=False))
    meta = train_diffusion(zoo_dir, out, DiffusionRunConfig.from_dict(cfg), resume=True, progress=False)
    assert meta["resumed_from"] == 4 and meta["steps"] == whole["steps"] == 8
    a, b = load_file(str(tmp_path / "whole" / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert a.keys() == b.keys() and "base.weight" in a and all(torch.equal(a[k], b[k]) for k in a)
    assert [json.loads(x)["step"] for x in (out / "log.jsonl").read_text().splitlines()] == [2, 4, 6, 8]


def test_diffusion_refuses_mixed_families_and_bad_configs():
    from pipelines.fit_diffusion import DiffusionRunConfig

    with pytest.raises(ZooError, match="unknown diffusion fields \\['dmodel'\\]"):
        DiffusionRunConfig.from_dict({"diffusion": {"dmodel": 3}})
    with pytest.raises(ZooError, match="augment must be a probability"):
        DiffusionRunConfig.from_dict({"training": {"augment": 2}})
    with pytest.raises(ZooError, match="training.lr must be > 0"):
        DiffusionRunConfig.from_dict({"training": {"lr": 0}})
    with pytest.raises(ZooError, match="task_weight must be >= 0"):
        DiffusionRunConfig.from_dict({"training": {"task_weight": -1}})
    with pytest.raises(ZooError, match="token_scale 'width' is not valid"):
        DiffusionRunConfig.from_dict({"diffusion": {"token_scale": "width"}})
    assert load_config(None, "diffusion").kind == "diffusion"


def test_speedup_rule():
    from pipelines.benchmark import speedup as _speedup

    assert _speedup(384, 0, 640) == 384.0  # at the target before any step: counted as one step
    assert _speedup(0, 0, 640) == 1.0  # random init at its own final score from the start
    assert _speedup(300, 100, 600) == 3.0
    assert _speedup(300, None, 600) == 0.5  # never reached: an upper bound, steps(a) / total
    assert math.isnan(_speedup(None, 3, 10))  # random init diverged: no target


def test_speedup_bound_per_case():
    """The mark of a case's median speedup: per seed with a target, b at step 0 -> a lower bound,
    b never -> an upper bound; the median over seeds is monotone in each seed's value."""
    assert speedup_bound([100, 200], [50, 100]) == "exact"
    assert speedup_bound([100, 200], [0, 0]) == "lower"
    assert speedup_bound([100, 200], [0, 10]) == "lower"  # 100/1 >= true, 200/10 exact: the median >= its value
    assert speedup_bound([100, 200], [None, None]) == "upper"
    assert speedup_bound([100, 200], [None, 10]) == "upper"
    assert speedup_bound([100, 200], [0, None]) == "mixed"  # one at step 0, one never: no bound
    assert speedup_bound([None, 200], [0, None]) == "upper"  # seed 0 has no target: it does not count
    assert speedup_bound([None, None], [0, 5]) is None


# A hand-made benchmark: per case, random init's and the generator's steps to target per seed
# (2 seeds) and final scores; the expected speedups, bounds and summary are worked out by hand.
R_FINAL = [0.75, 0.8125]  # random init's finals: population std 0.03125 in every case
HAND = [  # case, group, total, random steps, generator steps, generator final - random final
    ("c1", "cells", 500, [100, 200], [0, 0], 0.0),          # 100/1, 200/1 -> 150, lower bound
    ("c2", "cells", 500, [100, 200], [0, None], -0.125),    # 100/1, 200/500 -> 50.2, mixed
    ("c3", "cells", 600, [300, 300], [None, None], -0.25),  # 300/600 twice -> 0.5, upper bound
    ("c4", "cells", 500, [100, 300], [50, 100], -0.125),    # 2, 3 -> 2.5, exact
    ("a1", "archs", 500, [120, 120], [0, 10], -0.0625),     # 120, 12 -> 66, lower bound
    ("a2", "archs", 500, [None, 100], [5, 50], 0.0),        # random seed 0 diverged: 100/50 -> 2, exact
]


def _seed(final, steps, step0):
    return {"at_step": {"0": step0, "10": step0, "100": final, "end": final}, "final": final,
            "steps_to_target": steps, "target": final, "diverged_epoch": None}


def _hand_results() -> list[dict]:
    out = []
    for key, group, total, ra, gb, delta in HAND:
        r_final = [math.nan if a is None else f for a, f in zip(ra, R_FINAL)]  # a diverged run has no final
        gens = {"random": {"per_seed": [_seed(f, a, 0.125) for f, a in zip(r_final, ra)]},
                "hypernet": {"per_seed": [_seed(f + delta, b, 0.5) for f, b in zip(r_final, gb)]}}
        if key == "c1":
            gens["nearest"] = {"per_seed": [_seed(f, 0, 0.75) for f in r_final]}
        if key == "a1":  # two baselines on one architecture: LSUV 120/60 = 2 per seed, orthogonal 1
            gens["lsuv"] = {"per_seed": [_seed(f, 60, 0.25) for f in r_final]}
            gens["orthogonal"] = {"per_seed": [_seed(f, 120, 0.25) for f in r_final]}
        aggregate(gens, total)
        out.append({"case": f"z/{key}", "group": group, "zoo": "z", "name": key, "temperature": 1.0, "load": 2.0,
                    "metric": "test_acc", "higher_is_better": True, "steps_total": total, "generators": gens,
                    "unsupported": {}})
    rnd = {"random": {"per_seed": [_seed(f, 100, 0.125) for f in R_FINAL]}}
    aggregate(rnd, 500)
    out.append({"case": "z/a3", "group": "archs", "zoo": "z", "name": "a3", "temperature": 1.0, "load": 2.0,
                "metric": "test_acc", "higher_is_better": True, "steps_total": 500, "generators": rnd,
                "unsupported": {"hypernet": "no statistics for layer 3"}})
    return out


def test_summary_and_marks_on_hand_made_results():
    results = _hand_results()
    by = {r["case"]: r["generators"] for r in results}
    assert by["z/c2"]["hypernet"]["speedup_per_seed"] == [100.0, 0.4]
    assert math.isnan(by["z/a2"]["hypernet"]["speedup_per_seed"][0])
    assert [by[f"z/{k}"]["hypernet"]["speedup"] for k in ("c1", "c2", "c3", "c4", "a1", "a2")] == pytest.approx(
        [150.0, 50.2, 0.5, 2.5, 66.0, 2.0])
    assert [by[f"z/{k}"]["hypernet"]["speedup_bound"] for k in ("c1", "c2", "c3", "c4", "a1", "a2")] == [
        "lower", "mixed", "upper", "exact", "lower", "exact"]
    assert by["z/c1"]["random"]["speedup"] == 1.0 and by["z/c1"]["random"]["speedup_bound"] == "exact"
    s = summarize(results, "hypernet")
    assert s["median_speedup_cells"] == pytest.approx((2.5 + 50.2) / 2)  # of 0.5, 2.5, 50.2, 150
    assert s["median_speedup_archs"] == pytest.approx((66 + 2) / 2)  # a3 is unsupported: not counted
    assert s["speedup_bounds"] == {"cells": {"exact": 1, "lower": 1, "upper": 1, "mixed": 1},
                                   "archs": {"exact": 1, "lower": 1, "upper": 0, "mixed": 0}}
    assert s["nearest_speedup_bounds_cells"] == {"exact": 0, "lower": 1, "upper": 0, "mixed": 0}
    assert s["at_target_from_step0"] == {"cells": 1, "archs": 0}  # c1 only (c2 misses it with one seed)
    # finals minus random's: c1..c4 0, -1/8, -1/4, -1/8, a1 -1/16, a2 0 (its seed 1: random seed 0
    # has no final); the median of the six
    assert s["final_acc_delta_median"] == -0.09375
    assert s["final_acc_delta_median_cells"] == -0.125 and s["final_acc_delta_median_archs"] == -0.03125
    assert s["seed_noise_final_std_median"] == 0.03125
    assert s["nearest_median_speedup_cells"] == 150.0 and s["nearest_final_acc_delta_median_cells"] == 0.0
    assert s["step0_median"] == {"random": 0.125, "hypernet": 0.5, "nearest": 0.75, "lsuv": 0.25, "orthogonal": 0.25}
    # the intervals hold the medians; with one case a group's interval is over its seeds only
    assert s["median_speedup_archs_ci"][0] <= 34 <= s["median_speedup_archs_ci"][1]
    # the best baseline on architectures is LSUV (2 > 1); the ratio is taken where both ran (a1),
    # per seed 120/2 = 60 and 12/2 = 6: median 33, the interval the seeds' range
    assert s["best_baseline"] == "lsuv" and s["best_baseline_median_speedup_archs"] == 2.0
    assert s["ratio_to_best_baseline_archs"] == 33.0 and s["ratio_to_best_baseline_archs_ci"] == [6.0, 60.0]
    assert s["by_generator"]["orthogonal"]["median_speedup_archs"] == 1.0
    assert s["n_cases"] == {"cells": 4, "archs": 3} and s["unsupported"] == {"z/a3": "no statistics for layer 3"}
    # 34 >= 3 with the interval's lower end 2 > 1; 33x LSUV with 6 > 1; 26.35 >= 10; but -0.094 is
    # below -0.03125
    assert s["median_speedup_archs_ci"][0] == 2.0
    assert s["goals"] == {"archs_speedup_ge_3_ci_above_1": True, "archs_ge_1.5x_best_baseline_ci_above_1": True,
                          "cells_speedup_ge_10": True, "final_not_worse_beyond_noise": False}

    doc = {"hypernet": "ghn", "kind": "ghn", "zoo": "z", "seeds": [0, 1], "summary": s, "results": results,
           "machine": {"cpu": "Test CPU", "cores": 2, "platform": "Linux x86_64", "torch": "2.0",
                       "cpu_capability": "AVX2", "torch_threads": 2}}
    md = markdown(doc)
    marks = {"c1": "≥150.0", "c2": "~50.2", "c3": "<0.5", "c4": "2.5", "a1": "≥66.0", "a2": "2.0"}
    rows = {ln.split(" | ")[0][2:]: ln for ln in md.splitlines() if " | hypernet | " in ln}
    for k, mark in marks.items():
        assert rows[f"z/{k}"].endswith(f"| {mark} |"), rows[f"z/{k}"]
    assert [ln for ln in md.splitlines() if "| nearest |" in ln][0].endswith("| ≥150.0 |")
    assert "Marks: ≥ x: a lower bound" in md and "~ x: neither" in md
    assert "speedups: 1 exact, 1 ≥, 1 <, 1 ~" in md  # the cells' counts
    assert "Machine: Test CPU, 2 cores, torch 2.0 (AVX2), 2 threads." in md
    assert "held-out cells (`--cells`" not in md  # every held-out cell ran
    sub = markdown({**doc, "cells_subset": {"benchmarked": 4, "held_out": 80}})
    assert "; 4 of the 80 held-out cells (`--cells`, spread over the architectures and the plane); score" in sub
    # compare: the same marks; the machines named, and said to differ
    other = copy.deepcopy(doc)
    other["hypernet"], other["machine"]["torch_threads"] = "ghn2", 1
    table = compare([doc, other])
    row = next(ln for ln in table.splitlines() if ln.startswith("| z/c2 |"))
    assert row.count("/ ~50.2") == 2 and "Machines differ" in table and "- ghn2: Test CPU, 2 cores" in table
    row = next(ln for ln in table.splitlines() if ln.startswith("| z/c3 |"))
    assert row.count("/ <0.5") == 2
    assert "Machine: Test CPU" in compare([doc, {**doc, "hypernet": "same"}])
    # results.json files written before the machine was recorded still read, print and compare
    old = {k: v for k, v in doc.items() if k != "machine"}
    old["summary"] = {k: v for k, v in s.items() if "bounds" not in k}
    assert "machine not recorded" in markdown(old)
    assert "Machines differ" in compare([doc, {**old, "hypernet": "old"}])
