"""Fidelity of `HubServer` with the real `huggingface_hub` / `datasets` clients.

Client code runs unpatched: in subprocesses with `HF_ENDPOINT` set (`hub_env.run`), or in-process
with the module constants monkeypatched by `hub_env`.
"""
from __future__ import annotations

import hashlib
import json
import os

import pytest

from tests.hub_fixtures import hub, hub_env  # noqa: F401  (pytest fixtures)

# huggingface_hub's LFS PUTs pass a file object as `data=`, which httpx2 deprecates
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")

REPO = "zoo/phases"
README = """---
configs:
- config_name: default
  data_files:
  - split: train
    path: data/*.parquet
---
# Phases

A tiny test zoo.
"""
ROWS = {"cell": [0, 1, 2, 3], "phase": ["ordered", "ordered", "glassy", "chaotic"], "loss": [0.1, 0.2, 0.7, 1.5]}


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _last_json(stdout: str):
    return json.loads(stdout.strip().splitlines()[-1])


UPLOAD = """
import json, sys
from huggingface_hub import HfApi
api = HfApi()
if sys.argv[2] == "create":
    api.create_repo("zoo/phases", repo_type="dataset")
info = api.upload_folder(folder_path=sys.argv[1], repo_id="zoo/phases", repo_type="dataset")
print(json.dumps({"oid": info.oid, "url": info.commit_url}))
"""


@pytest.fixture(scope="module")
def phases_folder(tmp_path_factory):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path_factory.mktemp("phases-upload")
    (folder / "README.md").write_text(README)
    (folder / "data").mkdir()
    pq.write_table(pa.table(ROWS), folder / "data" / "train-00000-of-00001.parquet")
    (folder / "weights.bin").write_bytes(os.urandom(11 * 1024 * 1024 + 17))
    return folder


@pytest.fixture(scope="module")
def phases_repo(hub, phases_folder, tmp_path_factory):
    """`zoo/phases` created and uploaded once (in a client subprocess); the request log of that upload."""
    from tests.hub_fixtures import HubEnv

    env = HubEnv(hub, tmp_path_factory.mktemp("hf-home-upload"))
    hub.clear_log()
    out = _last_json(env.run(UPLOAD, str(phases_folder), "create").stdout)
    return {"commit": out["oid"], "log": list(hub.request_log), "folder": phases_folder}


def test_upload_folder_goes_through_lfs_and_lists_downloads(hub, hub_env, phases_repo, phases_folder):
    big = (phases_folder / "weights.bin").read_bytes()
    log = phases_repo["log"]
    assert ("POST", "/api/repos/create") in log
    assert ("POST", "/api/datasets/zoo/phases/preupload/main") in log
    assert ("POST", "/datasets/zoo/phases.git/info/lfs/objects/batch") in log
    assert ("PUT", f"/_lfs/datasets/zoo/phases/{_sha256(big)}") in log
    assert ("POST", "/api/datasets/zoo/phases/commit/main") in log
    assert hub.foreign_requests == [] and hub.unhandled == []

    # server side: the big file and the parquet file are LFS objects, README is a regular blob
    files = hub.files(REPO)
    assert files["weights.bin"]["lfs"] == _sha256(big)
    assert files["data/train-00000-of-00001.parquet"]["lfs"] is not None  # *.parquet in .gitattributes
    assert files["README.md"]["lfs"] is None
    assert hub.head(REPO) == phases_repo["commit"]

    code = """
    import hashlib, json
    from huggingface_hub import HfApi, hf_hub_download
    api = HfApi()
    tree = [
        {"path": e.path, "size": getattr(e, "size", None), "lfs": bool(getattr(e, "lfs", None)), "type": type(e).__name__}
        for e in api.list_repo_tree("zoo/phases", repo_type="dataset", recursive=True)
    ]
    path = hf_hub_download("zoo/phases", "weights.bin", repo_type="dataset")
    readme = hf_hub_download("zoo/phases", "README.md", repo_type="dataset")
    infos = api.get_paths_info("zoo/phases", ["weights.bin", "data", "missing.txt"], repo_type="dataset", expand=True)
    info = api.dataset_info("zoo/phases", files_metadata=True)
    print(json.dumps({
        "tree": tree,
        "sha256": hashlib.sha256(open(path, "rb").read()).hexdigest(),
        "readme": open(readme).read(),
        "paths_info": [[type(i).__name__, i.path, getattr(i, "size", None), i.last_commit.oid if i.last_commit else None] for i in infos],
        "sha": info.sha,
        "siblings": sorted(s.rfilename for s in info.siblings),
        "card_configs": info.card_data.to_dict().get("configs"),
    }))
    """
    hub.clear_log()
    out = _last_json(hub_env.run(code).stdout)
    tree = {e["path"]: e for e in out["tree"]}
    assert set(tree) == {".gitattributes", "README.md", "data", "data/train-00000-of-00001.parquet", "weights.bin"}
    assert tree["data"]["type"] == "RepoFolder"
    assert tree["weights.bin"] == {"path": "weights.bin", "size": len(big), "lfs": True, "type": "RepoFile"}
    parquet_size = (phases_folder / "data" / "train-00000-of-00001.parquet").stat().st_size
    assert tree["data/train-00000-of-00001.parquet"]["size"] == parquet_size
    assert out["sha256"] == _sha256(big)
    assert out["readme"] == README
    assert out["paths_info"] == [
        ["RepoFile", "weights.bin", len(big), phases_repo["commit"]],
        ["RepoFolder", "data", None, phases_repo["commit"]],
    ]
    assert out["sha"] == phases_repo["commit"]
    assert out["siblings"] == sorted(tree[p]["path"] for p in tree if tree[p]["type"] == "RepoFile")
    assert out["card_configs"][0]["data_files"][0]["path"] == "data/*.parquet"
    assert ("HEAD", "/datasets/zoo/phases/resolve/main/weights.bin") in hub.request_log
    assert hub.unhandled == [] and hub.foreign_requests == []


def test_rerun_upload_sends_no_lfs_object_again(hub, hub_env, phases_repo):
    hub.clear_log()
    out = _last_json(hub_env.run(UPLOAD, str(phases_repo["folder"]), "again").stdout)
    assert hub.lfs_uploads() == []  # no PUT: preupload reported the remote oids, nothing changed
    # huggingface_hub skips the empty commit and answers the current head
    assert hub.calls("POST", r"/commit/") == []
    assert out["oid"] == hub.head(REPO) == phases_repo["commit"]


def test_interrupted_upload_resumes_without_resending(hub, hub_env, tmp_path):
    folder = tmp_path / "more"
    folder.mkdir()
    blob = b"\0" + os.urandom(300_000)  # binary: LFS
    (folder / "extra.bin").write_bytes(blob)
    code = """
    import json, sys
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError
    try:
        info = HfApi().upload_folder(folder_path=sys.argv[1], path_in_repo="more", repo_id="zoo/phases", repo_type="dataset")
        print(json.dumps({"oid": info.oid}))
    except HfHubHTTPError as e:
        print(json.dumps({"error": e.response.status_code}))
    """
    hub.clear_log()
    hub.fail("POST", r"/api/datasets/zoo/phases/commit/", status=503)  # the commit is lost, the LFS upload is not
    assert _last_json(hub_env.run(code, str(folder)).stdout) == {"error": 503}
    assert hub.lfs_uploads() == [f"/_lfs/datasets/zoo/phases/{_sha256(blob)}"]

    hub.clear_log()
    out = _last_json(hub_env.run(code, str(folder)).stdout)
    assert hub.calls("POST", r"\.git/info/lfs/objects/batch$")  # asked...
    assert hub.lfs_uploads() == []  # ...and was told the object is already there
    assert out["oid"] == hub.head(REPO)
    assert hub.read(REPO, "more/extra.bin") == blob


def test_load_dataset_fresh_process_then_offline(hub, hub_env, phases_repo):
    code = """
    import json, datasets
    ds = datasets.load_dataset("zoo/phases", split="train")
    print(json.dumps(ds.to_dict()))
    """
    hub.clear_log()
    assert _last_json(hub_env.run(code).stdout) == ROWS
    assert hub.calls("GET", r"/resolve/[0-9a-f]{40}/data/train-00000-of-00001\.parquet$")
    assert hub.unhandled == []
    # only the dataset-viewer lookup tried another host, and it was answered by the proxy trap
    assert all("datasets-server." in target for _, target in hub.foreign_requests), hub.foreign_requests

    hub.clear_log()
    assert _last_json(hub_env.run(code, env={"HF_HUB_OFFLINE": "1"}).stdout) == ROWS
    assert hub.request_log == [] and hub.foreign_requests == []


def test_client_errors(hub, hub_env, phases_repo, tmp_path):
    code = """
    import json, os
    import huggingface_hub.errors as E
    from huggingface_hub import HfApi, hf_hub_download

    def kind(fn):
        try:
            fn()
        except Exception as e:
            status = getattr(getattr(e, "response", None), "status_code", None)
            return [type(e).__name__, status]
        return ["ok", None]

    out = {
        "repo": kind(lambda: hf_hub_download("zoo/nope", "README.md", repo_type="dataset")),
        "revision": kind(lambda: hf_hub_download("zoo/phases", "README.md", repo_type="dataset", revision="v9")),
        "entry": kind(lambda: hf_hub_download("zoo/phases", "nope.txt", repo_type="dataset")),
        "info_repo": kind(lambda: HfApi().dataset_info("zoo/nope")),
        "info_revision": kind(lambda: HfApi().dataset_info("zoo/phases", revision="v9")),
        "exists": kind(lambda: HfApi().create_repo("zoo/phases", repo_type="dataset")),
        "exist_ok": kind(lambda: HfApi().create_repo("zoo/phases", repo_type="dataset", exist_ok=True)),
    }
    del os.environ["HF_TOKEN"]
    out["upload_anonymous"] = kind(lambda: HfApi().upload_file(
        path_or_fileobj=b"x", path_in_repo="x.txt", repo_id="zoo/phases", repo_type="dataset"))
    out["create_anonymous"] = kind(lambda: HfApi().create_repo("zoo/other", repo_type="dataset"))
    out["read_anonymous"] = kind(lambda: hf_hub_download("zoo/phases", "README.md", repo_type="dataset"))
    print(json.dumps(out))
    """
    out = _last_json(hub_env.run(code).stdout)
    assert out["repo"] == ["RepositoryNotFoundError", 404]
    assert out["revision"] == ["RevisionNotFoundError", 404]
    assert out["entry"] == ["RemoteEntryNotFoundError", 404]
    assert out["info_repo"] == ["RepositoryNotFoundError", 404]
    assert out["info_revision"] == ["RevisionNotFoundError", 404]
    assert out["exists"] == ["HfHubHTTPError", 409]
    assert out["exist_ok"] == ["ok", None]
    assert out["upload_anonymous"] == ["HfHubHTTPError", 401]
    assert out["create_anonymous"] == ["HfHubHTTPError", 401]
    assert out["read_anonymous"] == ["ok", None]
    assert not hub.repo_exists("zoo/other")


def test_stopped_server_refuses_connections(hub, hub_env, monkeypatch):
    """In-process: `hub_env` patched the constants, so no endpoint is passed explicitly."""
    import httpx2
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError
    from huggingface_hub.utils import _http

    assert HfApi().dataset_info(REPO).sha == hub.head(REPO)
    cached = hf_hub_download(REPO, "README.md", repo_type="dataset")
    hub.stop()
    try:
        with pytest.raises(httpx2.ConnectError):
            HfApi().dataset_info(REPO)
        # a file already in the cache is served from it when the Hub cannot be reached
        assert hf_hub_download(REPO, "README.md", repo_type="dataset") == cached
        # otherwise hf_hub_download retries the HEAD with backoff (1+2+4+8+8 s: skip the sleeping), then gives up
        sleeps = []
        with monkeypatch.context() as patch:
            patch.setattr(_http.time, "sleep", sleeps.append)
            with pytest.raises(LocalEntryNotFoundError) as excinfo:
                hf_hub_download(REPO, "weights.bin", repo_type="dataset")
        assert isinstance(excinfo.value.__cause__, httpx2.ConnectError)
        assert sleeps == [1, 2, 4, 8, 8]
    finally:
        hub.start()
    assert hub.running and hub.url == hub_env.endpoint  # same port, serving again
    assert HfApi().dataset_info(REPO).sha == hub.head(REPO)


def test_two_commits_and_download_at_first_commit(hub, hub_env):
    """In-process, through the patched constants."""
    from huggingface_hub import HfApi, hf_hub_download

    api = HfApi()
    api.create_repo("zoo/history", repo_type="dataset")
    c1 = api.upload_file(path_or_fileobj=b"version 1\n", path_in_repo="notes.txt", repo_id="zoo/history", repo_type="dataset")
    c2 = api.upload_file(path_or_fileobj=b"version 2\n", path_in_repo="notes.txt", repo_id="zoo/history", repo_type="dataset")
    assert c1.oid != c2.oid and len(c1.oid) == len(c2.oid) == 40
    assert c2.repo_url.repo_id == "zoo/history"

    def read(revision):
        return open(hf_hub_download("zoo/history", "notes.txt", repo_type="dataset", revision=revision), "rb").read()

    assert read(c1.oid) == b"version 1\n"
    assert read(c2.oid) == read("main") == b"version 2\n"
    assert read(c1.oid[:10]) == b"version 1\n"  # abbreviated commit ids resolve too
    commits = api.list_repo_commits("zoo/history", repo_type="dataset")
    assert [c.commit_id for c in commits][:2] == [c2.oid, c1.oid]
    assert commits[-1].title == "initial commit"
    assert [f.path for f in api.list_repo_tree("zoo/history", repo_type="dataset", revision=c1.oid)] == [
        ".gitattributes",
        "notes.txt",
    ]
    api.create_tag("zoo/history", tag="v1", revision=c1.oid, repo_type="dataset")
    assert read("v1") == b"version 1\n"
    refs = api.list_repo_refs("zoo/history", repo_type="dataset")
    assert {(r.name, r.target_commit) for r in refs.branches} == {("main", c2.oid)}
    assert {(r.name, r.target_commit) for r in refs.tags} == {("v1", c1.oid)}


def test_range_reads_and_multipart_upload(hub, hub_env):
    """In-process: HfFileSystem range reads (what fsspec/parquet readers do) and the multipart transfer."""
    from huggingface_hub import HfApi, HfFileSystem

    data = b"\0" + os.urandom(200_000)
    hub.multipart_chunk_size = 64 * 1024
    hub.clear_log()
    try:
        HfApi().upload_file(path_or_fileobj=data, path_in_repo="parts.bin", repo_id=REPO, repo_type="dataset")
    finally:
        hub.multipart_chunk_size = None
    assert len(hub.lfs_uploads()) == 4  # ceil(200001 / 65536) parts
    assert hub.read(REPO, "parts.bin") == data

    fs = HfFileSystem()
    with fs.open(f"datasets/{REPO}/parts.bin", "rb", block_size=4096) as f:
        f.seek(100_000)
        assert f.read(10) == data[100_000:100_010]
        f.seek(-5, 2)
        assert f.read() == data[-5:]
    assert any(r["headers"].get("range", r["headers"].get("Range", "")).startswith("bytes=") for r in hub.requests)
    assert fs.info(f"datasets/{REPO}/parts.bin")["size"] == len(data)
    assert sorted(fs.ls(f"datasets/{REPO}/data", detail=False)) == [f"datasets/{REPO}/data/train-00000-of-00001.parquet"]


def test_model_repo_branches_deletes_and_privacy(hub, hub_env, tmp_path, monkeypatch):
    """In-process: a private model repo (what a hypernetwork push looks like), a branch, deletions."""
    from huggingface_hub import HfApi, hf_hub_download, snapshot_download
    from huggingface_hub.errors import RepositoryNotFoundError

    api = HfApi()
    url = api.create_repo("zoo/hypernet", private=True)
    assert (url.repo_type, url.repo_id) == ("model", "zoo/hypernet")
    weights = os.urandom(4096)  # *.safetensors: LFS through .gitattributes
    folder = tmp_path / "hypernet"
    (folder / "ckpt").mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(weights)
    (folder / "config.json").write_text('{"width": 8}')
    (folder / "ckpt" / "a.txt").write_text("a")
    (folder / "ckpt" / "b.txt").write_text("b")
    api.upload_folder(folder_path=folder, repo_id="zoo/hypernet")
    assert hub.files("zoo/hypernet", repo_type="model")["model.safetensors"]["lfs"] == _sha256(weights)

    api.create_branch("zoo/hypernet", branch="dev")
    api.delete_file("ckpt/a.txt", repo_id="zoo/hypernet", revision="dev")
    api.delete_folder("ckpt", repo_id="zoo/hypernet")
    assert sorted(api.list_repo_files("zoo/hypernet")) == [".gitattributes", "config.json", "model.safetensors"]
    assert "ckpt/b.txt" in api.list_repo_files("zoo/hypernet", revision="dev")
    assert "ckpt/a.txt" not in api.list_repo_files("zoo/hypernet", revision="dev")

    snapshot = snapshot_download("zoo/hypernet", cache_dir=tmp_path / "snap")
    assert open(os.path.join(snapshot, "model.safetensors"), "rb").read() == weights
    info = api.model_info("zoo/hypernet", files_metadata=True)
    assert info.private is True
    assert {s.rfilename: s.size for s in info.siblings}["model.safetensors"] == len(weights)

    monkeypatch.delenv("HF_TOKEN")  # anonymous readers don't see private repos
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("zoo/hypernet", "config.json", cache_dir=tmp_path / "anon")
