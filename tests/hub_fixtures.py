"""Pytest fixtures around `HubServer`: a local Hugging Face Hub for tests.

Use them from a test module with::

    from tests.hub_fixtures import hub, hub_env  # noqa: F401  (pytest fixtures)

`hub` is one `HubServer` per test module (storage in a temporary folder). `hub_env` points the
Hugging Face clients at it, both for subprocesses and for the test process itself.

Which one to use
----------------
*Subprocess* (preferred for `datasets` round trips, and whenever a test wants "a fresh process with
empty caches"): `hub_env.run(code)` runs `python -c code` with `hub_env.env`, where the clients read
every setting at import time, exactly like a user's process. That environment also routes any request
for a host other than 127.0.0.1 to the server as an HTTP proxy (`HubServer.proxy_env`): nothing can
leave the machine, not even a DNS lookup, and strays show up in `hub.foreign_requests`.

*In-process*: `huggingface_hub` and `datasets` copy `HF_ENDPOINT` and friends into module constants
when they are imported, so setting environment variables in a running test process is not enough.
`hub_env` therefore also monkeypatches (and restores after the test):

- `huggingface_hub.constants`: `ENDPOINT`, `HUGGINGFACE_CO_URL_TEMPLATE` (what `hf_hub_url` formats),
  `HF_URL_HOSTS`, `HF_HUB_DISABLE_XET` (True: uploads go through LFS), `HF_HUB_OFFLINE` (False),
  `HF_HUB_DISABLE_TELEMETRY` (True: with telemetry on, every request's user agent triggers a GET of
  `{ENDPOINT}/api/agent-harnesses`), `HF_HOME`, `HF_HUB_CACHE`, `HUGGINGFACE_HUB_CACHE`,
  `HF_ASSETS_CACHE`, `HF_XET_CACHE`, `HF_TOKEN_PATH`, `HF_STORED_TOKENS_PATH`, `AGENT_HARNESSES_PATH`;
- `huggingface_hub.utils._http._HUB_ORIGINS` (redirects followed with the auth header);
- `datasets.config`: `HF_ENDPOINT`, `HUB_DATASETS_URL`, `HF_HUB_OFFLINE`, `HF_DATASETS_OFFLINE`,
  `HF_UPDATE_DOWNLOAD_COUNTS` (False: otherwise `datasets` HEADs s3.amazonaws.com on each Hub load),
  `USE_PARQUET_EXPORT` (False: otherwise `datasets` asks `http://datasets-server.127.0.0.1:<port>`, a
  DNS lookup, for the dataset viewer's infos), and its cache paths;
- `HfFileSystem`'s instance cache is cleared before and after the test (its directory listings would
  otherwise outlive commits made by another test).

The token comes from `HF_TOKEN` (read at each request), so `monkeypatch.delenv("HF_TOKEN")` in a test
is enough to act anonymously. Keep in mind that the `datasets` download counter and dataset-viewer
calls are switched off in-process, not exercised.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.hubserver import HubServer

TOKEN = "test-token"

# Environment variables of the parent process that must not leak into a client subprocess.
_SCRUBBED = (
    "HF_ENDPOINT", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE",
    "TRANSFORMERS_OFFLINE", "HF_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_DATASETS_CACHE",
    "HF_ASSETS_CACHE", "HF_XET_CACHE", "HF_TOKEN_PATH", "HUGGINGFACE_CO_STAGING", "HF_HUB_ENABLE_HF_TRANSFER",
    "HF_MODULES_CACHE", "HF_DATASETS_DOWNLOADED_DATASETS_PATH", "HF_DATASETS_EXTRACTED_DATASETS_PATH",
)


class HubEnv:
    """The client side of a `HubServer`: environment, cache folders, subprocess runner."""

    def __init__(self, server: HubServer, home: Path):
        self.server = server
        self.endpoint: str = server.url  # type: ignore[assignment]
        self.token = TOKEN
        self.home = home
        self.hub_cache = home / "hub"
        self.datasets_cache = home / "datasets"
        self.env: dict[str, str] = self._subprocess_env()

    def _subprocess_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED and not k.lower().endswith("_proxy")}
        env.update(self.server.client_env(token=self.token))
        env.update(
            HF_HOME=str(self.home),
            HF_HUB_CACHE=str(self.hub_cache),
            HF_DATASETS_CACHE=str(self.datasets_cache),
            PYTHONUNBUFFERED="1",
        )
        return env

    def run(
        self,
        code: str,
        *args: str,
        env: dict[str, str | None] | None = None,
        check: bool = True,
        timeout: float = 180,
    ) -> subprocess.CompletedProcess:
        """Run `python -c code *args` with the client environment (`env` overrides; None unsets).

        Raises AssertionError with the subprocess output if it fails and `check` is true.
        """
        full_env = dict(self.env)
        for key, value in (env or {}).items():
            if value is None:
                full_env.pop(key, None)
            else:
                full_env[key] = value
        proc = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code), *args],
            env=full_env,
            cwd=str(self.home),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"client subprocess failed (rc={proc.returncode})\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
            )
        return proc


def _patch_in_process(monkeypatch: pytest.MonkeyPatch, hub_env: HubEnv) -> None:
    endpoint = hub_env.endpoint
    home = str(hub_env.home)
    # Import before touching os.environ, so that the values monkeypatch restores are the original ones.
    from huggingface_hub import constants
    from huggingface_hub.utils import _http

    try:
        from datasets import config as ds_config
    except ImportError:  # pragma: no cover - datasets is a dependency of the project
        ds_config = None

    for key in _SCRUBBED:
        monkeypatch.delenv(key, raising=False)
    for key in list(os.environ):
        if key.lower().endswith("_proxy"):
            monkeypatch.delenv(key, raising=False)
    for key, value in {
        "HF_ENDPOINT": endpoint,
        "HF_TOKEN": hub_env.token,
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_UPDATE_DOWNLOAD_COUNTS": "0",
        "HF_HOME": home,
        "HF_HUB_CACHE": str(hub_env.hub_cache),
        "HF_DATASETS_CACHE": str(hub_env.datasets_cache),
    }.items():
        monkeypatch.setenv(key, value)

    host = urlsplit(endpoint).hostname
    patches = {
        "ENDPOINT": endpoint,
        "HUGGINGFACE_CO_URL_TEMPLATE": endpoint + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_URL_HOSTS": frozenset(constants.HF_URL_HOSTS | {host}),
        "HF_HUB_DISABLE_XET": True,
        "HF_HUB_OFFLINE": False,
        "HF_HUB_DISABLE_TELEMETRY": True,
        "HF_HOME": home,
        "HF_HUB_CACHE": str(hub_env.hub_cache),
        "HUGGINGFACE_HUB_CACHE": str(hub_env.hub_cache),
        "HF_ASSETS_CACHE": os.path.join(home, "assets"),
        "HF_XET_CACHE": os.path.join(home, "xet"),
        "HF_TOKEN_PATH": os.path.join(home, "token"),
        "HF_STORED_TOKENS_PATH": os.path.join(home, "stored_tokens"),
        "AGENT_HARNESSES_PATH": os.path.join(home, ".agent_harnesses.json"),
    }
    for name, value in patches.items():
        monkeypatch.setattr(constants, name, value, raising=False)
    origins = getattr(_http, "_HUB_ORIGINS", None)
    if origins is not None:
        monkeypatch.setattr(_http, "_HUB_ORIGINS", frozenset(origins | {_http._url_origin(endpoint)}))

    if ds_config is not None:
        cache = hub_env.datasets_cache
        for name, value in {
            "HF_ENDPOINT": endpoint,
            "HUB_DATASETS_URL": endpoint + "/datasets/{repo_id}/resolve/{revision}/{path}",
            "HF_HUB_OFFLINE": False,
            "HF_DATASETS_OFFLINE": False,
            "HF_UPDATE_DOWNLOAD_COUNTS": False,
            "USE_PARQUET_EXPORT": False,
            "HF_CACHE_HOME": home,
            "HF_DATASETS_CACHE": cache,
            "HF_MODULES_CACHE": Path(home) / "modules",
            "DOWNLOADED_DATASETS_PATH": cache / "downloads",
            "EXTRACTED_DATASETS_PATH": cache / "downloads" / "extracted",
        }.items():
            monkeypatch.setattr(ds_config, name, value, raising=False)


def _clear_hffs_instances() -> None:
    try:
        from huggingface_hub import HfFileSystem

        HfFileSystem.clear_instance_cache()
    except Exception:  # pragma: no cover
        pass


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """A `HubServer` for the whole test module, on 127.0.0.1 and an ephemeral port."""
    server = HubServer(tmp_path_factory.mktemp("hub"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def hub_env(hub, monkeypatch, tmp_path):
    """Point the Hugging Face clients at `hub`: for subprocesses (`hub_env.env`, `hub_env.run`) and, by
    monkeypatching environment and module constants (see the module docstring), in this process.

    Fresh cache folders per test (`hub_env.home`); token "test-token"; Xet disabled; telemetry off.
    Restarts the server if an earlier test stopped it.
    """
    hub.start()  # no-op if running; otherwise serves again on the same port
    env = HubEnv(hub, tmp_path / "hf-home")
    env.home.mkdir(parents=True, exist_ok=True)
    _patch_in_process(monkeypatch, env)
    _clear_hffs_instances()
    yield env
    _clear_hffs_instances()
