"""The metrics stage end to end through a real local Ray: cells table, phase labels (with their
margins) on every row, plots, card config, resumability, recompute, relabelling and `zoo plot`."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import datasets
import matplotlib.image as mpimg
import pyarrow.parquet as pq
import pytest
import yaml

from tests.conftest import tiny_spec, write_spec
from zoo import store
from zoo.landscape.phases import PHASES, PhaseThresholds, decide_cell, seed_spread

pytestmark = pytest.mark.slow

SPEC = tiny_spec(
    "tiny_phases",
    training={"epochs": 4, "data_fraction": 0.5},
    axes={"temperature": {"param": "batch_size", "values": [32, 256]},
          "load": {"param": "width", "values": [2, 64]}},
    seeds=[0, 1, 2],  # 3 seeds = 3 pairs: the spread of mc and CKA (the labels' margins) can be estimated
    checkpoints=[0, 4],
    metrics={"hessian": {"batches": 2, "batch_size": 128, "max_iter": 20, "probes": 20},
             "connectivity": {"epochs": 2, "points": 7}},
)


def zoo_cmd(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipelines.zoo_cli", *args], capture_output=True, text=True, timeout=400)


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
        assert c["n_models"] == 3 and c["n_pairs"] == 3 and c["metrics_epoch"] == 4
        assert c["phase"] in PHASES
        for k in ("hessian_top_eig", "hessian_trace", "cka_logits", "cka_features", "mc_loss", "mc_error"):
            assert math.isfinite(c[k]), (c["cell"], k)
        assert c["hessian_top_eig"] > 0 and c["hessian_trace"] > 0
        assert 0 <= c["cka_logits"] <= 1 + 1e-9 and len(c["curve_loss"]) == 7 and len(c["member_hessian_trace"]) == 3
        assert c["log_hessian_trace"] == pytest.approx(math.log10(c["hessian_trace"]))
    # the plane is not uniform: width 2 cannot fit MNIST-1D, width 64 fits much better
    by = {c["cell"]: c for c in cells}
    assert by["T0L0"]["train_loss"] > by["T0L1"]["train_loss"] + 0.3
    assert by["T0L0"]["phase"] in ("I", "II")


def test_cells_record_per_seed_values_and_margins(built):
    cells = datasets.load_dataset(str(built), "tiny_phases_cells", split="train")
    for c in cells:
        assert len(c["member_train_loss"]) == 3
        assert sum(c["member_train_loss"]) / 3 == pytest.approx(c["train_loss"])
        for k in ("mc_loss", "mc_error", "cka_logits", "cka_features"):  # the cell value is the mean over pairs
            assert len(c[f"pair_{k}"]) == 3 and sum(c[f"pair_{k}"]) / 3 == pytest.approx(c[k]), (c["cell"], k)
        d = decide_cell(c, PhaseThresholds())
        assert (c["phase"], c["phase_decided_by"], c["phase_uncertain"]) == (d.label, d.decided_by, d.uncertain)
        assert c["phase_margin"] == pytest.approx(d.margin) and c["phase_margin"] >= 0
        assert c["phase_uncertain"] == (not c["phase_margin"] >= 1.0)
        if c["phase_decided_by"] == "mc_loss":  # recomputed by hand from the stored pairs
            assert c["phase_margin"] == pytest.approx(abs(c["mc_loss"] + 0.1) / seed_spread(c["pair_mc_loss"]))


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
    z = m["zoos"]["tiny_phases"]
    assert z["status"] == "complete" and sum(z["phases"].values()) == 4
    cells = store.read_cells(built, "tiny_phases").to_pylist()
    assert set(z["phases_uncertain"]) == set(z["phases"])
    for p, n in z["phases_uncertain"].items():
        assert n == sum(c["phase"] == p and c["phase_uncertain"] for c in cells) <= z["phases"][p]
    assert "metrics.phases.margin" in card and "phase_uncertain" in card
    assert f"; {sum(z['phases_uncertain'].values())} of 4 uncertain |" in card  # next to the phase counts
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


def _relabel(built) -> subprocess.CompletedProcess:
    r = zoo_cmd("metrics", str(built), "--no-ray")
    assert r.returncode == 0, r.stderr
    assert "4 already done, 0 to compute" in " ".join(r.stderr.split())  # relabelling recomputes nothing
    return r


def test_relabel_recomputes_margins_from_stored_values(built):
    m = json.loads((built / "manifest.json").read_text())
    before = {c["cell"]: c for c in store.read_cells(built, "tiny_phases").to_pylist()}
    m["zoos"]["tiny_phases"]["spec"]["metrics"]["phases"]["train_loss"] = 10.0  # new thresholds: relabel only
    m["zoos"]["tiny_phases"]["spec"]["metrics"]["phases"]["margin"] = 0.0
    (built / "manifest.json").write_text(json.dumps(m))
    _relabel(built)
    th = PhaseThresholds(train_loss=10.0, margin=0.0)
    after = {c["cell"]: c for c in store.read_cells(built, "tiny_phases").to_pylist()}
    for cell, c in after.items():
        d = decide_cell(before[cell], th)
        assert (c["phase"], c["phase_decided_by"], c["phase_uncertain"]) == (d.label, d.decided_by, d.uncertain)
        assert c["phase_margin"] == pytest.approx(d.margin, nan_ok=True)
        assert c["mc_loss"] == before[cell]["mc_loss"] and c["pair_mc_loss"] == before[cell]["pair_mc_loss"]
    assert zoo_cmd("verify", str(built)).returncode == 0


def test_cells_from_an_older_version_count_as_uncertain(built):
    """A cell file without the per-seed lists and margin columns is relabelled (margin NaN,
    uncertain) and rewritten in the current schema, not a crash."""
    victim = store.cell_files(built, "tiny_phases")[0]
    t = pq.read_table(victim)
    new = [c for c in t.column_names if c.startswith(("pair_", "phase_")) or c == "member_train_loss"]
    pq.write_table(t.drop_columns(new), victim)
    _relabel(built)
    assert pq.read_table(victim).schema.equals(store.cell_schema())
    c = pq.read_table(victim).to_pylist()[0]
    assert c["phase"] in PHASES and math.isnan(c["phase_margin"]) and c["phase_uncertain"]
    assert c["member_train_loss"] is None and c["pair_mc_loss"] is None
    z = json.loads((built / "manifest.json").read_text())["zoos"]["tiny_phases"]
    assert z["phases_uncertain"][c["phase"]] >= 1
    assert zoo_cmd("verify", str(built)).returncode == 0
