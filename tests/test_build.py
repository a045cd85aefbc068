"""End to end through a real local Ray: build a tiny 2x2x2 grid, read it back with `datasets`,
rebuild models from rows, verify the manifest, resume after a kill, survive a dead worker."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import datasets
import pyarrow.parquet as pq
import pytest
import torch
import yaml

import zoo
from zoo import store
from tests.conftest import pids_named, tiny_spec, write_spec

pytestmark = pytest.mark.slow

SPEC = tiny_spec("tiny_grid", compute={"max_members": 1}, training={"epochs": 3}, checkpoints=[0, 1, 3],
                 metrics={"enabled": False})  # 8 one-member bundles; metrics: tests/test_metrics_stage.py


def zoo_cmd(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipelines.zoo_cli", *args], capture_output=True, text=True, timeout=300, **kw)


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every data/weights file: what must be identical between builds."""
    return {str(p.relative_to(root)): store.sha256_file(p)
            for sub in ("data", "weights") for p in sorted((root / sub).rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def spec_file(tmp_path_factory) -> Path:
    return write_spec(tmp_path_factory.mktemp("spec") / "tiny_grid.yaml", SPEC)


@pytest.fixture(scope="module")
def built(tmp_path_factory, spec_file) -> Path:
    out = tmp_path_factory.mktemp("zoo") / "phases"
    r = zoo_cmd("build", "--phase", "grid", "--config", str(spec_file), "--out", str(out), "--workers", "2")
    assert r.returncode == 0, r.stderr
    return out


def test_layout_manifest_and_info(built):
    m = json.loads((built / "manifest.json").read_text())
    z = m["zoos"]["tiny_grid"]
    assert z["status"] == "complete" and z["models"] == 8 and z["cells"] == 4 and z["rows"] == 8 * 3
    assert z["spec"]["axes"]["load"]["values"] == [4, 8]
    assert set(m["versions"]) >= {"torch", "datasets", "ray"}
    # the machine the numbers come from: a user comparing builds can tell whether machines match
    from zoo.machine import cpu_model
    assert m["machine"]["cpu"] == cpu_model() and m["machine"]["torch"] == torch.__version__
    assert m["machine"]["torch_threads"] == z["spec"]["compute"]["threads_per_worker"]
    assert m["machine"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert len(list((built / "data/tiny_grid").glob("models-*.parquet"))) == 8
    assert list((built / "weights/tiny_grid").glob("shard-*.safetensors"))
    assert not list(built.rglob("*.tmp"))
    r = zoo_cmd("info", str(built))
    assert r.returncode == 0 and "tiny_grid" in r.stdout and "complete" in r.stdout
    r = zoo_cmd("verify", str(built))
    assert r.returncode == 0, r.stdout


def test_load_dataset_with_declared_features(built):
    card = (built / "README.md").read_text()
    header = yaml.safe_load(card.split("---")[1])
    declared = datasets.Features._from_yaml_list(header["dataset_info"][0]["features"])
    assert header["configs"][0]["config_name"] == "tiny_grid"
    ds = datasets.load_dataset(str(built), "tiny_grid", split="train")
    assert ds.features == declared == store.features()
    assert len(ds) == 24 and set(ds["epoch"]) == {0, 1, 3}
    one_width = ds.filter(lambda r: r["width"] == 4).with_format("torch")
    X, acc = one_width["weights"][:], one_width["test_acc"][:]  # datasets >= 4: columns are lazy
    assert X.dtype.is_floating_point and X.shape == (12, 40 * 4 + 4 + 4 * 10 + 10) and acc.shape == (12,)
    # the columns say what the spec says
    assert set(ds["batch_size"]) == {64, 128} and set(ds["width"]) == {4, 8} and set(ds["seed"]) == {0, 1}
    assert all(len(c) == 4 for c in ds["curve_test_acc"])


def _independent_metrics(model, task_name: str) -> tuple[float, float, int, int]:
    """Test loss and accuracy of `model` recomputed without the zoo's evaluation code: one forward
    pass over the whole test split, plain cross_entropy on the float64 logits, argmax accuracy;
    the number of test samples whose top two logits are so close that a last-bit difference in the
    logits could flip the argmax; and the number of test samples."""
    import torch
    import torch.nn.functional as F

    from zoo import tasks

    x, y = tasks.load(task_name).split("test")
    model.eval()
    with torch.no_grad():
        z = model(x)  # (N, classes) float32
    loss = F.cross_entropy(z.double(), y).item()
    acc = (z.argmax(-1) == y).double().mean().item()
    top2 = z.double().topk(2, dim=-1).values
    near_ties = int((top2[:, 0] - top2[:, 1] <= 1e-5 * top2.abs().max(-1).values.clamp_min(1)).sum())
    return loss, acc, near_ties, len(y)


def test_load_model_reproduces_the_row(built):
    ds = datasets.load_dataset(str(built), "tiny_grid", split="train")
    for i in (0, 5, 23):
        row = ds[i]
        model = zoo.load_model(row)
        assert zoo.evaluate(model, row["task"]) == {"test_loss": row["test_loss"], "test_acc": row["test_acc"]}
        # and the row's numbers are the metric's definition, not only what the same code gives twice.
        # The row's loss sums float32 per-sample cross entropies (chunks of 1000) in float64; this one
        # takes the float32 logits to float64 first. The two differ by the float32 rounding of the
        # log-softmax, ~1e-7 relative per sample and averaging out over the split: 1e-6 relative is
        # well above that and far below any change of definition (a train split, noisy labels, a sum).
        loss, acc, near_ties, n_test = _independent_metrics(model, row["task"])
        assert loss == pytest.approx(row["test_loss"], rel=1e-6, abs=0)
        # accuracy: exact, unless a sample's top two logits tie to within float32 rounding
        assert abs(acc - row["test_acc"]) * n_test <= near_ties + 1e-9, (acc, row["test_acc"], near_ties)
        from_shard = zoo.load_model(row, root=built)
        for k, v in model.state_dict().items():
            assert v.equal(from_shard.state_dict()[k])
    # the learning curve at a checkpoint epoch is the row's value
    row = ds[3]
    assert row["curve_test_acc"][row["epoch"]] == row["test_acc"]


def test_verify_catches_tampering(built, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(built, copy)
    victim = sorted((copy / "data/tiny_grid").glob("*.parquet"))[0]
    t = pq.read_table(victim)
    pq.write_table(t.slice(0, t.num_rows - 1), victim)
    r = zoo_cmd("verify", str(copy))
    assert r.returncode == 1
    assert victim.name in r.stdout and "sha256" in r.stdout and "rows = 23" in r.stdout


def test_rerun_trains_nothing_and_changes_nothing(built, spec_file):
    before = snapshot(built)
    r = zoo_cmd("build", "--config", str(spec_file), "--out", str(built), "--no-ray")
    assert r.returncode == 0, r.stderr
    assert "8 models already built, 0 bundles to train" in " ".join(r.stderr.split())
    assert snapshot(built) == before


def test_rows_of_an_older_version_are_rewritten_in_the_current_schema(built, spec_file, tmp_path):
    """A bundle committed before a column existed (here: without `arch_id`, under another index)
    is trained again and its file replaced, so the folder ends as a fresh build's."""
    import shutil

    copy = tmp_path / "older"
    shutil.copytree(built, copy)
    victim = sorted((copy / "data/tiny_grid").glob("models-*.parquet"))[0]
    t = pq.read_table(victim)
    _, _, bid = victim.stem.split("-", 2)
    pq.write_table(t.drop_columns(["arch_id"]), victim.with_name(f"models-00099-{bid}.parquet"))
    victim.unlink()
    r = zoo_cmd("build", "--config", str(spec_file), "--out", str(copy), "--no-ray")
    assert r.returncode == 0, r.stderr
    assert "7 models already built, 1 bundles to train" in " ".join(r.stderr.split())
    assert snapshot(copy) == snapshot(built)


def test_changed_spec_into_same_folder_is_refused(built, tmp_path):
    changed = write_spec(tmp_path / "changed.yaml", {**SPEC, "seeds": [0, 1, 2]})
    before = snapshot(built)
    r = zoo_cmd("build", "--config", str(changed), "--out", str(built), "--no-ray")
    assert r.returncode == 2
    assert r.stderr.startswith("zoo: error:") and "different spec" in r.stderr and "Traceback" not in r.stderr
    assert snapshot(built) == before


def _wait_for(cond, timeout=240.0, every=0.05):
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return True
        time.sleep(every)
    return False


def test_killed_build_resumes_to_identical_rows(built, spec_file, tmp_path):
    out = tmp_path / "interrupted"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipelines.zoo_cli", "build", "--config", str(spec_file), "--out", str(out), "--workers", "1", "--quiet"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    committed = lambda: list((out / "data/tiny_grid").glob("models-*.parquet")) if (out / "data/tiny_grid").exists() else []
    assert _wait_for(lambda: len(committed()) >= 2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    n_done = len(committed())
    assert 2 <= n_done < 8, "the build finished before it could be interrupted"
    assert store.verify(out)  # an interrupted build does not pass verification
    r = zoo_cmd("build", "--config", str(spec_file), "--out", str(out), "--workers", "2")
    assert r.returncode == 0, r.stderr
    assert f"{n_done} models already built" in " ".join(r.stderr.split())
    assert snapshot(out) == snapshot(built)
    assert zoo_cmd("verify", str(out)).returncode == 0


def test_dead_worker_is_retried(built, spec_file, tmp_path):
    out = tmp_path / "worker-killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipelines.zoo_cli", "build", "--config", str(spec_file), "--out", str(out), "--workers", "1", "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )

    def kill_a_worker() -> bool:
        pids = pids_named("ray::train_bundle")
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        return bool(pids)

    assert _wait_for(kill_a_worker, every=0.02)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert snapshot(out) == snapshot(built)


def _live_processes() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, process group) of every running process (unreaped zombies left out)."""
    ps = subprocess.run(["ps", "-eo", "pid=,ppid=,pgid=,stat="], capture_output=True, text=True).stdout
    return {int(p): (int(pp), int(g)) for p, pp, g, st in (ln.split() for ln in ps.splitlines()) if not st.startswith("Z")}


def _cluster_pids(pgid: int) -> set[int]:
    """The running processes of a cluster started as process group `pgid`: the group (GCS, raylet,
    agents) and their descendants (the raylet starts each worker in a process group of its own)."""
    procs = _live_processes()
    pids = {p for p, (_, g) in procs.items() if g == pgid}
    while True:
        more = {p for p, (pp, _) in procs.items() if pp in pids} - pids
        if not more:
            return pids
        pids |= more


def _stop_cluster(pgid: int, grace: float = 5.0) -> None:
    """SIGTERM the cluster's processes, then SIGKILL those left after `grace` seconds."""
    pids: set[int] = set()
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        pids |= _cluster_pids(pgid)  # workers keep their pid once the raylet is gone and they are orphaned
        for pid in pids & set(_live_processes()):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        if _wait_for(lambda: not pids & set(_live_processes()), timeout=wait, every=0.1):
            return


def test_joins_an_existing_cluster(built, spec_file, tmp_path):
    """`--address` connects to a running Ray cluster (a head node started here) instead of starting one.

    The head runs in its own session with its own temp dir: `ray start` leads a process group that
    the cluster's GCS, raylet and agents inherit, and the raylet starts the workers as its children,
    so stopping that group and its descendants stops this cluster only (`ray stop` stops every Ray
    on the machine and has no option to name one); the temp dir keeps other `ray.init()`s from
    finding it."""
    import shutil
    import socket
    import tempfile

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ray_cli = str(Path(sys.executable).with_name("ray"))
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    temp_dir = tempfile.mkdtemp(prefix="ray-test-", dir="/tmp")  # short: Ray's socket paths live under it
    start = subprocess.Popen([ray_cli, "start", "--head", "--num-cpus", "2", "--port", str(port), "--node-ip-address",
                              "127.0.0.1", "--include-dashboard", "false", "--disable-usage-stats",
                              "--temp-dir", temp_dir],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                             start_new_session=True)
    pgid = start.pid  # a new session's leader: its pid is the session's and the group's id
    try:
        _, err = start.communicate(timeout=120)
        assert start.returncode == 0, err
        assert _cluster_pids(pgid), "ray start left no process in its group"
        out = tmp_path / "on-cluster"
        r = subprocess.run([sys.executable, "-m", "pipelines.zoo_cli", "build", "--config", str(spec_file), "--out", str(out),
                            "--address", f"127.0.0.1:{port}"], capture_output=True, text=True, env=env, timeout=300)
        assert r.returncode == 0, r.stderr
        assert f"cluster 127.0.0.1:{port}" in " ".join(r.stderr.split())
        assert snapshot(out) == snapshot(built)
        cluster = _cluster_pids(pgid)  # with the workers the build ran on
    finally:
        _stop_cluster(pgid)
        if start.poll() is None:  # `ray start` itself hung: stopped with its group above
            start.wait(timeout=10)
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert not cluster & set(_live_processes()) and not _cluster_pids(pgid)
