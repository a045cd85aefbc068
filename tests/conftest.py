"""Shared fixtures: tiny zoo specs, and a data cache shared by all tests of a run."""
from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent

# Isolate the Hugging Face caches before `datasets` is imported anywhere: `datasets` caches a
# local folder's parquet files under keys that survive a rebuild with the same file names, so a
# shared cache would serve rows from an earlier test run.
_HF = tempfile.mkdtemp(prefix="zoo-tests-hf-")
os.environ["HF_HOME"] = _HF
os.environ["HF_DATASETS_CACHE"] = os.path.join(_HF, "datasets")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


@pytest.fixture(scope="session", autouse=True)
def _data_cache(tmp_path_factory):
    """Generated data sets (MNIST-1D) are cached once per test run, never in the user's home."""
    if "ZOO_CACHE" not in os.environ:
        os.environ["ZOO_CACHE"] = str(tmp_path_factory.mktemp("zoo-cache"))
    yield


def pids_named(fragment: str) -> list[int]:
    """Pids of the running processes whose command line contains `fragment` (Ray names a worker
    after what it runs: `ray::train_bundle`, `ray::ImplicitFunc.train`)."""
    ps = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout.splitlines()
    return [int(line.split()[0]) for line in ps if fragment in line]


def tiny_spec(name: str = "tiny", **over) -> dict:
    """A 2x2 plane x 2 seeds of small MLPs on MNIST-1D, 2 epochs: seconds to train."""
    spec = {
        "name": name,
        "task": "mnist1d",
        "model": {"family": "mlp", "depth": 1},
        "training": {"epochs": 2, "optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "data_fraction": 0.5},
        "axes": {
            "temperature": {"param": "batch_size", "values": [64, 128]},
            "load": {"param": "width", "values": [4, 8]},
        },
        "seeds": [0, 1],
        "checkpoints": [0, 1, 2],
    }
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(spec.get(k), dict):
            spec[k] = {**spec[k], **v}
        else:
            spec[k] = v
    return spec


def write_spec(path: Path, spec: dict) -> Path:
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def interrupt_after(monkeypatch, cls, name: str, calls: int, run) -> None:
    """Run `run()` with cls.name raising KeyboardInterrupt at its call number calls + 1 (a kill in
    the middle of a training step), expect the interrupt, and restore the method: what the
    exact-resume tests of every generator kind interrupt their runs with."""
    import pytest

    original, n = getattr(cls, name), {"calls": 0}

    def flaky(self, *a, **k):
        n["calls"] += 1
        if n["calls"] > calls:
            raise KeyboardInterrupt
        return original(self, *a, **k)

    monkeypatch.setattr(cls, name, flaky)
    with pytest.raises(KeyboardInterrupt):
        run()
    monkeypatch.setattr(cls, name, original)
