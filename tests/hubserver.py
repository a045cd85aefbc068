"""A Hugging Face Hub protocol server for tests.

`HubServer` stores repositories on disk and answers the HTTP endpoints that the *real*
``huggingface_hub`` and ``datasets`` clients call, so tests can point ``HF_ENDPOINT`` at
``http://127.0.0.1:<port>`` and exercise the clients' normal code paths, unpatched.

It is a test fixture, not a Hub: one implicit user, no permissions beyond "writes need a
``Bearer`` token", no pull requests, no Xet (the server never advertises it: clients must run with
``HF_HUB_DISABLE_XET=1`` so that large files go through the LFS batch protocol).

Implemented endpoints (``{t}`` is ``models``/``datasets``/``spaces``, ``{p}`` the URL prefix of the
repo type: ``""`` for models, ``datasets/`` for datasets, ...)::

    GET    /api/agent-harnesses                      empty agent registry (fetched by every client)
    GET    /api/whoami-v2                            the test user (401 without token)
    POST   /api/validate-yaml                        README front-matter check (400 on bad YAML)
    POST   /api/repos/create                         409 if the repo exists
    DELETE /api/repos/delete
    GET    /api/{t}/{ns}/{name}[/revision/{rev}]     repo info (sha, siblings, cardData; ?blobs=true)
    GET    /api/{t}/{ns}/{name}/tree/{rev}[/{path}]  ?recursive=&expand=&cursor=&limit= (Link paging)
    POST   /api/{t}/{ns}/{name}/paths-info/{rev}     form or JSON: paths=[...], expand=
    POST   /api/{t}/{ns}/{name}/preupload/{rev}      regular vs lfs decision + remote oid
    POST   /api/{t}/{ns}/{name}/commit/{rev}         NDJSON: header, file, lfsFile, deletedFile, deletedFolder
    GET    /api/{t}/{ns}/{name}/refs                 branches and tags
    GET    /api/{t}/{ns}/{name}/commits/{rev}        history, newest first
    POST   /api/{t}/{ns}/{name}/branch/{branch}      create a branch (json: startingPoint); DELETE deletes
    POST   /api/{t}/{ns}/{name}/tag/{rev}            create a tag (json: tag, message); DELETE /tag/{tag}
    POST   /{p}{ns}/{name}.git/info/lfs/objects/batch    LFS batch API (upload: basic or multipart; download)
    POST   /{p}{ns}/{name}.git/info/lfs/objects/verify   LFS verify
    PUT    /_lfs/{t}/{ns}/{name}/{oid}?sig=          LFS basic upload (signed URL, no auth header)
    PUT    /_lfs/{t}/{ns}/{name}/{oid}/{part}?sig=   LFS multipart part upload (answers an ETag)
    POST   /_lfs/{t}/{ns}/{name}/{oid}?sig=          LFS multipart completion
    GET    /_lfs/{t}/{ns}/{name}/{oid}?sig=          LFS download action
    HEAD/GET /{p}{ns}/{name}/resolve/{rev}/{path}    file content: X-Repo-Commit, ETag, X-Linked-Etag,
                                                     X-Linked-Size, Content-Length, Accept-Ranges, Range

Errors carry the ``X-Error-Code`` header the client maps to its exceptions (``RepoNotFound``,
``RevisionNotFound``, ``EntryNotFound``) and an ``X-Error-Message``. Writes without an
``Authorization: Bearer`` header are answered 401 (``X-Error-Code`` unset: the client then raises a
plain ``HfHubHTTPError`` with status 401 on an ``http://`` endpoint).

Storage under ``root``::

    repos/{t}/{ns}/{name}/state.json     refs, commits (each with its full tree), settings
    repos/{t}/{ns}/{name}/blobs/{sha1}   regular file contents, by git blob id
    repos/{t}/{ns}/{name}/lfs/{sha256}   LFS objects (scoped to the repo, like on the Hub)

Commit ids are sha1 digests of (parents, tree, message, date, sequence number). A server restarted on
the same ``root`` serves the same repos.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import socket
import sys
import tempfile
import threading
import time
import traceback
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import parse_qs, quote, unquote

__all__ = ["HubServer", "HubError", "DEFAULT_GITATTRIBUTES"]

REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space", "kernels": "kernel"}
URL_PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/", "kernel": "kernels/"}
LFS_CONTENT_TYPE = "application/vnd.git-lfs+json"
USER = "test-user"
COPY_CHUNK = 1 << 20

# The `.gitattributes` the Hub writes in the initial commit of a new repo (abridged).
DEFAULT_GITATTRIBUTES = "".join(
    f"{pattern} filter=lfs diff=lfs merge=lfs -text\n"
    for pattern in (
        "*.7z", "*.arrow", "*.bin", "*.bz2", "*.ckpt", "*.ftz", "*.gz", "*.h5", "*.joblib", "*.lfs.*",
        "*.lz4", "*.mds", "*.mlmodel", "*.model", "*.msgpack", "*.npy", "*.npz", "*.onnx", "*.ot",
        "*.parquet", "*.pb", "*.pickle", "*.pkl", "*.pt", "*.pth", "*.rar", "*.safetensors",
        "saved_model/**/*", "*.tar.*", "*.tar", "*.tflite", "*.tgz", "*.wasm", "*.xz", "*.zip", "*.zst",
        "*tfevents*",
    )
)


class HubError(Exception):
    """An HTTP error answer: status, optional `X-Error-Code`, message."""

    def __init__(
        self, status: int, message: str, code: str | None = None, headers: dict | None = None, body: dict | None = None
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers or {}
        self.body = body or {}


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def git_blob_oid(data: bytes) -> str:
    """The git blob id (sha1 of `blob <size>\\0<data>`): what the Hub calls a regular file's oid."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _gitattributes_regex(pattern: str) -> re.Pattern:
    """Translate a .gitattributes pattern to a regex on the repo-relative path."""
    anchored = "/" in pattern.rstrip("/")
    pattern = pattern.lstrip("/")
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("/**", i) and i + 3 == len(pattern):
            out, i = out + "/.*", i + 3
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(("" if anchored else "(?:.*/)?") + out + r"\Z")


def lfs_patterns(gitattributes: str) -> list[re.Pattern]:
    patterns = []
    for line in gitattributes.splitlines():
        parts = line.split()
        if len(parts) >= 2 and not parts[0].startswith("#") and "filter=lfs" in parts[1:]:
            patterns.append(_gitattributes_regex(parts[0]))
    return patterns


class _Repo:
    """One repository: settings, refs and commits (persisted in state.json) + content stores."""

    def __init__(self, directory: Path, repo_type: str, repo_id: str, state: dict):
        self.dir = directory
        self.repo_type = repo_type
        self.repo_id = repo_id
        self.state = state
        self.lock = threading.RLock()

    # -- persistence ------------------------------------------------------------------------
    @classmethod
    def load(cls, directory: Path, repo_type: str, repo_id: str) -> "_Repo | None":
        path = directory / "state.json"
        if not path.is_file():
            return None
        return cls(directory, repo_type, repo_id, json.loads(path.read_text()))

    def save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f"state.json.{uuid.uuid4().hex}.tmp"
        tmp.write_text(json.dumps(self.state))
        os.replace(tmp, self.dir / "state.json")

    # -- content stores ---------------------------------------------------------------------
    def blob_path(self, oid: str) -> Path:
        return self.dir / "blobs" / oid

    def lfs_path(self, sha256: str) -> Path:
        return self.dir / "lfs" / sha256

    def has_lfs(self, sha256: str) -> bool:
        return re.fullmatch(r"[0-9a-f]{64}", sha256 or "") is not None and self.lfs_path(sha256).is_file()

    def store_blob(self, data: bytes) -> str:
        oid = git_blob_oid(data)
        path = self.blob_path(oid)
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{oid}.{uuid.uuid4().hex}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        return oid

    # -- revisions --------------------------------------------------------------------------
    @property
    def commits(self) -> dict[str, dict]:
        return self.state["commits"]

    def resolve(self, revision: str) -> str:
        """A branch, tag or (possibly abbreviated, >= 7 chars) commit id -> the full commit id."""
        refs = self.state["refs"]
        if revision in refs["branches"]:
            return refs["branches"][revision]
        if revision in refs["tags"]:
            return refs["tags"][revision]
        if revision.startswith("refs/heads/") and revision[11:] in refs["branches"]:
            return refs["branches"][revision[11:]]
        if revision.startswith("refs/tags/") and revision[10:] in refs["tags"]:
            return refs["tags"][revision[10:]]
        if re.fullmatch(r"[0-9a-f]{7,40}", revision):
            matches = [cid for cid in self.commits if cid.startswith(revision)]
            if len(matches) == 1:
                return matches[0]
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def tree(self, commit_id: str) -> dict[str, dict]:
        return self.commits[commit_id]["tree"]

    def history(self, commit_id: str) -> Iterator[dict]:
        """Commits reachable from `commit_id` following first parents, newest first."""
        while commit_id is not None:
            commit = self.commits[commit_id]
            yield commit
            commit_id = commit["parents"][0] if commit["parents"] else None

    def new_commit(self, parent: str | None, tree: dict, title: str, message: str) -> str:
        date = _now()
        self.state["seq"] = self.state.get("seq", 0) + 1
        payload = json.dumps(
            {
                "parents": [parent] if parent else [],
                "tree": {path: entry["oid"] for path, entry in sorted(tree.items())},
                "title": title,
                "message": message,
                "date": date,
                "seq": self.state["seq"],
            },
            sort_keys=True,
        )
        cid = hashlib.sha1(payload.encode()).hexdigest()
        self.commits[cid] = {
            "id": cid,
            "parents": [parent] if parent else [],
            "title": title,
            "message": message,
            "date": date,
            "authors": [USER],
            "tree": tree,
        }
        return cid


def _is_true(values: list[str] | str | None) -> bool:
    if isinstance(values, list):
        values = values[-1] if values else None
    return values is not None and str(values).lower() in ("1", "true", "yes", "on")


class _Request:
    """What a route needs from the HTTP request; the body is read lazily (and can be streamed)."""

    def __init__(self, handler: "_Handler", method: str):
        self.handler = handler
        self.method = method
        raw_path, _, query = handler.path.partition("?")
        self.raw_path = raw_path
        self.query = parse_qs(query, keep_blank_values=True)
        self.segments = [unquote(s) for s in raw_path.split("/")[1:]]
        if self.segments and self.segments[-1] == "" and len(self.segments) > 1:
            self.segments = self.segments[:-1]
        self.headers = handler.headers
        self._body: bytes | None = None
        self.body_consumed = False

    def param(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name) or self.query.get(name + "[]")
        return values[-1] if values else default

    @property
    def token(self) -> str | None:
        auth = self.headers.get("Authorization") or ""
        if auth.lower().startswith("bearer ") and auth[7:].strip():
            return auth[7:].strip()
        return None

    def iter_body(self) -> Iterator[bytes]:
        if self.body_consumed:
            return
        self.body_consumed = True
        rfile = self.handler.rfile
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            while True:
                line = rfile.readline(65537)
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return
                remaining = size
                while remaining:
                    chunk = rfile.read(min(remaining, COPY_CHUNK))
                    if not chunk:
                        raise ConnectionError("client closed the connection mid-body")
                    remaining -= len(chunk)
                    yield chunk
                rfile.readline(65537)  # CRLF after the chunk
        else:
            remaining = int(self.headers.get("Content-Length") or 0)
            while remaining:
                chunk = rfile.read(min(remaining, COPY_CHUNK))
                if not chunk:
                    raise ConnectionError("client closed the connection mid-body")
                remaining -= len(chunk)
                yield chunk

    def body(self) -> bytes:
        if self._body is None:
            self._body = b"".join(self.iter_body())
        return self._body

    def json(self) -> Any:
        try:
            return json.loads(self.body() or b"null")
        except ValueError as e:
            raise HubError(400, f"Invalid JSON body: {e}") from None


class _Response:
    def __init__(
        self,
        status: int = 200,
        body: bytes | None = b"",
        headers: dict | None = None,
        file: Path | None = None,
        offset: int = 0,
        length: int = 0,
    ):
        self.status = status
        self.body = body
        self.headers = dict(headers or {})
        self.file = file
        self.offset = offset
        self.length = length


def _json(data: Any, status: int = 200, headers: dict | None = None, content_type: str = "application/json"):
    return _Response(status, json.dumps(data).encode(), {"Content-Type": content_type, **(headers or {})})


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "HubServer/1.0"
    hub: "HubServer"

    def log_message(self, format: str, *args) -> None:  # quiet: the request log is on the HubServer
        pass

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def do_CONNECT(self):  # an HTTPS request for another host, sent to us as a proxy: refuse it
        self.hub._record_foreign("CONNECT", self.path)
        self.close_connection = True
        self._send("CONNECT", _json({"error": "HubServer does not proxy to other hosts"}, 403, {"Connection": "close"}))

    def _dispatch(self, method: str) -> None:
        hub = self.hub
        if not self.path.startswith("/"):
            # Absolute-form request: a client used us as its HTTP proxy (see `HubServer.proxy_env`) for a
            # host other than the Hub. Record it and refuse: tests never reach the outside world.
            hub._record_foreign(method, self.path)
            req = _Request(self, method)
            req.raw_path = "/"
            try:
                if int(self.headers.get("Content-Length") or 0) <= 64 * COPY_CHUNK:
                    req.body()
                else:
                    self.close_connection = True
            except ConnectionError:
                self.close_connection = True
                return
            self._send(method, _json({"error": f"HubServer does not proxy to other hosts ({self.path})"}, 404))
            return
        req = _Request(self, method)
        hub._record(method, req.raw_path, req.query, self.headers)
        try:
            response = hub._injected_failure(method, req.raw_path)
            if response is None:
                response = hub._route(req)
        except HubError as e:
            response = _json({"error": e.message, **e.body}, e.status, e.headers)
            response.headers["X-Error-Message"] = e.message
            if e.code:
                response.headers["X-Error-Code"] = e.code
        except (ConnectionError, BrokenPipeError):
            self.close_connection = True
            return
        except Exception as e:  # a server bug: answer 500 and say why on stderr
            traceback.print_exc(file=sys.stderr)
            response = _json({"error": f"HubServer internal error: {type(e).__name__}: {e}"}, 500)
        if not req.body_consumed:
            length = self.headers.get("Content-Length")
            if length is not None and int(length) <= 64 * COPY_CHUNK and "chunked" not in (
                self.headers.get("Transfer-Encoding") or ""
            ).lower():
                try:
                    req.body()  # drain so the connection can be kept alive
                except ConnectionError:
                    self.close_connection = True
                    return
            else:
                self.close_connection = True
                response.headers["Connection"] = "close"
        hub._log_status(response.status)
        try:
            self._send(method, response)
        except (ConnectionError, BrokenPipeError):
            self.close_connection = True

    def _send(self, method: str, response: _Response) -> None:
        self.send_response(response.status)
        length = response.length if response.file is not None else len(response.body or b"")
        headers = {"Content-Length": str(length), **response.headers}
        for key, value in headers.items():
            self.send_header(key, str(value))
        self.end_headers()
        if method == "HEAD" or response.status in (204, 304):
            return
        if response.file is not None:
            with open(response.file, "rb") as f:
                f.seek(response.offset)
                remaining = response.length
                while remaining:
                    chunk = f.read(min(remaining, COPY_CHUNK))
                    if not chunk:
                        break
                    self.wfile.write(chunk)
                    remaining -= len(chunk)
        elif response.body:
            self.wfile.write(response.body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, handler):
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request, client_address):
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        with self.connections_lock:
            connections, self.connections = list(self.connections), set()
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                conn.close()
            except OSError:
                pass


class HubServer:
    """An on-disk Hub speaking the HTTP protocol of `huggingface_hub` (LFS transfers, no Xet).

    Args:
        root: folder holding the repositories (created if missing; a temporary one if None).
        port: port to bind on 127.0.0.1 (0: an ephemeral one, kept across `stop()`/`start()`).
        lfs_threshold: files of at least this many bytes go through LFS (the Hub's 10 MiB rule);
            files matching a `filter=lfs` pattern of the repo's `.gitattributes` or whose first 512
            bytes contain a NUL byte (binary) go through LFS too.
        multipart_chunk_size: if set, LFS objects larger than this are uploaded with the multipart
            transfer (parts of this size), otherwise with the basic transfer (one PUT).
        tokens: if set, the only tokens accepted (others get 401 "Invalid credentials"); by default
            any bearer token is accepted.

    Attributes:
        root: the storage folder.
        url / endpoint: base URL once started (`http://127.0.0.1:<port>`).
        request_log: list of `(method, path)` of every request received (path without query).
        requests: list of dicts with `method`, `path`, `query`, `headers`, `status`.
        unhandled: `(method, path)` of requests that matched no route (answered 404).
    """

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        *,
        port: int = 0,
        lfs_threshold: int = 10 * 1024 * 1024,
        multipart_chunk_size: int | None = None,
        tokens: set[str] | list[str] | None = None,
    ):
        self._tmp = None
        if root is None:
            self._tmp = tempfile.mkdtemp(prefix="hubserver-")
            root = self._tmp
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = port
        self.lfs_threshold = lfs_threshold
        self.multipart_chunk_size = multipart_chunk_size
        self.tokens = set(tokens) if tokens is not None else None
        self.request_log: list[tuple[str, str]] = []
        self.requests: list[dict] = []
        self.unhandled: list[tuple[str, str]] = []
        self.foreign_requests: list[tuple[str, str]] = []
        self._secret = secrets.token_bytes(16)
        self._repos: dict[tuple[str, str], _Repo] = {}
        self._lock = threading.RLock()
        self._log_lock = threading.Lock()
        self._local = threading.local()
        self._failures: list[dict] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.url: str | None = None

    # ------------------------------------------------------------------------ lifecycle
    def start(self) -> str:
        """Start serving (again) and return the base URL, e.g. `http://127.0.0.1:41234`."""
        if self._server is not None:
            return self.url  # type: ignore[return-value]
        handler = type("HubHandler", (_Handler,), {"hub": self})
        self._server = _Server(("127.0.0.1", self.port), handler)
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="hubserver", daemon=True
        )
        self._thread.start()
        return self.url

    def stop(self) -> None:
        """Stop serving: the port is closed (connections are refused) and open connections dropped."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        server.drop_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    @property
    def endpoint(self) -> str | None:
        return self.url

    @property
    def running(self) -> bool:
        return self._server is not None

    def __enter__(self) -> "HubServer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def __repr__(self) -> str:
        return f"HubServer(root={str(self.root)!r}, url={self.url!r}, running={self.running})"

    # ------------------------------------------------------------------------ test helpers
    def proxy_env(self) -> dict[str, str]:
        """Environment variables making a *subprocess*'s HTTP clients use this server as their proxy
        for every host but 127.0.0.1/localhost: nothing leaves the machine, not even a DNS lookup,
        and stray requests land in `foreign_requests` (answered 404, or 403 for HTTPS CONNECT).

        Needed because `datasets` derives the dataset-viewer URL from `HF_ENDPOINT` by prefixing the
        host (`http://datasets-server.127.0.0.1:<port>`), a name only DNS could answer.
        Don't set these in the test process itself: other libraries (Ray/gRPC) read them too.
        """
        proxy = self.url or ""
        no_proxy = "127.0.0.1,localhost,::1"
        return {
            "HTTP_PROXY": proxy, "http_proxy": proxy, "HTTPS_PROXY": proxy, "https_proxy": proxy,
            "ALL_PROXY": proxy, "all_proxy": proxy, "NO_PROXY": no_proxy, "no_proxy": no_proxy,
        }

    def client_env(self, token: str | None = "test-token", **extra: str) -> dict[str, str]:
        """The environment variables a client process needs to talk to this server (see module doc)."""
        env = {
            "HF_ENDPOINT": self.url or "",
            "HF_HUB_DISABLE_XET": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            "HF_HUB_ETAG_TIMEOUT": "10",
            # `datasets` otherwise HEADs s3.amazonaws.com to count downloads on every Hub load.
            "HF_UPDATE_DOWNLOAD_COUNTS": "0",
            **self.proxy_env(),
        }
        if token:
            env["HF_TOKEN"] = token
        env.update(extra)
        return env

    def clear_log(self) -> None:
        with self._log_lock:
            self.request_log.clear()
            self.requests.clear()
            self.unhandled.clear()
            self.foreign_requests.clear()

    def calls(self, method: str | None = None, pattern: str | None = None) -> list[tuple[str, str]]:
        """The logged `(method, path)` whose method equals `method` and path matches regex `pattern`."""
        with self._log_lock:
            log = list(self.request_log)
        return [
            (m, p)
            for m, p in log
            if (method is None or m == method) and (pattern is None or re.search(pattern, p))
        ]

    def lfs_uploads(self) -> list[str]:
        """Paths of the LFS upload PUTs received (basic uploads and multipart parts)."""
        return [p for _, p in self.calls("PUT", r"^/_lfs/")]

    def fail(self, method: str, pattern: str, status: int = 500, times: int = 1, message: str = "injected") -> None:
        """Answer the next `times` requests `method` + path matching regex `pattern` with `status`."""
        with self._lock:
            self._failures.append(
                {"method": method, "pattern": re.compile(pattern), "status": status, "times": times, "message": message}
            )

    def clear_failures(self) -> None:
        """Drop every failure injected with `fail` that has not been used up."""
        with self._lock:
            self._failures.clear()

    def repo_exists(self, repo_id: str, repo_type: str = "dataset") -> bool:
        return self._get_repo(repo_type, repo_id, must_exist=False) is not None

    def head(self, repo_id: str, repo_type: str = "dataset", branch: str = "main") -> str:
        """Commit id at the head of `branch`."""
        repo = self._get_repo(repo_type, repo_id)
        return repo.resolve(branch)

    def files(self, repo_id: str, repo_type: str = "dataset", revision: str = "main") -> dict[str, dict]:
        """`{path: entry}` of the tree at `revision`; entries have `oid`, `size`, `lfs` (sha256 or None)."""
        repo = self._get_repo(repo_type, repo_id)
        with repo.lock:
            return json.loads(json.dumps(repo.tree(repo.resolve(revision))))

    def read(self, repo_id: str, path: str, repo_type: str = "dataset", revision: str = "main") -> bytes:
        repo = self._get_repo(repo_type, repo_id)
        with repo.lock:
            entry = repo.tree(repo.resolve(revision))[path]
        return self._content_path(repo, entry).read_bytes()

    # ------------------------------------------------------------------------ internals
    def _record(self, method: str, raw_path: str, query: dict, headers) -> None:
        with self._log_lock:
            self.request_log.append((method, unquote(raw_path)))
            self.requests.append(
                {"method": method, "path": unquote(raw_path), "query": query, "headers": dict(headers), "status": None}
            )
            self._local.index = len(self.requests) - 1

    def _record_foreign(self, method: str, target: str) -> None:
        with self._log_lock:
            self.foreign_requests.append((method, target))

    def _log_status(self, status: int) -> None:
        with self._log_lock:
            index = getattr(self._local, "index", None)
            if index is not None and index < len(self.requests):
                self.requests[index]["status"] = status

    def _injected_failure(self, method: str, raw_path: str) -> _Response | None:
        path = unquote(raw_path)
        with self._lock:
            for failure in self._failures:
                if failure["method"] == method and failure["pattern"].search(path) and failure["times"] > 0:
                    failure["times"] -= 1
                    return _json({"error": failure["message"]}, failure["status"], {"X-Error-Message": failure["message"]})
        return None

    def _sign(self, *parts: str) -> str:
        return hmac.new(self._secret, "/".join(parts).encode(), hashlib.sha256).hexdigest()[:32]

    def _check_sig(self, req: _Request, *parts: str) -> None:
        if not hmac.compare_digest(req.param("sig") or "", self._sign(*parts)):
            raise HubError(403, "Invalid or missing signature for this LFS storage URL")

    def _require_token(self, req: _Request) -> str:
        token = req.token
        if token is None:
            raise HubError(401, "You must be authenticated to perform this operation (no token provided).")
        if self.tokens is not None and token not in self.tokens:
            raise HubError(401, "Invalid credentials in Authorization header")
        return token

    def _check_token_if_any(self, req: _Request) -> None:
        if req.token is not None and self.tokens is not None and req.token not in self.tokens:
            raise HubError(401, "Invalid credentials in Authorization header")

    def _repo_dir(self, repo_type: str, repo_id: str) -> Path:
        return self.root / "repos" / repo_type / repo_id

    def _get_repo(self, repo_type: str, repo_id: str, must_exist: bool = True) -> _Repo | None:
        with self._lock:
            key = (repo_type, repo_id)
            repo = self._repos.get(key)
            if repo is None:
                repo = _Repo.load(self._repo_dir(repo_type, repo_id), repo_type, repo_id)
                if repo is not None:
                    self._repos[key] = repo
            if repo is None and must_exist:
                raise HubError(404, "Repository not found", "RepoNotFound")
            return repo

    def _readable_repo(self, req: _Request, repo_type: str, repo_id: str) -> _Repo:
        self._check_token_if_any(req)
        repo = self._get_repo(repo_type, repo_id)
        if repo.state.get("private") and req.token is None:
            raise HubError(401, "Repository not found", "RepoNotFound")
        return repo

    def _writable_repo(self, req: _Request, repo_type: str, repo_id: str) -> _Repo:
        self._require_token(req)
        return self._get_repo(repo_type, repo_id)

    def _content_path(self, repo: _Repo, entry: dict) -> Path:
        return repo.lfs_path(entry["lfs"]) if entry.get("lfs") else repo.blob_path(entry["oid"])

    def _repo_url(self, repo: _Repo) -> str:
        return f"{self.url}/{URL_PREFIXES[repo.repo_type]}{repo.repo_id}"

    # ------------------------------------------------------------------------ routing
    def _route(self, req: _Request) -> _Response:
        s, m = req.segments, req.method
        if s and s[0] == "api":
            response = self._route_api(req, s[1:])
            if response is not None:
                return response
        elif s and s[0] == "_lfs":
            return self._route_lfs_storage(req, s[1:])
        else:
            repo_type, rest = "model", s
            if rest and rest[0] in REPO_TYPES and rest[0] != "models":
                repo_type, rest = REPO_TYPES[rest[0]], rest[1:]
            if len(rest) >= 4 and rest[2] == "resolve" and m in ("GET", "HEAD"):
                return self._resolve(req, repo_type, f"{rest[0]}/{rest[1]}", rest[3], "/".join(rest[4:]))
            if len(rest) == 6 and rest[1].endswith(".git") and rest[2:5] == ["info", "lfs", "objects"]:
                repo_id = f"{rest[0]}/{rest[1][:-4]}"
                action = rest[-1]
                if m == "POST" and action == "batch":
                    return self._lfs_batch(req, repo_type, repo_id)
                if m == "POST" and action == "verify":
                    return self._lfs_verify(req, repo_type, repo_id)
        with self._log_lock:
            self.unhandled.append((m, unquote(req.raw_path)))
        raise HubError(404, f"HubServer: no route for {m} {unquote(req.raw_path)}")

    def _route_api(self, req: _Request, s: list[str]) -> _Response | None:
        m = req.method
        if s == ["agent-harnesses"] and m == "GET":
            return _json({"standardEnvVars": [], "harnesses": {}})
        if s == ["whoami-v2"] and m == "GET":
            self._require_token(req)
            return _json(
                {
                    "type": "user",
                    "id": "0" * 24,
                    "name": USER,
                    "fullname": "Test User",
                    "orgs": [],
                    "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": "write"}},
                }
            )
        if s == ["validate-yaml"] and m == "POST":
            return self._validate_yaml(req)
        if s == ["repos", "create"] and m == "POST":
            return self._create_repo(req)
        if s == ["repos", "delete"] and m == "DELETE":
            return self._delete_repo(req)
        if len(s) >= 3 and s[0] in REPO_TYPES:
            repo_type, repo_id, rest = REPO_TYPES[s[0]], f"{s[1]}/{s[2]}", s[3:]
            if not rest and m == "GET":
                return self._repo_info(req, repo_type, repo_id, None)
            if len(rest) >= 2 and rest[0] == "revision" and m == "GET":
                return self._repo_info(req, repo_type, repo_id, "/".join(rest[1:]))
            if len(rest) >= 2 and rest[0] == "tree" and m == "GET":
                return self._tree(req, repo_type, repo_id, rest[1], "/".join(rest[2:]))
            if len(rest) >= 2 and rest[0] == "paths-info" and m == "POST":
                return self._paths_info(req, repo_type, repo_id, "/".join(rest[1:]))
            if len(rest) >= 2 and rest[0] == "preupload" and m == "POST":
                return self._preupload(req, repo_type, repo_id, "/".join(rest[1:]))
            if len(rest) >= 2 and rest[0] == "commit" and m == "POST":
                return self._commit(req, repo_type, repo_id, "/".join(rest[1:]))
            if rest == ["refs"] and m == "GET":
                return self._refs(req, repo_type, repo_id)
            if len(rest) >= 2 and rest[0] == "commits" and m == "GET":
                return self._commits(req, repo_type, repo_id, "/".join(rest[1:]))
            if len(rest) >= 2 and rest[0] == "branch" and m in ("POST", "DELETE"):
                return self._branch(req, repo_type, repo_id, "/".join(rest[1:]))
            if len(rest) >= 2 and rest[0] == "tag" and m in ("POST", "DELETE"):
                return self._tag(req, repo_type, repo_id, "/".join(rest[1:]))
        return None

    # ------------------------------------------------------------------------ repos
    def _validate_yaml(self, req: _Request) -> _Response:
        content = (req.json() or {}).get("content") or ""
        match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", content, re.S)
        if match:
            try:
                import yaml

                data = yaml.safe_load(match.group(1))
            except ImportError:  # pragma: no cover - pyyaml is a dependency of the project
                data = {}
            except Exception as e:
                return _json({"errors": [{"message": f"Invalid YAML: {e}"}], "warnings": []}, 400)
            if data is not None and not isinstance(data, dict):
                return _json({"errors": [{"message": "YAML metadata must be a mapping"}], "warnings": []}, 400)
        return _json({"errors": [], "warnings": []})

    def _create_repo(self, req: _Request) -> _Response:
        self._require_token(req)
        payload = req.json() or {}
        name, organization = payload.get("name"), payload.get("organization") or USER
        repo_type = payload.get("type") or "model"
        if repo_type not in URL_PREFIXES:
            raise HubError(400, f"Invalid repo type: {repo_type}")
        if not name or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name) or not re.fullmatch(
            r"[A-Za-z0-9][A-Za-z0-9._-]*", organization
        ):
            raise HubError(400, f"Invalid repo name: {organization}/{name}")
        repo_id = f"{organization}/{name}"
        with self._lock:
            existing = self._get_repo(repo_type, repo_id, must_exist=False)
            if existing is not None:  # the Hub's 409 carries the url: `create_repo(exist_ok=True)` reads it
                raise HubError(409, f"You already created this {repo_type} repo", body={"url": self._repo_url(existing)})
            private = payload.get("private")
            if payload.get("visibility") is not None:
                private = payload["visibility"] == "private"
            now = _now()
            repo = _Repo(
                self._repo_dir(repo_type, repo_id),
                repo_type,
                repo_id,
                {
                    "private": bool(private),
                    "createdAt": now,
                    "refs": {"branches": {}, "tags": {}},
                    "commits": {},
                    "seq": 0,
                },
            )
            oid = repo.store_blob(DEFAULT_GITATTRIBUTES.encode())
            tree = {".gitattributes": {"oid": oid, "size": len(DEFAULT_GITATTRIBUTES), "lfs": None}}
            cid = repo.new_commit(None, tree, "initial commit", "")
            repo.state["refs"]["branches"]["main"] = cid
            repo.save()
            self._repos[(repo_type, repo_id)] = repo
        url = self._repo_url(repo)
        return _json({"url": url, "name": repo_id, "id": uuid.uuid4().hex[:24]})

    def _delete_repo(self, req: _Request) -> _Response:
        self._require_token(req)
        payload = req.json() or {}
        repo_type = payload.get("type") or "model"
        repo_id = f"{payload.get('organization') or USER}/{payload.get('name')}"
        with self._lock:
            self._get_repo(repo_type, repo_id)
            self._repos.pop((repo_type, repo_id), None)
            shutil.rmtree(self._repo_dir(repo_type, repo_id), ignore_errors=True)
        return _Response(200, b"")

    def _repo_info(self, req: _Request, repo_type: str, repo_id: str, revision: str | None) -> _Response:
        repo = self._readable_repo(req, repo_type, repo_id)
        blobs = _is_true(req.param("blobs"))
        with repo.lock:
            cid = repo.resolve(revision or "main")
            commit = repo.commits[cid]
            tree = dict(commit["tree"])
        siblings = []
        for path in sorted(tree):
            entry = tree[path]
            sibling: dict[str, Any] = {"rfilename": path}
            if blobs:
                sibling["size"] = entry["size"]
                sibling["blobId"] = entry["oid"]
                if entry.get("lfs"):
                    sibling["lfs"] = {
                        "sha256": entry["lfs"],
                        "size": entry["size"],
                        "pointerSize": len(lfs_pointer(entry["lfs"], entry["size"])),
                    }
            siblings.append(sibling)
        card_data = None
        if "README.md" in tree:
            text = self._content_path(repo, tree["README.md"]).read_text(errors="replace")
            match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", text, re.S)
            if match:
                try:
                    import yaml

                    card_data = yaml.safe_load(match.group(1))
                except Exception:
                    card_data = None
        namespace = repo_id.split("/")[0]
        info: dict[str, Any] = {
            "_id": hashlib.sha1(f"{repo_type}/{repo_id}".encode()).hexdigest()[:24],
            "id": repo_id,
            "author": namespace,
            "sha": cid,
            "lastModified": commit["date"],
            "createdAt": repo.state["createdAt"],
            "private": repo.state.get("private", False),
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
            "usedStorage": sum(e["size"] for e in tree.values()),
        }
        if repo_type == "model":
            info["modelId"] = repo_id
        if repo_type == "dataset":
            info["description"] = ""
        if isinstance(card_data, dict):
            info["cardData"] = card_data
        expand = req.query.get("expand") or req.query.get("expand[]")
        if expand:
            info = {k: v for k, v in info.items() if k in set(expand) | {"id", "_id"}}
        return _json(info)

    # ------------------------------------------------------------------------ tree / paths-info
    def _last_commits(self, repo: _Repo, cid: str, paths: list[tuple[str, bool]]) -> dict[str, dict]:
        """For each (path, is_dir): the newest commit reachable from `cid` that changed it."""

        def signature(tree: dict, path: str, is_dir: bool):
            if not is_dir:
                entry = tree.get(path)
                return entry["oid"] if entry else None
            prefix = path + "/" if path else ""
            return tuple(sorted((p, e["oid"]) for p, e in tree.items() if p.startswith(prefix))) or None

        result: dict[str, dict] = {}
        pending = list(paths)
        commits = list(repo.history(cid))
        for i, commit in enumerate(commits):
            parent_tree = commits[i + 1]["tree"] if i + 1 < len(commits) else {}
            still = []
            for path, is_dir in pending:
                if signature(commit["tree"], path, is_dir) != signature(parent_tree, path, is_dir):
                    result[path] = {"id": commit["id"], "title": commit["title"], "date": commit["date"]}
                else:
                    still.append((path, is_dir))
            pending = still
            if not pending:
                break
        return result

    def _entry_json(self, tree: dict, path: str, is_dir: bool) -> dict:
        if is_dir:
            prefix = path + "/"
            listing = "".join(f"{p}\0{e['oid']}\n" for p, e in sorted(tree.items()) if p.startswith(prefix))
            return {"type": "directory", "oid": hashlib.sha1(listing.encode()).hexdigest(), "size": 0, "path": path}
        entry = tree[path]
        out: dict[str, Any] = {"type": "file", "oid": entry["oid"], "size": entry["size"], "path": path}
        if entry.get("lfs"):
            out["lfs"] = {
                "oid": entry["lfs"],
                "size": entry["size"],
                "pointerSize": len(lfs_pointer(entry["lfs"], entry["size"])),
            }
        return out

    @staticmethod
    def _directories(tree: dict) -> set[str]:
        dirs = set()
        for path in tree:
            parts = path.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                dirs.add("/".join(parts[:i]))
        return dirs

    def _entries(self, repo: _Repo, cid: str, items: list[tuple[str, bool]], expand: bool) -> list[dict]:
        tree = repo.tree(cid)
        out = [self._entry_json(tree, path, is_dir) for path, is_dir in items]
        if expand:
            last = self._last_commits(repo, cid, items)
            for entry in out:
                if entry["path"] in last:
                    entry["lastCommit"] = last[entry["path"]]
        return out

    def _tree(self, req: _Request, repo_type: str, repo_id: str, revision: str, path: str) -> _Response:
        repo = self._readable_repo(req, repo_type, repo_id)
        recursive = _is_true(req.param("recursive"))
        expand = _is_true(req.param("expand"))
        path = path.strip("/")
        with repo.lock:
            cid = repo.resolve(revision)
            tree = repo.tree(cid)
            dirs = self._directories(tree)
            if path and path in tree:
                items = [(path, False)]  # listing a file returns the file itself
            elif path and path not in dirs:
                raise HubError(404, f"Entry not found: {path}", "EntryNotFound", {"X-Repo-Commit": cid})
            else:
                prefix = path + "/" if path else ""

                def below(p: str) -> bool:
                    if not p.startswith(prefix):
                        return False
                    return recursive or "/" not in p[len(prefix) :]

                sub_dirs = sorted(d for d in dirs if below(d))
                sub_files = sorted(p for p in tree if below(p))
                items = [(d, True) for d in sub_dirs] + [(f, False) for f in sub_files]
                if recursive:
                    items.sort(key=lambda item: item[0])
            limit = int(req.param("limit") or (50 if expand else 1000))
            start = int(req.param("cursor") or 0)
            page = items[start : start + limit]
            entries = self._entries(repo, cid, page, expand)
        headers = {"X-Repo-Commit": cid}
        if start + limit < len(items):
            query = "&".join(
                f"{k}={quote(v[-1])}" for k, v in req.query.items() if k not in ("cursor",) and v
            )
            next_url = f"{self.url}{req.raw_path}?{query}{'&' if query else ''}cursor={start + limit}"
            headers["Link"] = f'<{next_url}>; rel="next"'
        return _json(entries, headers=headers)

    def _paths_info(self, req: _Request, repo_type: str, repo_id: str, revision: str) -> _Response:
        repo = self._readable_repo(req, repo_type, repo_id)
        content_type = (req.headers.get("Content-Type") or "").lower()
        if "json" in content_type:
            payload = req.json() or {}
            paths = payload.get("paths") or []
            expand = _is_true(str(payload.get("expand")))
        else:
            form = parse_qs(req.body().decode(), keep_blank_values=True)
            paths = form.get("paths", []) + form.get("paths[]", [])
            expand = _is_true(form.get("expand"))
        if isinstance(paths, str):
            paths = [paths]
        with repo.lock:
            cid = repo.resolve(revision)
            tree = repo.tree(cid)
            dirs = self._directories(tree)
            items = []
            for path in paths:
                path = path.strip("/")
                if path in tree:
                    items.append((path, False))
                elif path in dirs:
                    items.append((path, True))
            entries = self._entries(repo, cid, items, expand)
        return _json(entries, headers={"X-Repo-Commit": cid})

    def _refs(self, req: _Request, repo_type: str, repo_id: str) -> _Response:
        repo = self._readable_repo(req, repo_type, repo_id)
        with repo.lock:
            refs = repo.state["refs"]
            return _json(
                {
                    "branches": [
                        {"name": n, "ref": f"refs/heads/{n}", "targetCommit": c} for n, c in refs["branches"].items()
                    ],
                    "converts": [],
                    "tags": [{"name": n, "ref": f"refs/tags/{n}", "targetCommit": c} for n, c in refs["tags"].items()],
                    "pullRequests": [],
                }
            )

    def _commits(self, req: _Request, repo_type: str, repo_id: str, revision: str) -> _Response:
        repo = self._readable_repo(req, repo_type, repo_id)
        with repo.lock:
            cid = repo.resolve(revision)
            out = [
                {
                    "id": c["id"],
                    "title": c["title"],
                    "message": c["message"],
                    "date": c["date"],
                    "authors": [{"user": a} for a in c["authors"]],
                }
                for c in repo.history(cid)
            ]
        return _json(out)

    def _branch(self, req: _Request, repo_type: str, repo_id: str, branch: str) -> _Response:
        repo = self._writable_repo(req, repo_type, repo_id)
        with repo.lock:
            branches = repo.state["refs"]["branches"]
            if req.method == "DELETE":
                if branch not in branches:
                    raise HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
                if branch == "main":
                    raise HubError(403, "Cannot delete the default branch")
                del branches[branch]
            else:
                payload = req.json() or {}
                if branch in branches:
                    raise HubError(409, f"Reference refs/heads/{branch} already exists")
                start = payload.get("startingPoint")
                if payload.get("emptyBranch"):
                    raise HubError(400, "HubServer does not support empty branches")
                branches[branch] = repo.resolve(start or "main")
            repo.save()
        return _Response(200, b"")

    def _tag(self, req: _Request, repo_type: str, repo_id: str, name: str) -> _Response:
        repo = self._writable_repo(req, repo_type, repo_id)
        with repo.lock:
            tags = repo.state["refs"]["tags"]
            if req.method == "DELETE":
                if name not in tags:
                    raise HubError(404, f"Invalid rev id: {name}", "RevisionNotFound")
                del tags[name]
            else:
                payload = req.json() or {}
                tag = payload.get("tag")
                if not tag:
                    raise HubError(400, "Missing tag name")
                if tag in tags:
                    raise HubError(409, f"Tag {tag} already exists")
                tags[tag] = repo.resolve(name)
            repo.save()
        return _Response(200, b"")

    # ------------------------------------------------------------------------ downloads
    def _resolve(self, req: _Request, repo_type: str, repo_id: str, revision: str, path: str) -> _Response:
        repo = self._readable_repo(req, repo_type, repo_id)
        with repo.lock:
            cid = repo.resolve(revision)
            entry = repo.tree(cid).get(path)
            if entry is None:
                raise HubError(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": cid})
            entry = dict(entry)
        file = self._content_path(repo, entry)
        size = entry["size"]
        etag = f'"{entry["lfs"] or entry["oid"]}"'
        headers = {
            "X-Repo-Commit": cid,
            "ETag": etag,
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
            "Content-Disposition": f'inline; filename="{path.rsplit("/", 1)[-1]}"',
        }
        if entry.get("lfs"):
            headers["X-Linked-Etag"] = etag
            headers["X-Linked-Size"] = str(size)
        range_header = req.headers.get("Range")
        if range_header and req.method == "GET":
            start, end = self._parse_range(range_header, size)
            if start is None:
                return _Response(416, b"", {**headers, "Content-Range": f"bytes */{size}"})
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
            return _Response(206, None, headers, file=file, offset=start, length=end - start + 1)
        return _Response(200, None, headers, file=file, offset=0, length=size)

    @staticmethod
    def _parse_range(value: str, size: int) -> tuple[int | None, int]:
        match = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", value)
        if not match or (match.group(1) == "" and match.group(2) == ""):
            return None, 0
        if match.group(1) == "":  # suffix range: the last N bytes
            n = int(match.group(2))
            if n == 0 or size == 0:
                return None, 0
            return max(0, size - n), size - 1
        start = int(match.group(1))
        end = int(match.group(2)) if match.group(2) else size - 1
        if start >= size or end < start:
            return None, 0
        return start, min(end, size - 1)

    # ------------------------------------------------------------------------ uploads
    def _upload_mode(self, path: str, size: int, sample: bytes, patterns: list[re.Pattern]) -> str:
        if size >= self.lfs_threshold:
            return "lfs"
        if any(p.match(path) for p in patterns):
            return "lfs"
        if b"\0" in sample:
            return "lfs"
        return "regular"

    def _gitattributes(self, repo: _Repo, tree: dict) -> str:
        entry = tree.get(".gitattributes")
        if entry is None:
            return ""
        return self._content_path(repo, entry).read_text(errors="replace")

    def _preupload(self, req: _Request, repo_type: str, repo_id: str, revision: str) -> _Response:
        repo = self._writable_repo(req, repo_type, repo_id)
        if _is_true(req.param("create_pr")):
            raise HubError(400, "HubServer does not support pull requests")
        payload = req.json() or {}
        with repo.lock:
            cid = repo.resolve(revision)
            tree = repo.tree(cid)
            patterns = lfs_patterns(self._gitattributes(repo, tree))
            files = []
            for f in payload.get("files") or []:
                path, size = f["path"], int(f.get("size") or 0)
                sample = base64.b64decode(f.get("sample") or "")
                mode = self._upload_mode(path, size, sample, patterns)
                out: dict[str, Any] = {"path": path, "uploadMode": mode, "shouldIgnore": False}
                existing = tree.get(path)
                if existing is not None:
                    out["oid"] = existing["lfs"] or existing["oid"]
                files.append(out)
        return _json({"files": files, "commitOid": cid})

    def _lfs_batch(self, req: _Request, repo_type: str, repo_id: str) -> _Response:
        payload = req.json() or {}
        operation = payload.get("operation")
        if operation == "upload":
            repo = self._writable_repo(req, repo_type, repo_id)
        elif operation == "download":
            repo = self._readable_repo(req, repo_type, repo_id)
        else:
            raise HubError(422, f"Invalid LFS operation: {operation}")
        transfers = payload.get("transfers") or ["basic"]
        if payload.get("hash_algo", "sha256") != "sha256":
            raise HubError(422, "Only sha256 is supported")
        base = f"{self.url}/_lfs/{repo_type}s/{repo_id}"
        objects = []
        use_multipart = False
        for obj in payload.get("objects") or []:
            oid, size = obj.get("oid"), obj.get("size")
            if not isinstance(oid, str) or not re.fullmatch(r"[0-9a-f]{64}", oid) or not isinstance(size, int):
                objects.append({"oid": str(oid), "size": int(size or 0), "error": {"code": 422, "message": "Invalid oid or size"}})
                continue
            sig = self._sign(repo_type, repo_id, oid)
            entry: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
            if operation == "download":
                if repo.has_lfs(oid):
                    entry["actions"] = {"download": {"href": f"{base}/{oid}?sig={sig}", "header": {}}}
                else:
                    entry["error"] = {"code": 404, "message": "Object does not exist"}
            elif repo.has_lfs(oid):
                pass  # already present: no actions, the client skips the upload
            else:
                href = f"{base}/{oid}?sig={sig}&size={size}"
                upload: dict[str, Any] = {"href": href}
                chunk = self.multipart_chunk_size
                if chunk and "multipart" in transfers and size > chunk:
                    use_multipart = True
                    upload["header"] = {"chunk_size": str(chunk)}
                    for part in range(1, -(-size // chunk) + 1):
                        upload["header"][f"{part:05d}"] = f"{base}/{oid}/{part}?sig={self._sign(repo_type, repo_id, oid, str(part))}"
                else:
                    upload["header"] = {}
                entry["actions"] = {
                    "upload": upload,
                    "verify": {
                        "href": f"{self.url}/{URL_PREFIXES[repo_type]}{repo_id}.git/info/lfs/objects/verify",
                        "header": {},
                    },
                }
            objects.append(entry)
        body = {"transfer": "multipart" if use_multipart else "basic", "objects": objects, "hash_algo": "sha256"}
        return _json(body, content_type=LFS_CONTENT_TYPE)

    def _lfs_verify(self, req: _Request, repo_type: str, repo_id: str) -> _Response:
        repo = self._writable_repo(req, repo_type, repo_id)
        payload = req.json() or {}
        oid, size = payload.get("oid"), payload.get("size")
        if not repo.has_lfs(oid):
            raise HubError(404, f"LFS object {oid} not found")
        if size is not None and repo.lfs_path(oid).stat().st_size != size:
            raise HubError(422, f"LFS object {oid} has a different size")
        return _json({"success": True}, content_type=LFS_CONTENT_TYPE)

    def _route_lfs_storage(self, req: _Request, s: list[str]) -> _Response:
        # /_lfs/{types}/{ns}/{name}/{oid}[/{part}]
        if len(s) not in (4, 5) or s[0] not in REPO_TYPES:
            raise HubError(404, "No such LFS storage URL")
        repo_type, repo_id, oid = REPO_TYPES[s[0]], f"{s[1]}/{s[2]}", s[3]
        if not re.fullmatch(r"[0-9a-f]{64}", oid):
            raise HubError(400, "Invalid oid")
        repo = self._get_repo(repo_type, repo_id)
        part = s[4] if len(s) == 5 else None
        if part is not None:
            self._check_sig(req, repo_type, repo_id, oid, part)
            if req.method != "PUT" or not part.isdigit():
                raise HubError(405, "Method not allowed")
            parts_dir = repo.dir / "lfs-parts" / oid
            parts_dir.mkdir(parents=True, exist_ok=True)
            digest, _size = self._receive(req, parts_dir / f"{int(part):05d}")
            return _Response(200, b"", {"ETag": f'"{digest}"'})
        self._check_sig(req, repo_type, repo_id, oid)
        if req.method == "GET":
            if not repo.has_lfs(oid):
                raise HubError(404, "Object does not exist")
            path = repo.lfs_path(oid)
            return _Response(200, None, {"Content-Type": "application/octet-stream"}, file=path, length=path.stat().st_size)
        if req.method == "PUT":
            tmp = repo.dir / "lfs" / f"{oid}.{uuid.uuid4().hex}.incoming"
            _digest, size = self._receive(req, tmp, sha256=True)
            return self._store_lfs(repo, oid, tmp, _digest, size, req.param("size"))
        if req.method == "POST":  # multipart completion
            payload = req.json() or {}
            parts_dir = repo.dir / "lfs-parts" / oid
            parts = sorted(payload.get("parts") or [], key=lambda p: p["partNumber"])
            tmp = repo.dir / "lfs" / f"{oid}.{uuid.uuid4().hex}.incoming"
            tmp.parent.mkdir(parents=True, exist_ok=True)
            h = hashlib.sha256()
            size = 0
            with open(tmp, "wb") as out:
                for p in parts:
                    part_path = parts_dir / f"{int(p['partNumber']):05d}"
                    if not part_path.is_file():
                        tmp.unlink(missing_ok=True)
                        raise HubError(400, f"Missing part {p['partNumber']}")
                    data = part_path.read_bytes()
                    if f'"{hashlib.md5(data).hexdigest()}"' != p.get("etag") and hashlib.md5(data).hexdigest() != p.get("etag"):
                        tmp.unlink(missing_ok=True)
                        raise HubError(400, f"ETag mismatch for part {p['partNumber']}")
                    h.update(data)
                    size += len(data)
                    out.write(data)
            shutil.rmtree(parts_dir, ignore_errors=True)
            return self._store_lfs(repo, oid, tmp, h.hexdigest(), size, req.param("size"))
        raise HubError(405, "Method not allowed")

    def _receive(self, req: _Request, dest: Path, sha256: bool = False) -> tuple[str, int]:
        """Stream the request body to `dest`; returns (sha256 or md5 hex digest, size)."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        h = hashlib.sha256() if sha256 else hashlib.md5()
        size = 0
        try:
            with open(dest, "wb") as out:
                for chunk in req.iter_body():
                    h.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
        except BaseException:
            dest.unlink(missing_ok=True)
            raise
        return h.hexdigest(), size

    def _store_lfs(self, repo: _Repo, oid: str, tmp: Path, digest: str, size: int, expected_size: str | None):
        if digest != oid:
            tmp.unlink(missing_ok=True)
            raise HubError(400, f"sha256 mismatch: expected {oid}, received {digest}")
        if expected_size is not None and int(expected_size) != size:
            tmp.unlink(missing_ok=True)
            raise HubError(400, f"size mismatch: expected {expected_size}, received {size}")
        os.replace(tmp, repo.lfs_path(oid))
        return _Response(200, b"")

    def _commit(self, req: _Request, repo_type: str, repo_id: str, revision: str) -> _Response:
        repo = self._writable_repo(req, repo_type, repo_id)
        if _is_true(req.param("create_pr")):
            raise HubError(400, "HubServer does not support pull requests")
        body = req.body()
        content_type = (req.headers.get("Content-Type") or "").lower()
        try:
            if "ndjson" in content_type:
                items = [json.loads(line) for line in body.splitlines() if line.strip()]
            else:  # legacy JSON payload: {"summary", "description", "files", "lfsFiles", "deletedFiles"}
                legacy = json.loads(body or b"{}")
                items = [{"key": "header", "value": {k: legacy.get(k) for k in ("summary", "description", "parentCommit")}}]
                items += [{"key": "file", "value": v} for v in legacy.get("files") or []]
                items += [{"key": "lfsFile", "value": v} for v in legacy.get("lfsFiles") or []]
                items += [{"key": "deletedFile", "value": v} for v in legacy.get("deletedFiles") or []]
        except ValueError as e:
            raise HubError(400, f"Invalid commit payload: {e}") from None
        header = next((i["value"] for i in items if i.get("key") == "header"), None)
        if header is None:
            raise HubError(400, "Missing commit header")
        title = header.get("summary") or ""
        if not title:
            raise HubError(400, "Commit summary is required")
        with repo.lock:
            branches = repo.state["refs"]["branches"]
            if revision.startswith("refs/heads/"):
                revision = revision[11:]
            if revision not in branches:
                repo.resolve(revision)  # 404 RevisionNotFound if it is nothing at all
                raise HubError(400, f"Can only commit on a branch, not on {revision}")
            head = branches[revision]
            parent_commit = header.get("parentCommit")
            if parent_commit and not head.startswith(parent_commit):
                raise HubError(412, f"A commit has happened since. Please refresh and try again. (head is {head})")
            tree = dict(repo.tree(head))
            for item in items:
                key, value = item.get("key"), item.get("value") or {}
                if key == "header":
                    continue
                path = value.get("path", "")
                if key in ("file", "lfsFile"):
                    self._check_path(path)
                if key == "file":
                    if value.get("encoding", "base64") == "base64":
                        data = base64.b64decode(value.get("content") or "")
                    else:
                        data = (value.get("content") or "").encode()
                    tree[path] = {"oid": repo.store_blob(data), "size": len(data), "lfs": None}
                elif key == "lfsFile":
                    oid = value.get("oid")
                    if value.get("algo", "sha256") != "sha256" or not repo.has_lfs(oid):
                        raise HubError(
                            422,
                            f"Your push was rejected because an LFS pointer pointed to a file that does not exist ({path})",
                        )
                    size = repo.lfs_path(oid).stat().st_size
                    if value.get("size") is not None and int(value["size"]) != size:
                        raise HubError(422, f"LFS object size mismatch for {path}")
                    tree[path] = {"oid": git_blob_oid(lfs_pointer(oid, size)), "size": size, "lfs": oid}
                elif key == "deletedFile":
                    if path not in tree:
                        raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                    del tree[path]
                elif key == "deletedFolder":
                    prefix = path.rstrip("/") + "/"
                    doomed = [p for p in tree if p.startswith(prefix)]
                    if not doomed:
                        raise HubError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
                    for p in doomed:
                        del tree[p]
                else:
                    raise HubError(400, f"Unknown commit operation: {key}")
            cid = repo.new_commit(head, tree, title, header.get("description") or "")
            branches[revision] = cid
            repo.save()
        return _json(
            {
                "success": True,
                "commitOid": cid,
                "commitUrl": f"{self._repo_url(repo)}/commit/{cid}",
                "pullRequestUrl": None,
                "hookOutput": "",
            }
        )

    @staticmethod
    def _check_path(path: str) -> None:
        parts = path.split("/")
        if not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts) or parts[0] == ".git":
            raise HubError(400, f"Invalid path in repo: {path!r}")


if __name__ == "__main__":  # manual use: python tests/hubserver.py [root] [port]
    server = HubServer(sys.argv[1] if len(sys.argv) > 1 else None, port=int(sys.argv[2]) if len(sys.argv) > 2 else 0)
    print(server.start(), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()
