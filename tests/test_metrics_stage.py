"""The metrics stage end to end through a real local Ray: cells table, phase labels on every row,
plots, card config, resumability, recompute and `zoo plot`."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import datasets
import matplotlib.image as mpimg
import pytest
import yaml

from tests.conftest import tiny_spec, write_spec
from zoo import store
from zoo.landscape.phases import PHASES

pytestmark = pytest.mark.slow

SPEC = tiny_spec(
    "tiny_phases",
    training={"epochs": 4, "data_fraction": 0.5},
    axes={"temperature": {"param": "batch_size", "values": [32, 256]},
          "load": {"param": "width", "values": [2, 64]}},
    checkpoints=[0, 4],
    metrics={"hessian": {"batches": 2, "batch_size": 128, "max_iter": 20, "probes": 20},
             "connectivity": {"epochs": 2, "points": 7}},
)


def zoo_cmd(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zoo.cli", *args], capture_output=True, text=True, timeout=400)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    spec = write_spec(tmp_path_factory.mktemp("spec") / "tiny_phases.yaml", SPEC)
    out = tmp_path_factory.mktemp("zoo") / "phases"
    r = zoo_cmd("build", "--config", str(spec), "--out", str(out), "--workers", "2")
    assert r.returncode == 0, r.stderr
    return out


def test_cells_table_and_labels(built):
    cells = datasets.load_dataset(str(built), "tiny_phases_cells", split="train")
    assert cells.features == store.cell_features()
    assert len(cells) == 4 and sorted(cells["cell"]) == ["T0L0", "T0L1", "T1L0", "T1L1"]
    for c in cells:
        assert c["n_models"] == 2 and c["n_pairs"] == 1 and c["metrics_epoch"] == 4
        assert c["phase"] in PHASES
        for k in ("hessian_top_eig", "hessian_trace", "cka_logits", "cka_features", "mc_loss", "mc_error"):
            assert math.isfinite(c[k]), (c["cell"], k)
        assert c["hessian_top_eig"] > 0 and c["hessian_trace"] > 0
        assert 0 <= c["cka_logits"] <= 1 + 1e-9 and len(c["curve_loss"]) == 7 and len(c["member_hessian_trace"]) == 2
        assert c["log_hessian_trace"] == pytest.approx(math.log10(c["hessian_trace"]))
    # the plane is not uniform: width 2 cannot fit MNIST-1D, width 64 fits much better
    by = {c["cell"]: c for c in cells}
    assert by["T0L0"]["train_loss"] > by["T0L1"]["train_loss"] + 0.3
    assert by["T0L0"]["phase"] in ("I", "II")


def test_every_model_row_carries_its_cell(built):
    rows = datasets.load_dataset(str(built), "tiny_phases", split="train")
    cells = {c["cell"]: c for c in datasets.load_dataset(str(built), "tiny_phases_cells", split="train")}
    for r in rows:
        c = cells[r["cell"]]
        assert r["phase"] == c["phase"] and r["mc_loss"] == c["mc_loss"] and r["cka_logits"] == c["cka_logits"]


def test_plots_card_and_manifest(built):
    m = json.loads((built / "manifest.json").read_text())
    figs = m["figures"]
    assert "figures/tiny_phases-phases.png" in figs and "figures/tiny_phases-mc_loss.png" in figs
    for f in figs:
        img = mpimg.imread(built / f)
        assert img.shape[0] > 200 and img.shape[1] > 200
    card = (built / "README.md").read_text()
    header = yaml.safe_load(card.split("---")[1])
    assert {c["config_name"] for c in header["configs"]} == {"tiny_phases", "tiny_phases_cells"}
    assert "![tiny_phases-phases](figures/tiny_phases-phases.png)" in card
    assert m["zoos"]["tiny_phases"]["status"] == "complete" and sum(m["zoos"]["tiny_phases"]["phases"].values()) == 4
    assert zoo_cmd("verify", str(built)).returncode == 0


def test_metrics_rerun_is_resumable_and_recompute_is_identical(built):
    before = {p.name: store.sha256_file(p) for p in store.cell_files(built, "tiny_phases")}
    r = zoo_cmd("metrics", str(built), "--no-ray")
    assert r.returncode == 0, r.stderr
    assert "4 already done, 0 to compute" in " ".join(r.stderr.split())
    victim = store.cell_files(built, "tiny_phases")[0]
    victim.unlink()  # as if interrupted before this cell was committed
    r = zoo_cmd("metrics", str(built), "--no-ray", "--zoo", "tiny_phases")
    assert r.returncode == 0 and "1 to compute" in " ".join(r.stderr.split())
    after = {p.name: store.sha256_file(p) for p in store.cell_files(built, "tiny_phases")}
    assert after == before  # deterministic: the recomputed cell is byte-identical
    assert zoo_cmd("verify", str(built)).returncode == 0


def test_plot_command_and_errors(built, tmp_path):
    r = zoo_cmd("plot", str(built))
    assert r.returncode == 0 and "tiny_phases-phases.png" in r.stdout
    r = zoo_cmd("metrics", str(built), "--zoo", "nope", "--no-ray")
    assert r.returncode == 2 and "no zoo 'nope'" in r.stderr and "tiny_phases" in r.stderr
    r = zoo_cmd("metrics", str(tmp_path))
    assert r.returncode == 2 and "no manifest.json" in r.stderr
