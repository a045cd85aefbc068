"""Publish and load through a Hub-protocol server on 127.0.0.1, with the real clients:
`zoo push` -> `load_dataset("zoo/phases", ...)` -> `zoo.load_model(row)`, collections, resume,
offline cache, and one clear line (exit 2) for every error, with nothing written locally."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.hub_fixtures import hub, hub_env  # noqa: F401  (pytest fixtures)
from tests.conftest import tiny_spec, write_spec
from zoo import store

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")]

REPO = "zoo/phases"
CLI = "import sys; from pipelines.zoo_cli import main; sys.exit(main(sys.argv[1:]))"
METRICS = {"hessian": {"batches": 1, "batch_size": 128, "max_iter": 10, "probes": 10},
           "connectivity": {"epochs": 1, "points": 5}}


def _build(tmp: Path, name: str, widths: list[int]) -> Path:
    spec = tiny_spec(name, axes={"temperature": {"param": "batch_size", "values": [128]},
                                 "load": {"param": "width", "values": widths}},
                     training={"epochs": 2}, checkpoints=[0, 2], metrics=METRICS)
    out = tmp / name
    r = subprocess.run([sys.executable, "-m", "pipelines.zoo_cli", "build", "--config", str(write_spec(tmp / f"{name}.yaml", spec)),
                        "--out", str(out), "--no-ray", "--quiet"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture(scope="module")
def zoos(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("zoos")
    return {"alpha": _build(tmp, "alpha", [4, 8]), "beta": _build(tmp, "beta", [6])}


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): store.sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}


def push(hub_env, root: Path, *extra: str, env=None) -> subprocess.CompletedProcess:
    return hub_env.run(CLI, "push", str(root), "--repo", REPO, *extra, env=env, check=False)


LOAD = """
import json, sys
from datasets import load_dataset
import zoo
ds = load_dataset(sys.argv[1], sys.argv[2], split="train")
out = []
for row in ds:
    model = zoo.load_model(row)
    ev = zoo.evaluate(model, row["task"])
    out.append({"model_id": row["model_id"], "epoch": row["epoch"], "test_acc": row["test_acc"],
                "reproduced": ev["test_acc"], "phase": row["phase"], "repo_id": row["repo_id"],
                "weights": sum(row["weights"])})
row = dict(ds[len(ds) - 1]); row["weights"] = None          # force the shard path: fetched from the repo
w = zoo.load_model(row).state_dict()
ref = zoo.load_model(ds[len(ds) - 1]).state_dict()
print(json.dumps({"rows": out, "shard_equal": all(w[k].equal(ref[k]) for k in w)}))
"""


def _local_rows(root: Path, name: str) -> list[tuple]:
    t = store.read_rows(root, name).to_pylist()
    return sorted((r["model_id"], r["epoch"], r["test_acc"], r["phase"]) for r in t)


def test_push_then_load_in_a_fresh_process(hub, hub_env, zoos):
    before = snapshot(zoos["alpha"])
    r = push(hub_env, zoos["alpha"], "--message", "first zoo")
    assert r.returncode == 0, r.stderr
    assert "pushed alpha to zoo/phases" in r.stdout
    assert snapshot(zoos["alpha"]) == before  # the local folder is never modified
    assert hub.lfs_uploads(), "parquet and safetensors must go through the large-file path"

    r = hub_env.run(LOAD, REPO, "alpha")
    res = json.loads(r.stdout.strip().splitlines()[-1])
    got = sorted((x["model_id"], x["epoch"], x["test_acc"], x["phase"]) for x in res["rows"])
    assert got == _local_rows(zoos["alpha"], "alpha")
    assert all(x["reproduced"] == x["test_acc"] for x in res["rows"])
    assert {x["repo_id"] for x in res["rows"]} == {REPO}
    assert res["shard_equal"]

    # a snapshot of the repo verifies against the pushed manifest
    r = hub_env.run("""
import sys
from huggingface_hub import snapshot_download
from zoo import store
p = snapshot_download(sys.argv[1], repo_type="dataset")
print(store.verify(__import__("pathlib").Path(p)))
""", REPO)
    assert r.stdout.strip().splitlines()[-1] == "[]"

    # offline after the first load: from the cache, no request
    hub.clear_log()
    r = hub_env.run(LOAD, REPO, "alpha", env={"HF_HUB_OFFLINE": "1"})
    assert len(json.loads(r.stdout.strip().splitlines()[-1])["rows"]) == len(res["rows"])
    assert hub.calls() == []


def test_second_zoo_joins_the_collection(hub, hub_env, zoos):
    assert push(hub_env, zoos["alpha"]).returncode == 0
    files_before = {k: v for k, v in hub.files(REPO).items() if "alpha" in k}
    r = push(hub_env, zoos["beta"])
    assert r.returncode == 0, r.stderr
    assert "repo now holds alpha, beta" in r.stdout
    r = hub_env.run("""
import json, sys
from datasets import load_dataset
from huggingface_hub import hf_hub_download
a = load_dataset(sys.argv[1], "alpha", split="train")
b = load_dataset(sys.argv[1], "beta", split="train")
cells = load_dataset(sys.argv[1], "beta_cells", split="train")
m = json.load(open(hf_hub_download(sys.argv[1], "manifest.json", repo_type="dataset")))
card = open(hf_hub_download(sys.argv[1], "README.md", repo_type="dataset")).read()
print(json.dumps({"a": len(a), "b": len(b), "cells": len(cells), "zoos": sorted(m["zoos"]),
                  "alpha_in_card": 'config_name: alpha' in card and 'config_name: beta' in card}))
""", REPO)
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res == {"a": 8, "b": 4, "cells": 1, "zoos": ["alpha", "beta"], "alpha_in_card": True}
    after = {k: v for k, v in hub.files(REPO).items() if "alpha" in k}
    assert after == files_before and files_before  # the first zoo's files are untouched


def test_repush_removes_files_a_zoo_no_longer_has(hub, hub_env, zoos, tmp_path):
    import shutil

    assert push(hub_env, zoos["alpha"]).returncode == 0
    copy = tmp_path / "alpha"
    shutil.copytree(zoos["alpha"], copy)
    gone = "figures/alpha-learning-curves.png"
    (copy / gone).unlink()
    m = store.read_manifest(copy)
    m["figures"] = [f for f in m["figures"] if f != gone]
    store.refresh_manifest(copy, m)
    assert store.verify(copy) == []
    assert gone in hub.files(REPO)
    r = push(hub_env, copy)
    assert r.returncode == 0, r.stderr
    assert gone not in hub.files(REPO) and "figures/alpha-phases.png" in hub.files(REPO)
    pushed = json.loads(hub.read(REPO, "manifest.json"))
    assert gone not in pushed["files"] and gone not in pushed["figures"]


def test_interrupted_push_resumes_without_resending(hub, hub_env, tmp_path, zoos):
    repo = "zoo/resume"
    hub.fail("POST", r"/commit/", status=503, times=10)  # the commit keeps failing: the push is cut off
    r = hub_env.run(CLI, "push", str(zoos["beta"]), "--repo", repo, check=False)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and r.stderr.startswith("zoo: error:")
    sent = set(hub.lfs_uploads())
    assert sent, "the large files were uploaded before the commit failed"
    hub.clear_failures()
    hub.clear_log()
    r = hub_env.run(CLI, "push", str(zoos["beta"]), "--repo", repo, check=False)
    assert r.returncode == 0, r.stderr
    assert not (set(hub.lfs_uploads()) & sent), "objects already on the server were sent again"


def test_errors_are_one_line_and_write_nothing(hub, hub_env, zoos, tmp_path):
    before = snapshot(zoos["alpha"])

    def one_line(r):
        assert r.returncode == 2, (r.stdout, r.stderr)
        err = r.stderr.strip()
        assert err.startswith("zoo: error:") and "\n" not in err and "Traceback" not in err
        return err

    err = one_line(push(hub_env, zoos["alpha"], env={"HF_TOKEN": None}))
    assert "no Hugging Face token" in err and "test-token" not in err
    err = one_line(push(hub_env, zoos["alpha"], "--revision", "no-such-branch"))
    assert "no-such-branch" in err
    r = hub_env.run("import zoo; zoo.open('zoo/missing', 'alpha')", check=False)
    assert "not found" in r.stderr and "zoo/missing" in r.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    r = hub_env.run(CLI, "push", str(empty), "--repo", REPO, check=False)
    assert "no manifest.json" in one_line(r)
    hub.stop()
    err = one_line(push(hub_env, zoos["alpha"]))
    assert "cannot reach the Hub" in err
    assert snapshot(zoos["alpha"]) == before
    assert not list(empty.iterdir())


def test_private_push_is_invisible_without_a_token(hub, hub_env, zoos, tmp_path):
    repo = "zoo/private"
    r = hub_env.run(CLI, "push", str(zoos["beta"]), "--repo", repo, "--private", check=False)
    assert r.returncode == 0, r.stderr
    code = "import sys; import zoo; print(len(zoo.open(sys.argv[1], 'beta')))"
    assert hub_env.run(code, repo).stdout.strip().splitlines()[-1] == "4"
    fresh = {"HF_HOME": str(tmp_path / "anon"), "HF_HUB_CACHE": str(tmp_path / "anon" / "hub"),
             "HF_DATASETS_CACHE": str(tmp_path / "anon" / "datasets")}  # no cached copy to fall back on
    r = hub_env.run(code, repo, env={"HF_TOKEN": None, **fresh}, check=False)
    assert r.returncode != 0 and "not found" in r.stderr and "zoo/private" in r.stderr
