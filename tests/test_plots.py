"""zoo.plots: metric heatmaps, phase map and learning curves are written as valid PNGs."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from matplotlib.image import imread

from zoo import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TEMPS = [16, 32, 64, 128, 256]
LOADS = [4, 8, 16, 64]
ZOO = "synth"


def _phase(i: int, j: int) -> str | None:
    if (i, j) == (4, 3):
        return None  # one unknown cell
    if i >= 3:
        return "I" if j < 2 else "II"
    if j == 0:
        return "III"
    return "IV-A" if i + j < 3 else "IV-B"


def synthetic_cells() -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    for i, t in enumerate(TEMPS):
        for j, w in enumerate(LOADS):
            trace = float(10 ** rng.uniform(0, 3))
            rows.append(
                {
                    "zoo": ZOO,
                    "cell": f"T{i}L{j}",
                    "temperature_param": "batch_size",
                    "temperature": float(t),
                    "load_param": "width",
                    "load": float(w),
                    "test_acc": 0.5 + 0.1 * j - 0.05 * i,
                    "test_loss": 1.0 + 0.1 * i,
                    "train_loss": 0.05 * (i + 1) / (j + 1),
                    "train_error": 0.01 * i,
                    "hessian_top_eig": float(rng.uniform(1, 300)),
                    "hessian_trace": trace,
                    "log_hessian_trace": math.log10(trace),
                    "cka_logits": float(rng.uniform(0.3, 1.0)),
                    "cka_features": float("nan"),  # all NaN: no figure for it
                    "mc_loss": float(rng.uniform(-2.0, 0.5)),
                    "mc_error": float(rng.uniform(-0.3, 0.1)),
                    "phase": _phase(i, j),
                }
            )
    rows[3]["test_acc"] = float("nan")
    rows[7]["mc_loss"] = float("nan")
    rows[12]["hessian_top_eig"] = float("nan")
    return rows


def _check_png(path, min_px: int = 200) -> None:
    assert path.exists(), path
    assert path.read_bytes()[:8] == PNG_SIGNATURE, path
    img = imread(path)
    assert img.ndim == 3 and img.shape[2] in (3, 4)
    assert min_px <= img.shape[0] <= 4000 and min_px <= img.shape[1] <= 4000, img.shape


def test_plot_zoo_writes_every_png(tmp_path):
    cells = synthetic_cells()
    assert {r["phase"] for r in cells} >= set(plots.PHASES)
    out = tmp_path / "figures"
    paths = plots.plot_zoo(cells, ZOO, out)

    absent = ("cka_features", "test_rel_l2")  # no finite value (a classification zoo has no rel_l2) -> no figure
    expected = [out / f"{ZOO}-phases.png"] + [out / f"{ZOO}-{m}.png" for m in plots.METRICS if m not in absent]
    assert paths == expected
    for p in paths:
        _check_png(p)
    for m in absent:
        assert not (out / f"{ZOO}-{m}.png").exists()
    assert not list(out.glob("*.tmp"))
    assert sorted(out.iterdir()) == sorted(expected)


def test_table_kinds_give_the_same_figure(tmp_path):
    rows = synthetic_cells()
    rows.append({**rows[0], "zoo": "other", "test_acc": 0.0})  # another zoo's row is ignored
    pngs = [
        plots.heatmap(cells, "test_acc", ZOO, tmp_path / f"{kind}.png").read_bytes()
        for kind, cells in (("records", rows), ("pandas", pd.DataFrame(rows)), ("arrow", pa.Table.from_pylist(rows)))
    ]
    assert pngs[0][:8] == PNG_SIGNATURE
    assert pngs[0] == pngs[1] == pngs[2]
    with pytest.raises(ValueError, match="other"):
        plots.phase_map(rows, "missing", tmp_path / "m.png")


def _tile(ax, ix: int, iy: int):
    """The phase-colored Rectangle of tile (ix, iy) on a phase map's axes."""
    from matplotlib.patches import Rectangle

    found = [p for p in ax.patches if isinstance(p, Rectangle) and tuple(p.get_xy()) == (ix - 0.5, iy - 0.5)]
    assert len(found) == 1, (ix, iy, found)
    return found[0]


def test_phase_map_hatches_uncertain_cells(tmp_path):
    from matplotlib.colors import to_hex

    rows = synthetic_cells()
    for r in rows:
        r["phase_uncertain"] = r["cell"] in ("T0L1", "T3L0")  # IV-A and I
    rows[5]["phase_uncertain"] = None  # T1L1: no flag (an older table) -> drawn as certain
    fig = plots.phase_map_figure(rows, ZOO, margin_bound=1.0)
    ax = fig.axes[0]
    for (ix, iy), phase, hatched in (((0, 1), "IV-A", True), ((3, 0), "I", True), ((0, 0), "III", False),
                                     ((1, 1), "IV-A", False), ((4, 1), "I", False)):
        tile = _tile(ax, ix, iy)
        assert to_hex(tile.get_facecolor()) == plots.PHASE_COLORS[phase]  # the phase color stays under the hatching
        assert (tile.get_hatch() == plots.UNCERTAIN_HATCH) is hatched, (ix, iy)
        if not hatched:
            assert not tile.get_hatch()
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "hatched: margin < 1 seed spread or unknown (uncertain)" in legend
    # no uncertain cell (or no flag at all): nothing hatched, no legend entry
    for table in ([{**r, "phase_uncertain": False} for r in rows], [{k: v for k, v in r.items() if k != "phase_uncertain"}
                                                                   for r in rows]):
        ax = plots.phase_map_figure(table, ZOO).axes[0]
        assert not _tile(ax, 0, 1).get_hatch()
        assert not any("hatched" in t.get_text() for t in ax.get_legend().get_texts())
    _check_png(plots.phase_map(rows, ZOO, tmp_path / "p.png"))


def test_heatmap_unknown_metric(tmp_path):
    with pytest.raises(ValueError, match="test_acc"):
        plots.heatmap(synthetic_cells(), "accuracy", ZOO, tmp_path / "x.png")
    assert not list(tmp_path.iterdir())


def test_heatmap_all_nan_and_single_cell(tmp_path):
    rows = synthetic_cells()[:1]
    rows[0]["mc_loss"] = float("nan")
    _check_png(plots.heatmap(rows, "mc_loss", ZOO, tmp_path / "one.png"), min_px=100)


def test_axis_labels():
    lr_cells = [
        {"zoo": ZOO, "cell": f"T{i}L{j}", "temperature_param": "lr", "temperature": lr,
         "load_param": "data_fraction", "load": f, "test_acc": 0.5}
        for i, lr in enumerate([1e-3, 1e-2, 1e-1])
        for j, f in enumerate([0.25, 0.5, 0.75, 1.0])
    ]
    grid = plots.phase_grid(lr_cells, ZOO)
    assert grid.xlabel == "temperature: lr (log scale)"
    assert grid.ylabel == "load: data_fraction"  # linear, ratio < 10
    assert grid.xticklabels == ["0.001", "0.01", "0.1"]
    assert grid.shape == (4, 3)

    assert plots.axis_label("temperature", "lr", [1e-3, 1e-2, 1e-1]).endswith("(log scale)")
    assert plots.axis_label("temperature", "batch_size", TEMPS) == "temperature: batch_size (log scale)"
    assert "(log scale)" not in plots.axis_label("load", "width", [10, 20, 30, 40, 50, 60, 70, 80, 90, 100])
    assert "(log scale)" not in plots.axis_label("load", "label_noise", [0.0, 0.1, 0.2, 0.4])
    assert [plots.format_tick(v) for v in (16, 0.001, 1e-4, 2.5e-5, 0.25, 3e5)] == ["16", "0.001", "1e-4", "2.5e-5", "0.25", "3e5"]


def test_learning_curves_deduplicates_checkpoints(tmp_path):
    rows = []
    epochs = 6
    for i, t in enumerate(TEMPS[:3]):
        for j, w in enumerate(LOADS[:3]):
            for seed in range(3):
                curve = [0.1 + 0.8 * (1 - math.exp(-(e + 1) * (i + j + 1) / 4)) + 0.01 * seed for e in range(epochs + 1)]
                for epoch in (0, 3, epochs):  # one row per checkpoint, same curve
                    rows.append({"model_id": f"m{i}{j}{seed}", "zoo": ZOO, "cell": f"T{i}L{j}",
                                 "temperature_param": "batch_size", "temperature": float(t),
                                 "load_param": "width", "load": float(w), "seed": seed, "epoch": epoch,
                                 "curve_test_acc": curve})
    assert len(plots.model_rows(rows, ZOO)) == 3 * 3 * 3  # 81 checkpoint rows, 27 models
    assert (plots.model_rows(rows, ZOO)["epoch"] == epochs).all()
    path = plots.learning_curves(pa.Table.from_pylist(rows), ZOO, tmp_path / f"{ZOO}-curves.png")
    _check_png(path)
    assert not list(tmp_path.glob("*.tmp"))
    # without model_id: deduplicated by (cell, seed)
    no_id = [{k: v for k, v in r.items() if k != "model_id"} for r in rows if r["cell"] in ("T0L0", "T1L0")]
    assert len(plots.model_rows(no_id, ZOO)) == 2 * 3
    _check_png(plots.learning_curves(no_id, ZOO, tmp_path / "b.png"))
    with pytest.raises(ValueError, match="test_acc"):
        plots.learning_curves(rows, ZOO, tmp_path / "c.png", metric="train_loss")


def sampled_cells(n: int = 60, duplicates: bool = False) -> list[dict]:
    """Cells of a sampled plane (lr continuous, a few widths); with `duplicates`, two
    architectures at every point (a sampled-architecture zoo)."""
    rng = np.random.default_rng(1)
    rows = []
    for k in range(n):
        lr, w = float(10 ** rng.uniform(-3, -1)), float(rng.choice([8, 32, 128]))
        for a in ("a", "b") if duplicates else ("",):
            rows.append({"zoo": ZOO, "cell": f"P{k:05d}{'-' + a if a else ''}", "temperature_param": "lr",
                         "temperature": lr, "load_param": "width", "load": w,
                         "test_acc": float(rng.uniform(0.2, 0.5)), "mc_loss": float(rng.uniform(-1, 0.5)),
                         "phase": list(plots.PHASES)[k % 5], "phase_uncertain": bool(k % 7 == 0)})
    return rows


def test_is_grid_tells_a_plane_of_tiles_from_a_sampled_one():
    assert plots.is_grid(synthetic_cells())
    assert not plots.is_grid(sampled_cells())
    assert not plots.is_grid(sampled_cells(10, duplicates=True))
    assert not plots.is_grid(synthetic_cells()[:-1])  # a missing cell: not a full product


@pytest.mark.parametrize("duplicates", [False, True])
def test_sampled_plane_is_drawn_as_scatter(tmp_path, duplicates):
    cells = sampled_cells(40, duplicates)
    paths = plots.plot_zoo(cells, ZOO, tmp_path)
    assert [p.name for p in paths] == [f"{ZOO}-phases.png", f"{ZOO}-test_acc.png", f"{ZOO}-mc_loss.png"]
    for p in paths:
        _check_png(p)
    fig = plots.phase_scatter_figure(cells, ZOO)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_xlabel() == "temperature: lr (log scale)"
    offsets = np.concatenate([c.get_offsets() for c in ax.collections if len(c.get_offsets())])
    assert len(offsets) == len(cells)  # every cell one marker, none lost
    assert len({tuple(o) for o in offsets}) == len(cells)  # shared points spread apart
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(t.startswith("ring: margin < 1 seed spread") for t in labels)
    counts = {t.split(":")[0]: int(t.rsplit("(", 1)[1].rstrip(")")) for t in labels if not t.startswith("ring")}
    assert sum(counts.values()) == len(cells)


def test_learning_curves_by_phase(tmp_path):
    rows = []
    for k, c in enumerate(sampled_cells(20)):
        for seed in (0, 1):
            rows.append({**c, "model_id": f"m{k}-{seed}", "seed": seed, "epoch": 3,
                         "curve_test_acc": [0.1, 0.2 + 0.01 * k, 0.3]})
    path = plots.learning_curves_by_phase(rows, ZOO, tmp_path / "curves.png", per_panel=5)
    _check_png(path)
