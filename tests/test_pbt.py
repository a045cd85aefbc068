"""`--phase pbt`: the spec's pbt block, the plane coordinates, the member trainer's exact resume,
and (slow, on a local Ray) a tiny PBT experiment on Ray Tune end to end: rows, lineage, replay,
kill -9 and resume, a killed trial worker."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from pipelines.pbt import position
from zoo.pbt import nearest
from zoo import tasks
from zoo.errors import ZooError
from zoo.pbt import initial_hyperparameters, temperature_coordinate
from zoo.spec import parse_spec
from zoo.train import MemberConfig, Population, train_subset, validation_indices
from tests.conftest import pids_named

ROOT = Path(__file__).resolve().parent.parent


def pbt_spec(name: str = "tiny_pbt", epochs: int = 6, **pbt) -> dict:
    """Population 4, a perturbation every 2 epochs (2 of them in 6 epochs), width 16."""
    return {
        "name": name, "phase": "pbt", "task": "mnist1d", "model": {"family": "mlp", "depth": 1},
        "training": {"epochs": epochs, "optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "batch_size": 64},
        "axes": {"temperature": {"param": "batch_size", "values": [32, 64, 128]},
                 "load": {"param": "width", "values": [16]}},
        "pbt": {"population": 4, "perturbation_interval": 2, "quantile_fraction": 0.25,
                "mutations": {"lr": {"range": [0.01, 0.2]}, "batch_size": {"values": [32, 64, 128]}}, **pbt},
        "seeds": [0], "checkpoints": list(range(0, epochs + 1, 2)),
        "metrics": {"hessian": {"max_iter": 5, "probes": 5, "batches": 1, "batch_size": 128},
                    "connectivity": {"epochs": 1, "points": 3}, "cka": {"samples": 100}},
    }


def with_changes(spec: dict, path: str, value) -> dict:
    out = json.loads(json.dumps(spec))
    *parents, last = path.split(".")
    d = out
    for p in parents:
        d = d[p]
    if value is None:
        d.pop(last)
    else:
        d[last] = value
    return out


# ---- the spec ------------------------------------------------------------------------------
@pytest.mark.parametrize("path, value, message", [
    ("pbt", None, r"pbt: required for --phase pbt"),
    ("axes", None, r"axes: required for --phase pbt"),
    ("pbt.mutations", {"dropout": {"range": [0.1, 0.5]}}, r"pbt.mutations.dropout: not a hyperparameter PBT can mutate; valid: lr, weight_decay, momentum, batch_size"),
    ("pbt.mutations", {"batch_size": {"range": [16, 256]}}, r"mutations.batch_size: batch_size takes values"),
    ("pbt.mutations", {"batch_size": {"values": [16, 40.5]}}, r"batch sizes must be positive integers"),
    ("pbt.mutations", {"lr": {"range": [0.2, 0.01]}}, r"pbt.mutations.lr.range: low must be below high|low must be below high"),
    ("pbt.mutations", {"momentum": {"range": [0.5, 1.5], "log": False}}, r"momentum must lie in \[0, 1\)"),
    ("pbt.mutations", {"lr": {"range": [0.01, 0.2], "values": [0.1, 0.2]}}, r"give either range"),
    ("pbt.mutations", {"width": {"values": [8, 16]}}, r"not a hyperparameter PBT can mutate"),
    ("pbt.scheduler", "pb2", r"mutations.batch_size: PB2 explores continuous ranges only"),
    ("pbt.scheduler", "asha", r"pbt.scheduler: Input should be 'pbt' or 'pb2'"),
    ("pbt.metric", "test_acc", r"pbt.metric: Input should be 'val_acc' or 'val_loss'"),
    ("pbt.validation_fraction", 1.0, r"pbt.validation_fraction: Input should be less than 1"),
    ("pbt.population", 1, r"pbt.population: Input should be greater than or equal to 2"),
    ("pbt.perturbation_interval", 6, r"pbt.perturbation_interval: 6 epochs leaves no perturbation within training.epochs=6"),
    ("pbt.quantile_fraction", 0.7, r"pbt.quantile_fraction: Input should be less than or equal to 0.5"),
    ("pbt.warmup", 3, r"pbt.warmup: unknown field; valid: scheduler, population"),
    ("training.schedule", "cosine", r"training.schedule: PBT discovers the schedule; use constant"),
    ("architectures", {"count": 2, "space": {"depth": [1, 2]}}, r"architectures: not supported with --phase pbt"),
])
def test_pbt_spec_errors_name_the_field(path, value, message):
    with pytest.raises(ZooError, match=message):
        parse_spec(with_changes(pbt_spec(), path, value), "x.yaml")


def test_load_axis_and_optimizer_checks():
    spec = with_changes(pbt_spec(), "pbt.mutations", {"lr": {"range": [0.01, 0.2]}})
    spec["axes"]["load"] = {"param": "weight_decay", "values": [0.0]}
    with pytest.raises(ZooError, match=r"load.param 'weight_decay' is not valid"):
        parse_spec(spec, "x.yaml")
    spec = with_changes(pbt_spec(), "training.optimizer", "adam")
    spec["pbt"]["mutations"]["momentum"] = {"range": [0.5, 0.9], "log": False}
    with pytest.raises(ZooError, match=r"pbt.mutations.momentum: momentum is an SGD setting"):
        parse_spec(spec, "x.yaml")
    spec = pbt_spec()
    spec["axes"]["load"] = {"param": "data_fraction", "values": [0.5, 1.0]}
    spec["pbt"]["mutations"]["data_fraction"] = {"values": [0.5, 1.0]}
    with pytest.raises(ZooError, match=r"pbt.mutations.data_fraction: not a hyperparameter PBT can mutate"):
        parse_spec(spec, "x.yaml")


def test_bad_pbt_spec_is_one_line_and_exit_2(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(with_changes(pbt_spec(), "pbt.metric", "test_acc")))
    r = subprocess.run([sys.executable, "-m", "pipelines.zoo_cli", "build", "--config", str(path), "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "bad.yaml: pbt.metric" in r.stderr, r.stderr
    assert not (tmp_path / "o").exists()


def test_the_shipped_pbt_config_matches_the_default_zoos_budget():
    pbt = parse_spec(yaml.safe_load((ROOT / "configs/zoos/mlp_mnist1d_pbt.yaml").read_text()))
    grid = parse_spec(yaml.safe_load((ROOT / "configs/zoos/mlp_mnist1d.yaml").read_text()))
    assert len(pbt.members()) * pbt.training.epochs == len(grid.members()) * grid.training.epochs
    assert pbt.axes.model_dump() == grid.axes.model_dump()


# ---- members and the plane -----------------------------------------------------------------
def test_members_start_from_seeded_draws_within_their_ranges():
    spec = parse_spec(pbt_spec())
    members = spec.members()
    assert len(members) == 4 and len({m.model_id for m in members}) == 4
    assert [m.seed for m in members] == [0, 1, 2, 3]
    for k, m in enumerate(members):
        assert 0.01 <= m.training["lr"] <= 0.2 and m.training["batch_size"] in (32, 64, 128)
        assert m.training["holdout"] == 0.2
        assert m.arch["width"] == 16
        same = initial_hyperparameters(spec.pbt, spec.training.model_dump(), 0, k)
        assert (same["lr"], same["batch_size"]) == (m.training["lr"], m.training["batch_size"])
    # a larger population starts its first members alike, but they train in another experiment:
    # a PBT member's id depends on the whole pbt block
    bigger = parse_spec(with_changes(pbt_spec(), "pbt.population", 6)).members()
    assert [m.training["lr"] for m in bigger[:4]] == [m.training["lr"] for m in members]
    assert not {m.model_id for m in bigger} & {m.model_id for m in members}
    other = parse_spec(with_changes(pbt_spec(), "pbt.perturbation_interval", 3)).members()
    assert not {m.model_id for m in other} & {m.model_id for m in members}


def test_temperature_coordinate_is_the_equal_noise_scale_value():
    base = {"lr": 0.05, "batch_size": 64, "momentum": 0.9, "weight_decay": 0.0}
    assert temperature_coordinate("batch_size", {**base, "batch_size": 128}, base, "sgd") == pytest.approx(128)
    assert temperature_coordinate("batch_size", {**base, "lr": 0.1}, base, "sgd") == pytest.approx(32)
    # momentum 0.9 -> 0.8 halves the effective step lr / (1 - m): like doubling the batch
    assert temperature_coordinate("batch_size", {**base, "momentum": 0.8}, base, "sgd") == pytest.approx(128)
    assert temperature_coordinate("lr", {**base, "batch_size": 128}, base, "sgd") == pytest.approx(0.025)
    assert temperature_coordinate("lr", {**base, "momentum": 0.5}, base, "adam") == pytest.approx(0.05)


def test_validation_split_is_disjoint_from_training_and_fixed():
    val = validation_indices(4000, 0.2)
    assert len(val) == 800 and torch.equal(val, validation_indices(4000, 0.2))
    for fraction in (1.0, 0.3):
        train = train_subset(4000, fraction, holdout=0.2)
        assert len(train) == round(fraction * 3200)
        assert not set(train.tolist()) & set(val.tolist())
    assert torch.equal(train_subset(4000, 0.5), train_subset(4000, 0.5, 0.0))  # no holdout: as before


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_checkpointed_and_retuned_training_equals_continuous(optimizer):
    """PBT's trial saves weights + optimizer state and changes hyperparameters between epochs;
    training through a save/restore equals training straight through, bit for bit."""
    task = tasks.load("mnist1d")
    common = {"optimizer": optimizer, "momentum": 0.9, "batch_size": 64, "epochs": 3, "data_fraction": 0.1}
    arch = {"family": "mlp", "depth": 1, "width": 8}

    def pop(states=None):
        return Population(task, arch, "kaiming_uniform", common, [MemberConfig("a", 0, 0.02)], states=states)

    straight = pop()
    straight.train_epoch(1)
    straight.set_hyperparameters(lr=[0.05], weight_decay=[1e-3], momentum=0.8, batch_size=32)
    straight.train_epoch(2)
    first = pop()
    first.train_epoch(1)
    resumed = pop(states=[first.member_state(0)])
    resumed.order_gens = first.order_gens
    resumed.load_optimizer_state(first.optimizer_state())
    resumed.set_hyperparameters(lr=[0.05], weight_decay=[1e-3], momentum=0.8, batch_size=32)
    resumed.train_epoch(2)
    a, b = straight.member_state(0), resumed.member_state(0)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.step_count == straight.step_count == 7 + 13  # 400 samples: 7 batches of 64, then 13 of 32


# ---- a tiny PBT zoo on Ray Tune (slow: a local Ray) ----------------------------------------
def zoo(*args, cwd=ROOT, **kw):
    return subprocess.run([sys.executable, "-m", "pipelines.zoo_cli", *args], capture_output=True, text=True, cwd=cwd, **kw)


def wait_for(cond, timeout=240.0, every=0.2) -> bool:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if cond():
            return True
        time.sleep(every)
    return False


def dataset_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for sub in ("data", "weights") for p in sorted((root / sub).rglob("*"))
            if p.is_file()}


def load_rows(root: Path, name: str) -> list[dict]:
    from datasets import load_dataset

    return list(load_dataset(str(root), name, split="train"))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    d = tmp_path_factory.mktemp("pbt")
    path = d / "tiny_pbt.yaml"
    path.write_text(yaml.safe_dump(pbt_spec()))
    r = zoo("build", "--config", str(path), "--out", str(d / "out"), "--workers", "2")
    assert r.returncode == 0, r.stderr[-3000:]
    return d, path, d / "out"


@pytest.mark.slow
def test_tiny_pbt_zoo_rows_load_and_carry_their_history(built):
    import zoo as zoo_lib
    from zoo import store

    _, _, out = built
    assert store.verify(out) == []
    rows = load_rows(out, "tiny_pbt")
    acc = store.read_manifest(out)["zoos"]["tiny_pbt"]["final_test_acc"]
    finals = sorted(r["test_acc"] for r in rows if r["epoch"] == 6)
    assert acc == {"best": finals[-1], "median": (finals[1] + finals[2]) / 2, "models": 4}
    card = (out / "README.md").read_text()
    assert f"{finals[-1]:.3f} / {acc['median']:.3f}" in card and "`schedule_lr`" in card  # zoo table, PBT columns
    assert len(rows) == 4 * 4 and len({(r["model_id"], r["epoch"]) for r in rows}) == 16  # no row twice
    spec = parse_spec(store.read_manifest(out)["zoos"]["tiny_pbt"]["spec"])
    for r in rows:
        e = r["epoch"]
        assert len(r["schedule_lr"]) == len(r["schedule_batch_size"]) == e
        assert len(r["curve_test_acc"]) == len(r["curve_val_acc"]) == e + 1
        assert all(0.01 <= lr <= 0.2 for lr in r["schedule_lr"]) and set(r["schedule_batch_size"]) <= {32, 64, 128}
        assert (r["lr"], r["batch_size"]) == ((r["schedule_lr"][-1], r["schedule_batch_size"][-1]) if e else
                                               (r["lr"], r["batch_size"]))
        segs = json.loads(r["lineage"])
        assert segs[-1]["member"] == r["model_id"] and segs[0]["from_epoch"] == 0
        assert r["parent_id"] == (segs[-2]["member"] if len(segs) > 1 else None)

        assert r["temperature"] == pytest.approx(position(spec, {"lr": r["lr"], "batch_size": r["batch_size"],
                                                                 "momentum": r["momentum"], "weight_decay": r["weight_decay"]}))
        from zoo.load import evaluate

        model = zoo_lib.load_model(r, root=out)
        assert evaluate(model, r)["test_acc"] == r["test_acc"]  # the stored weights give the row's metrics
    # the whole population is ranked at each perturbation: at epoch 2 the member with the lowest
    # validation accuracy (the bottom quarter, 1 of 4) copies the one with the highest
    at2 = {r["model_id"]: r["curve_val_acc"][-1] for r in rows if r["epoch"] == 2}
    final = [r for r in rows if r["epoch"] == 6]
    at4 = [json.loads(r["lineage"]) for r in rows if r["epoch"] == 4]  # before the copies at 4: all of those at 2
    first = [(segs[i - 1]["member"], s["member"]) for segs in at4 for i, s in enumerate(segs) if i and s["from_epoch"] == 2]
    assert len(set(first)) == 1, first
    parent, child = first[0]
    assert child == min(at2, key=at2.get) and parent == max(at2, key=at2.get)
    # every member ends in a cell of the grid, with the metrics and the phase of that cell
    cells = {c.id for c in spec.cells()}
    for r in final:
        assert r["cell"] in cells and r["phase"] in ("I", "II", "III", "IV-A", "IV-B")
        t_values = spec.axes.temperature.values
        assert r["cell"] == f"T{nearest(t_values, r['temperature'])}L0"


@pytest.mark.slow
def test_lineage_is_consistent_and_replay_gives_the_same_weights(built):
    """A copy's weights at its exploit epoch are its parent's weights then, and replaying any
    row's schedule and lineage without Tune gives its stored weights bit for bit."""
    from pipelines import pbt
    from zoo import store

    _, _, out = built
    rows = load_rows(out, "tiny_pbt")
    spec = parse_spec(store.read_manifest(out)["zoos"]["tiny_pbt"]["spec"])
    by_key = {(r["model_id"], r["epoch"]): r for r in rows}
    exploits = 0
    for r in rows:
        segs = json.loads(r["lineage"])
        for prev, seg in zip(segs, segs[1:]):
            e = seg["from_epoch"]
            # the history up to e is the parent's: replayed to e, it is the parent's row at e
            parent_at_e = by_key[(prev["member"], e)]
            if json.loads(parent_at_e["lineage"]) != segs[: segs.index(seg)]:
                continue  # the parent copied someone itself at e (its row at e is its own, from before)
            upto = {**r, "epoch": e, "lineage": json.dumps(segs[: segs.index(seg)])}
            got = pbt.replay(spec, upto)
            ref = store.read_state(out, parent_at_e)
            assert all(torch.equal(got[k], torch.from_numpy(ref[k])) for k in ref)
            exploits += 1
    assert exploits >= 1
    for r in rows:
        if r["epoch"] == 6:
            got, ref = pbt.replay(spec, r), store.read_state(out, r)
            assert all(torch.equal(got[k], torch.from_numpy(ref[k])) for k in ref)
    r = zoo("replay", f"{rows[-1]['model_id']}/6", "--dir", str(out))
    assert r.returncode == 0 and "identical to the stored weights" in r.stdout, r.stdout + r.stderr


@pytest.mark.slow
def test_replay_errors_are_one_line(built):
    _, _, out = built
    r = zoo("replay", "0123456789abcdef", "--dir", str(out))
    assert r.returncode == 2 and "no model '0123456789abcdef'" in r.stderr and "zoos: tiny_pbt" in r.stderr
    mid = load_rows(out, "tiny_pbt")[0]["model_id"]
    r = zoo("replay", f"{mid}/3", "--dir", str(out))
    assert r.returncode == 2 and "no checkpoint at epoch 3; its epochs: 0, 2, 4, 6" in r.stderr


@pytest.mark.slow
def test_an_uninterrupted_pbt_build_is_reproducible_whatever_the_workers(built):
    """Synchronous PBT with seeded decisions: one worker instead of two gives the same bytes."""
    d, path, out = built
    again = d / "again"
    r = zoo("build", "--config", str(path), "--out", str(again), "--workers", "1", "--quiet", "--no-metrics")
    assert r.returncode == 0, r.stderr[-3000:]
    import pyarrow.parquet as pq

    from zoo import store

    mine, theirs = dataset_files(out), dataset_files(again)
    strip = lambda root: pq.read_table(next((root / "data/tiny_pbt").glob("models-*.parquet"))).drop(
        list(store.CELL_METRICS)).to_pylist()  # the first build also has metrics
    assert strip(out) == strip(again)
    assert {k: v for k, v in mine.items() if "shard-" in k} == {k: v for k, v in theirs.items() if "shard-" in k}


@pytest.mark.slow
def test_pbt_build_killed_resumes_with_tune_restore_and_survives_a_killed_worker(tmp_path):
    """kill -9 of the whole build mid-experiment, then a rerun (Tune's restore) during which the
    trials' worker processes are killed (Tune retries them from their checkpoints): the dataset ends
    complete and verified, each (member, epoch) once, every row replaying to its weights."""
    from pipelines import pbt
    from zoo import store

    spec = pbt_spec(epochs=10)
    path = tmp_path / "tiny_pbt.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "out"
    rows_dir = out / ".pbt/tiny_pbt/rows/tiny_pbt-s0-L0"
    n_rows = lambda: len(list(rows_dir.glob("*.json"))) if rows_dir.exists() else 0
    cmd = [sys.executable, "-m", "pipelines.zoo_cli", "build", "--config", str(path), "--out", str(out), "--workers", "2",
           "--quiet", "--no-metrics"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    assert wait_for(lambda: n_rows() >= 8)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not list((out / "data/tiny_pbt").glob("models-*.parquet")) if (out / "data/tiny_pbt").exists() else True
    before = n_rows()
    assert before < 4 * 6, "the experiment finished before it could be interrupted"

    def trial_workers(training: bool = True) -> list[int]:
        """Trial actors (`ray::ImplicitFunc`), those running a training step only by default."""
        return pids_named("ray::ImplicitFunc.train" if training else "ray::ImplicitFunc")

    # Ray's daemons are not in the build's process group: the killed build's trial actors can
    # linger for a while; they must not be mistaken for the rerun's
    if not wait_for(lambda: not trial_workers(training=False), timeout=30):
        for pid in trial_workers(training=False):
            os.kill(pid, signal.SIGKILL)
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)

    assert wait_for(lambda: n_rows() > before and bool(trial_workers()), timeout=180, every=0.05)
    assert n_rows() < 4 * 6, "the resumed experiment finished before a worker could be killed"
    for pid in trial_workers():  # the actors training now: their trials fail
        os.kill(pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    assert store.verify(out) == []
    assert "Trial task failed" in err  # Tune saw the killed trial fail (and retried it from its checkpoint)
    rows = load_rows(out, "tiny_pbt")
    assert len(rows) == 4 * 6 and len({(r["model_id"], r["epoch"]) for r in rows}) == 24
    parsed = parse_spec(spec)
    for r in rows:
        if r["epoch"] == 10:
            got, ref = pbt.replay(parsed, r), store.read_state(out, r)
            assert all(torch.equal(got[k], torch.from_numpy(ref[k])) for k in ref)


@pytest.mark.slow
def test_pb2_explores_continuous_hyperparameters(tmp_path):
    """scheduler: pb2 (Tune's PB2, GP-bandit explore): lr and momentum schedules, no batch size."""
    spec = pbt_spec("tiny_pb2", epochs=8, scheduler="pb2",
                    mutations={"lr": {"range": [0.01, 0.2]}, "momentum": {"range": [0.5, 0.95], "log": False}})
    path = tmp_path / "pb2.yaml"
    path.write_text(yaml.safe_dump(spec))
    r = zoo("build", "--config", str(path), "--out", str(tmp_path / "out"), "--workers", "2", "--quiet", "--no-metrics")
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [r for r in load_rows(tmp_path / "out", "tiny_pb2") if r["epoch"] == 8]
    changed = [r for r in rows if len(set(r["schedule_lr"])) > 1 or len(set(r["schedule_momentum"])) > 1]
    assert changed, "PB2 changed no member's hyperparameters"
    for r in rows:
        assert all(0.01 <= v <= 0.2 for v in r["schedule_lr"]) and all(0.5 <= v <= 0.95 for v in r["schedule_momentum"])
        assert set(r["schedule_batch_size"]) == {64}
