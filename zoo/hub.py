"""Publish a dataset folder to the Hugging Face Hub, and read shards back from it.

`push` uploads into a dataset repository (created if missing) in one commit the client manages:
parquet and safetensors go through the large-file path, and objects already on the server are
not sent again, so re-running an interrupted push finishes it. Pushing a second zoo into the
same repository adds its config: the remote manifest and card are regenerated from the union
and the first zoo's files are left untouched. The local folder is never modified.

The token comes from the standard places (HF_TOKEN, the login cache) and is never printed.
"""
from __future__ import annotations

import contextlib
import json
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from zoo import card, store
from zoo.errors import ZooError


def _endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


@contextlib.contextmanager
def hub_errors(repo_id: str, revision: str | None):
    """Turn client exceptions into one-line ZooErrors (exit code 2); others pass through."""
    try:
        yield
    except Exception as e:
        msg = _explain(e, repo_id, revision)
        if msg is None:
            raise
        raise ZooError(msg) from None


def _explain(e: Exception, repo_id: str, revision: str | None) -> str | None:
    from huggingface_hub.errors import (EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    where = _endpoint()
    if isinstance(e, RevisionNotFoundError):
        return f"revision {revision!r} not found in dataset repo {repo_id} on {where}"
    if isinstance(e, RepositoryNotFoundError) or type(e).__name__ == "DatasetNotFoundError":
        if _is_network_error(e):
            return f"cannot reach the Hub at {where}; check the network or HF_ENDPOINT"
        return f"dataset repo {repo_id} not found on {where} (or the token has no access to it)"
    if isinstance(e, EntryNotFoundError):
        return f"{repo_id}: file not found ({str(e).splitlines()[0]})"
    if isinstance(e, LocalEntryNotFoundError):
        return f"{repo_id}: not in the local cache and the Hub at {where} cannot be reached (offline?)"
    if isinstance(e, HfHubHTTPError):
        status = getattr(getattr(e, "response", None), "status_code", None)
        if status == 401:
            return f"{where} rejected the token (401); check HF_TOKEN or `hf auth login`"
        return f"{repo_id}: the Hub answered {status}: {str(e).splitlines()[0]}"
    if _is_network_error(e):
        return f"cannot reach the Hub at {where} ({type(e).__name__}); check the network or HF_ENDPOINT"
    return None


def _is_network_error(e: BaseException) -> bool:
    """Connection refused / timed out, from the HTTP client huggingface_hub uses (its transport
    errors are named *ConnectError, *TimeoutException, ... whatever the package), or the OS."""
    while e is not None:
        if isinstance(e, ConnectionError | TimeoutError):
            return True
        names = {c.__name__ for c in type(e).__mro__}
        if names & {"TransportError", "ConnectError", "TimeoutException", "NetworkError"}:
            return True
        e = e.__cause__ or e.__context__
    return False


def _remote_manifest(api, repo_id: str, revision: str | None) -> dict | None:
    from huggingface_hub.errors import EntryNotFoundError

    try:
        path = api.hf_hub_download(repo_id, "manifest.json", repo_type="dataset", revision=revision)
    except EntryNotFoundError:
        return None
    m = json.loads(Path(path).read_text())
    if m.get("format") != store.FORMAT:
        raise ZooError(f"{repo_id}: holds a manifest.json of format {m.get('format')!r}, not {store.FORMAT!r}; "
                       "push to another repo")
    return m


def _stage_parquet(src: Path, dst: Path, repo_id: str, revision: str) -> None:
    """Copy of a models file whose rows say where they were published (repo_id, revision)."""
    t = pq.read_table(src)
    n = t.num_rows
    for col, value in (("repo_id", repo_id), ("revision", revision)):
        t = t.set_column(t.schema.get_field_index(col), col, pa.array([value] * n, type=pa.string()))
    dst.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(t, dst)


def push(root: str | Path, repo_id: str, *, private: bool = False, message: str | None = None,
         revision: str | None = None, token: str | None = None) -> dict:
    """Upload the zoos of `root` into the dataset repo `repo_id`; returns the pushed manifest."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, get_token

    root = Path(root)
    problems = store.verify(root)
    if problems:
        raise ZooError(f"{root}: does not match its manifest ({problems[0]}); rebuild or fix before pushing")
    token = token or get_token()
    if not token:
        raise ZooError("no Hugging Face token: set HF_TOKEN or log in with `hf auth login`")
    local = store.read_manifest(root)
    api = HfApi(token=token)
    branch = revision or "main"
    with hub_errors(repo_id, revision):
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        remote = _remote_manifest(api, repo_id, revision) or {"format": store.FORMAT, "zoos": {}, "files": {}}
        with tempfile.TemporaryDirectory(prefix="zoo-push-") as tmp:
            stage = Path(tmp)
            merged = {**remote, "format": store.FORMAT, "collection": remote.get("collection") or local.get("collection"),
                      "zoos": {**remote.get("zoos", {}), **local["zoos"]}}
            pushed = set(local["zoos"])
            # the pushed zoos' files replace theirs; every other zoo's files stay as they are
            def of_pushed(k: str) -> bool:
                return any(f"/{z}/" in k or Path(k).name.startswith(f"{z}-") for z in pushed)

            files = {k: v for k, v in remote.get("files", {}).items() if not of_pushed(k)}
            stale = sorted(k for k in remote.get("files", {}) if of_pushed(k) and k not in local["files"])
            figs = [f for f in remote.get("figures", []) if not any(Path(f).name.startswith(f"{z}-") for z in pushed)]
            merged["figures"] = sorted(figs + local.get("figures", []))
            studies = {z: v for z, v in remote.get("studies", {}).items() if z not in pushed}
            studies.update({z: v for z, v in local.get("studies", {}).items() if z in pushed})
            merged["studies"] = dict(sorted(studies.items()))
            if not studies:
                del merged["studies"]
            ops = []
            for rel in local["files"]:
                if rel == "README.md":
                    continue
                src = root / rel
                if rel.startswith("data/") and Path(rel).name.startswith("models-"):
                    src = stage / rel
                    _stage_parquet(root / rel, src, repo_id, branch)
                files[rel] = {"sha256": store.sha256_file(src), "bytes": src.stat().st_size}
                ops.append(CommitOperationAdd(path_in_repo=rel, path_or_fileobj=str(src)))
            (stage / "README.md").write_text(card.render(merged, repo_id))
            files["README.md"] = {"sha256": store.sha256_file(stage / "README.md"),
                                  "bytes": (stage / "README.md").stat().st_size}
            merged["files"] = dict(sorted(files.items()))
            merged["versions"] = store.versions()
            if "machine" in local:  # where the pushed zoos were built (a remote-only zoo keeps no block of its own)
                merged["machine"] = local["machine"]
            (stage / "manifest.json").write_text(json.dumps(merged, indent=2, sort_keys=True) + "\n")
            ops += [CommitOperationAdd(path_in_repo=n, path_or_fileobj=str(stage / n)) for n in ("README.md", "manifest.json")]
            ops += [CommitOperationDelete(path_in_repo=k) for k in stale]  # a rebuilt zoo's files that are gone
            api.create_commit(repo_id, ops, repo_type="dataset", revision=revision,
                              commit_message=message or f"zoo push: {', '.join(sorted(pushed))}")
    return merged


def download_shard(repo_id: str, shard: str, revision: str | None = None) -> Path:
    """Local path of a shard of a Hub dataset (downloaded once, then from the cache)."""
    from huggingface_hub import hf_hub_download

    with hub_errors(repo_id, revision):
        return Path(hf_hub_download(repo_id, shard, repo_type="dataset", revision=revision or None))


def open_zoo(repo_or_dir: str, zoo: str, *, revision: str | None = None, split: str = "train"):
    """A zoo's rows as a `datasets.Dataset` with the flat weights as torch tensors."""
    import datasets

    local = Path(repo_or_dir).exists()
    ctx = contextlib.nullcontext() if local else hub_errors(repo_or_dir, revision)
    with ctx:
        try:
            ds = datasets.load_dataset(repo_or_dir, zoo, split=split, revision=revision)
        except ValueError as e:
            if "BuilderConfig" in str(e) or "config" in str(e).lower():
                raise ZooError(f"{repo_or_dir}: no zoo {zoo!r} ({str(e).splitlines()[0]})") from None
            raise
    return ds.with_format("torch", columns=["weights"], output_all_columns=True)
