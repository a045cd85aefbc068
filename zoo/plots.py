"""Figures of a zoo's phase plane: metric heatmaps, the phase map, learning curves.

    from zoo.plots import plot_zoo
    plot_zoo(cells, "mlp_mnist1d", Path("build/phases/figures"))   # -> [<zoo>-phases.png, <zoo>-<metric>.png, ...]

`cells` is the per-cell table of the metrics stage (one row per (temperature, load) cell), as a
list of dicts, a pyarrow Table or a pandas DataFrame. The plane is drawn as in the phase-zoo
papers (Yang et al. 2021; Schürholt et al. 2025): temperature on the horizontal axis, load on
the vertical axis (increasing upwards), one equal-size tile per cell at its axis index, so a
geometric axis (batch sizes 16..256, learning rates 1e-3..1e-1) is log-spaced implicitly; the
axis label says "(log scale)" then.

Rendering uses `matplotlib.figure.Figure` with an Agg canvas directly: nothing here touches
pyplot's global state or the user's interactive backend. Every PNG is written to a temporary
name in its folder and renamed into place, so a reader never sees a half-written file.
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm, Normalize, TwoSlopeNorm, to_rgba
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import NullFormatter

__all__ = [
    "METRICS",
    "PHASES",
    "PHASE_COLORS",
    "MetricStyle",
    "Grid",
    "heatmap",
    "phase_map",
    "phase_map_figure",
    "UNCERTAIN_HATCH",
    "plot_zoo",
    "learning_curves",
    "axis_label",
    "is_log_spaced",
    "format_tick",
    "phase_grid",
    "model_rows",
    "is_grid",
    "heatmap_scatter",
    "phase_scatter_figure",
    "learning_curves_by_phase",
    "plane_map",
    "by_phase",
]

DPI = 120
TMP_SUFFIX = ".tmp"  # the same suffix zoo.store cleans up after an interrupted write


class MetricStyle(NamedTuple):
    """How a metric is drawn. `kind`: "higher" / "lower" (which end is better; the colormap
    puts the better end bright) or "diverging" (centred at 0, symmetric limits)."""

    title: str
    cmap: str
    kind: str


METRICS: dict[str, MetricStyle] = {
    "test_acc": MetricStyle("test accuracy", "viridis", "higher"),
    "test_rel_l2": MetricStyle("test relative L2 error", "viridis_r", "lower"),
    "train_loss": MetricStyle("train loss", "viridis_r", "lower"),
    "log_hessian_trace": MetricStyle("log10 Hessian trace", "magma_r", "lower"),
    "hessian_top_eig": MetricStyle("Hessian top eigenvalue", "magma_r", "lower"),
    "mc_loss": MetricStyle("mode connectivity (loss)", "RdBu", "diverging"),
    "mc_error": MetricStyle("mode connectivity (error)", "RdBu", "diverging"),
    "cka_logits": MetricStyle("CKA similarity (logits)", "cividis", "higher"),
    "cka_features": MetricStyle("CKA similarity (features)", "cividis", "higher"),
}

# Titles of the learning curves a zoo stores (zoo.store.CURVES), for learning_curves().
_CURVE_TITLES = {
    "train_loss": "train loss",
    "train_acc": "train accuracy",
    "test_loss": "test loss",
    "test_acc": "test accuracy",
    "train_rel_l2": "train relative L2 error",
    "test_rel_l2": "test relative L2 error",
}

PHASES: dict[str, str] = {
    "I": "under-trained, poorly connected",
    "II": "under-trained, well connected",
    "III": "trained, poorly connected (barrier)",
    "IV-A": "trained, well connected, low CKA",
    "IV-B": "trained, well connected, high CKA",
}
UNKNOWN = "unknown"
PHASE_COLORS: dict[str, str] = {
    "I": "#f28e62",  # orange: under-trained, barrier
    "II": "#f7d354",  # yellow: under-trained, connected
    "III": "#d98cc4",  # pink: trained, barrier
    "IV-A": "#6fc3a6",  # teal: trained, connected, low CKA
    "IV-B": "#8fa7d6",  # blue: trained, connected, high CKA
    UNKNOWN: "#e3e3e3",  # light grey, hatched
}
_NAN_COLOR = "#ececec"
_HATCH_EDGE = "#b5b5b5"
UNCERTAIN_HATCH = "///"  # over the phase color: the label is within the bound of its threshold
_UNCERTAIN_EDGE = "#555555"


# ---- input tables ----------------------------------------------------------------------------
def _to_frame(table: Any) -> pd.DataFrame:
    """A list of dicts, a pyarrow Table / RecordBatch, a pandas DataFrame (or anything with
    `to_pandas()`, e.g. a `datasets.Dataset`) -> a fresh pandas DataFrame."""
    if isinstance(table, pd.DataFrame):
        return table.copy()
    if hasattr(table, "to_pandas"):
        return table.to_pandas()
    if isinstance(table, dict):  # columns -> values
        return pd.DataFrame(table)
    return pd.DataFrame(list(table))


def _require(df: pd.DataFrame, columns: list[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what}: missing column(s) {missing}; columns present: {sorted(map(str, df.columns))}")


def _select_zoo(df: pd.DataFrame, zoo: str | None, what: str) -> pd.DataFrame:
    """Rows of `zoo` when the table has a zoo column naming it; a single-zoo table is used whole."""
    if zoo is None or "zoo" not in df.columns or df.empty:
        return df
    mine = df[df["zoo"] == zoo]
    if len(mine):
        return mine
    zoos = sorted({str(z) for z in df["zoo"].dropna().unique()})
    if len(zoos) > 1:
        raise ValueError(f"{what}: no rows for zoo {zoo!r}; zoos in the table: {zoos}")
    return df


def _cells_frame(cells: Any, zoo: str | None) -> pd.DataFrame:
    df = _select_zoo(_to_frame(cells), zoo, "cells")
    _require(df, ["temperature", "load"], "cells")
    if "log_hessian_trace" not in df.columns and "hessian_trace" in df.columns:
        tr = pd.to_numeric(df["hessian_trace"], errors="coerce").to_numpy(dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            df["log_hessian_trace"] = np.where(tr > 0, np.log10(tr), np.nan)
    return df


# ---- axes: ticks and labels --------------------------------------------------------------------
def _clean_exponent(s: str) -> str:
    # "1e-04" -> "1e-4", "2.5e+05" -> "2.5e5"
    return re.sub(r"e([+-])0*(\d+)", lambda m: "e" + ("-" if m.group(1) == "-" else "") + m.group(2), s)


def _sci(v: float) -> str:
    # 1e-4, 2.5e-5, 3e5: two significant digits, no padding in the exponent
    m, e = f"{v:.1e}".split("e")
    m = m.rstrip("0").rstrip(".")
    return f"{m}e{int(e)}"


def format_tick(v: float) -> str:
    """Compact tick label of an axis value: 16, 0.25, 0.001, 1e-4, 3e5."""
    v = float(v)
    if not math.isfinite(v):
        return str(v)
    if v == 0:
        return "0"
    a = abs(v)
    if v == round(v) and a < 1e5:
        return str(int(round(v)))
    if 1e-3 <= a < 1e4:
        return _clean_exponent(f"{v:.3g}")
    return _sci(v)


def _format_value(v: float) -> str:
    """A metric value for a tile: 2-3 significant digits, short."""
    v = float(v)
    if v == 0:
        return "0"
    a = abs(v)
    if 0.01 <= a < 1000:
        return f"{v:.3g}"
    if 1e-3 <= a < 0.01:
        return f"{v:.2g}"
    return _sci(v)


def is_log_spaced(values) -> bool:
    """True when the values are geometric: all positive, max/min >= 10, and more evenly spaced
    in log than in linear scale (roughly a constant ratio between neighbours)."""
    v = np.unique(np.asarray([float(x) for x in values], dtype=float))
    v = v[np.isfinite(v)]
    if len(v) < 2 or np.any(v <= 0) or v.max() / v.min() < 10:
        return False
    if len(v) == 2:
        return True

    def spread(d: np.ndarray) -> float:  # coefficient of variation of the steps
        return float(np.std(d) / np.mean(d))

    log_spread = spread(np.diff(np.log(v)))
    return log_spread <= 0.5 and log_spread < spread(np.diff(v))


def axis_label(axis: str, param: str, values) -> str:
    """"temperature: batch_size (log scale)": the axis, its hyperparameter, and a note when the
    values are geometric (tiles sit at equal spacing by index, so such an axis is log-spaced)."""
    label = f"{axis}: {param}" if param and param != axis else axis
    if is_log_spaced(values):
        label += " (log scale)"
    return label


def _param_name(df: pd.DataFrame, column: str, default: str) -> str:
    if column not in df.columns:
        return default
    names = [str(x) for x in pd.unique(df[column].dropna()) if str(x)]
    return "/".join(names) if names else default


@dataclass
class Grid:
    """The phase plane of a table: sorted axis values and each row's tile index."""

    temperatures: list[float]
    loads: list[float]
    temperature_param: str
    load_param: str
    xlabel: str
    ylabel: str
    frame: pd.DataFrame = field(repr=False)  # the rows, with integer columns _ix, _iy

    @property
    def shape(self) -> tuple[int, int]:  # (rows = loads, columns = temperatures)
        return len(self.loads), len(self.temperatures)

    @property
    def xticklabels(self) -> list[str]:
        return [format_tick(t) for t in self.temperatures]

    @property
    def yticklabels(self) -> list[str]:
        return [format_tick(x) for x in self.loads]


def phase_grid(table: Any, zoo: str | None = None) -> Grid:
    """Grid of a per-cell (or per-model) table: x = temperature, y = load, tiles by index."""
    df = _select_zoo(table if isinstance(table, pd.DataFrame) else _to_frame(table), zoo, "cells")
    _require(df, ["temperature", "load"], "cells")
    df = df.copy()
    df["temperature"] = pd.to_numeric(df["temperature"], errors="coerce").astype(float)
    df["load"] = pd.to_numeric(df["load"], errors="coerce").astype(float)
    df = df[np.isfinite(df["temperature"]) & np.isfinite(df["load"])]
    if df.empty:
        raise ValueError(f"cells{f' of zoo {zoo!r}' if zoo else ''}: no rows with a temperature and a load")
    temps = sorted(set(df["temperature"].tolist()))
    loads = sorted(set(df["load"].tolist()))
    df["_ix"] = df["temperature"].map({t: i for i, t in enumerate(temps)}).astype(int)
    df["_iy"] = df["load"].map({x: j for j, x in enumerate(loads)}).astype(int)
    tparam = _param_name(df, "temperature_param", "temperature")
    lparam = _param_name(df, "load_param", "load")
    return Grid(
        temperatures=temps,
        loads=loads,
        temperature_param=tparam,
        load_param=lparam,
        xlabel=axis_label("temperature", tparam, temps),
        ylabel=axis_label("load", lparam, loads),
        frame=df,
    )


# ---- drawing helpers ---------------------------------------------------------------------------
def _new_figure(figsize: tuple[float, float]) -> Figure:
    fig = Figure(figsize=figsize, dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> Path:
    """Render to `<name>.<pid>.tmp` beside `path`, then rename into place; frees the figure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}{TMP_SUFFIX}")
    try:
        fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight", pad_inches=0.15, facecolor="white")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
        fig.clear()
    return path


def _plane_figsize(nx: int, ny: int, extra_w: float) -> tuple[float, float]:
    tile = 1.0 if max(nx, ny) <= 6 else 0.85
    return (max(4.0, tile * nx) + extra_w, max(3.2, tile * ny) + 1.3)


def _tile_fontsize(nx: int, ny: int) -> float:
    n = max(nx, ny)
    return 9.0 if n <= 6 else (8.0 if n <= 8 else 6.5)


def _setup_plane(ax, grid: Grid) -> None:
    ny, nx = grid.shape
    ax.set_xlim(-0.5, nx - 0.5)
    ax.set_ylim(-0.5, ny - 0.5)  # load increases upwards
    ax.set_aspect("equal")
    ax.set_xticks(range(nx), grid.xticklabels)
    ax.set_yticks(range(ny), grid.yticklabels)
    if max(len(s) for s in grid.xticklabels) > 5:
        for lab in ax.get_xticklabels():
            lab.set_rotation(30)
            lab.set_horizontalalignment("right")
    ax.set_xlabel(grid.xlabel)
    ax.set_ylabel(grid.ylabel)
    ax.tick_params(length=0)
    # white lines between tiles
    ax.set_xticks(np.arange(-0.5, nx, 1.0), minor=True)
    ax.set_yticks(np.arange(-0.5, ny, 1.0), minor=True)
    ax.tick_params(which="minor", length=0)
    ax.grid(which="minor", color="white", linewidth=1.5)
    ax.grid(which="major", visible=False)
    for s in ax.spines.values():
        s.set_visible(False)


def _text_color(rgba) -> str:
    r, g, b = (c if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in to_rgba(rgba)[:3])
    lum = 0.2126 * r + 0.7152 * g + 0.0722 * b  # relative luminance (WCAG)
    return "black" if lum > 0.179 else "white"  # the higher WCAG contrast ratio


def _nan_tile(ax, ix: int, iy: int, fontsize: float, text: str = "n/a") -> None:
    ax.add_patch(
        Rectangle((ix - 0.5, iy - 0.5), 1, 1, facecolor=_NAN_COLOR, edgecolor=_HATCH_EDGE, hatch="///", linewidth=0, zorder=1)
    )
    ax.text(
        ix, iy, text, ha="center", va="center", fontsize=fontsize, color="#555555", zorder=3,
        bbox=dict(boxstyle="round,pad=0.15", facecolor=_NAN_COLOR, edgecolor="none"),
    )


def _metric_norm(values: np.ndarray, kind: str):
    finite = values[np.isfinite(values)]
    if kind == "diverging":
        m = float(np.max(np.abs(finite))) if finite.size else 1.0
        m = m if m > 0 else 1.0
        return TwoSlopeNorm(vcenter=0.0, vmin=-m, vmax=m)
    if not finite.size:
        return Normalize(0.0, 1.0)
    lo, hi = float(finite.min()), float(finite.max())
    if lo > 0 and hi / lo >= 100:  # positive and spanning decades (train loss, top eigenvalue)
        return LogNorm(lo, hi)
    if hi <= lo:
        pad = abs(lo) * 0.05 or 0.5
        lo, hi = lo - pad, hi + pad
    return Normalize(lo, hi)


def _colorbar(cb, style: MetricStyle, norm) -> None:
    """Label a metric's colorbar with its title and how the colors scale."""
    note = " (centred at 0)" if style.kind == "diverging" else (" (log color scale)" if isinstance(norm, LogNorm) else "")
    cb.set_label(style.title + note)
    cb.outline.set_visible(False)


# ---- sampled planes --------------------------------------------------------------------------
def is_grid(table: Any, zoo: str | None = None) -> bool:
    """True when the table is one row per cell of a full (temperature x load) product: drawn as
    tiles. A sampled plane (--phase random) or a plane with several architectures per cell is
    drawn as a scatter over the axes' values instead."""
    df = _select_zoo(table if isinstance(table, pd.DataFrame) else _to_frame(table), zoo, "cells")
    _require(df, ["temperature", "load"], "cells")
    pts = set(zip(df["temperature"].astype(float), df["load"].astype(float)))
    n_t, n_l = df["temperature"].nunique(), df["load"].nunique()
    return len(pts) == len(df) == n_t * n_l


def _scatter_axes(ax, df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Set up value axes (log where the values are positive and span a decade) and return the
    points' coordinates; rows sharing a (temperature, load) point (several architectures) are
    spread on a small circle around it, so each stays visible."""
    x = pd.to_numeric(df["temperature"], errors="coerce").to_numpy(float)
    y = pd.to_numeric(df["load"], errors="coerce").to_numpy(float)
    logs = []
    for v, setter, axis in ((x, ax.set_xscale, ax.xaxis), (y, ax.set_yscale, ax.yaxis)):
        log = bool(np.all(v > 0) and v.max() / v.min() >= 10)
        setter("log" if log else "linear")
        if log:  # label the decades only: minor labels (2x10^-3, 3x10^-3, ...) run into each other
            axis.set_minor_formatter(NullFormatter())
        logs.append(log)
    key = pd.Series(list(zip(x, y)))
    rank = key.groupby(key).cumcount().to_numpy()
    count = key.map(key.value_counts()).to_numpy()
    angle = 2 * np.pi * rank / np.maximum(count, 1)
    r = np.where(count > 1, 0.035, 0.0)  # in decades (log) or fractions of the span
    out = []
    for v, log, trig in ((x, logs[0], np.cos), (y, logs[1], np.sin)):
        span = np.ptp(np.log10(v)) if log else np.ptp(v)
        d = r * trig(angle) * max(span, 1e-12)
        out.append(v * 10 ** d if log else v + d)
    tparam = _param_name(df, "temperature_param", "temperature")
    lparam = _param_name(df, "load_param", "load")
    ax.set_xlabel(f"temperature: {tparam}" + (" (log scale)" if logs[0] else ""))
    ax.set_ylabel(f"load: {lparam}" + (" (log scale)" if logs[1] else ""))
    ax.grid(True, color="#e6e6e6", linewidth=0.6)
    ax.set_axisbelow(True)
    return out[0], out[1]


def _marker_size(n: int) -> float:
    """Dot area (points²): large for a few cells, down to 14 for a thousand."""
    return float(np.clip(14000 / max(n, 1), 14, 90))


def heatmap_scatter(cells: Any, metric: str, zoo: str, path: Path, style: MetricStyle | None = None) -> Path:
    """One metric over a sampled plane: one dot per cell/point, colored by its value. `style`
    draws a column METRICS does not know (a study's result)."""
    style = style or METRICS[metric]
    df = _cells_frame(cells, zoo)
    v = pd.to_numeric(df.get(metric, pd.Series(np.nan, index=df.index)), errors="coerce").to_numpy(float)
    fig = _new_figure((7.2, 5.0))
    ax = fig.add_subplot()
    x, y = _scatter_axes(ax, df)
    ok = np.isfinite(v)
    size = _marker_size(len(df))
    ax.scatter(x[~ok], y[~ok], s=size, facecolor=_NAN_COLOR, edgecolor=_HATCH_EDGE, linewidth=0.6, label="n/a")
    norm = _metric_norm(v, style.kind)
    sc = ax.scatter(x[ok], y[ok], s=size, c=v[ok], cmap=colormaps[style.cmap], norm=norm, edgecolor="none")
    _colorbar(fig.colorbar(sc, ax=ax), style, norm)
    ax.set_title(f"{zoo}: {style.title} ({ok.sum()} of {len(df)} cells)")
    return _save(fig, path)


def phase_scatter_figure(cells: Any, zoo: str, margin_bound: float = 1.0) -> Figure:
    """The phases of a sampled plane: one dot per cell/point in its phase color; an uncertain
    label (margin below `margin_bound` seed spreads) is drawn as a ring of that color; the legend
    counts each phase."""
    df = _cells_frame(cells, zoo)
    phase = [_normalize_phase(p) for p in df.get("phase", pd.Series([None] * len(df)))]
    unsure = np.array([_is_true(u) for u in df.get("phase_uncertain", pd.Series([None] * len(df)))])
    fig = _new_figure((8.6, 5.2))
    ax = fig.add_subplot()
    x, y = _scatter_axes(ax, df)
    size = _marker_size(len(df))
    handles = []
    for lab in (*PHASES, UNKNOWN):
        sel = np.array([p == lab for p in phase])
        if not sel.any():
            continue
        sure, ring = sel & ~unsure, sel & unsure
        color = PHASE_COLORS[lab]
        ax.scatter(x[sure], y[sure], s=size, facecolor=color, edgecolor="#444444", linewidth=0.3, zorder=2)
        ax.scatter(x[ring], y[ring], s=size, facecolor="white", edgecolor=color, linewidth=1.6, zorder=2)
        meaning = PHASES.get(lab, "no label")
        handles.append(Patch(facecolor=color, edgecolor="#444444", label=f"{lab}: {meaning} ({sel.sum()})"))
    if unsure.any():
        handles.append(Patch(facecolor="white", edgecolor="#444444", linewidth=1.6,
                             label=f"ring: margin < {margin_bound:g} seed spread or unknown ({unsure.sum()})"))
    ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False, title="phase (cells)",
              alignment="left", fontsize=8.5, title_fontsize=10)
    ax.set_title(f"{zoo}: phases of {len(df)} cells")
    return fig


def learning_curves_by_phase(rows: Any, zoo: str, path: Path, metric: str = "test_acc", per_panel: int = 60) -> Path:
    """Learning curves of a sampled plane: one panel per phase, at most `per_panel` models each
    (an even pick in model-id order, so the figure is the same on every draw), one thin line per model."""
    col = f"curve_{metric}"
    df = model_rows(rows, zoo, metric)
    df = df.assign(_phase=[_normalize_phase(p) for p in df.get("phase", pd.Series([None] * len(df)))])
    labs = [p for p in (*PHASES, UNKNOWN) if (df["_phase"] == p).any()]
    title = METRICS[metric].title if metric in METRICS else _CURVE_TITLES.get(metric, metric)
    fig = _new_figure((max(4.0, 2.6 * len(labs)) + 0.6, 3.4))
    axes = fig.subplots(1, len(labs), sharey=True, squeeze=False)[0]
    for ax, lab in zip(axes, labs):
        g = df[df["_phase"] == lab].sort_values("model_id" if "model_id" in df.columns else "seed")
        pick = g.iloc[np.unique(np.linspace(0, len(g) - 1, min(per_panel, len(g))).round().astype(int))]
        for curve in pick[col]:
            yv = _as_curve(curve)
            if yv.size:
                ax.plot(np.arange(yv.size), yv, color=PHASE_COLORS[lab], linewidth=0.7, alpha=0.6)
        ax.set_title(f"{lab} ({len(g)} models)", fontsize=9)
        ax.grid(True, color="#e6e6e6", linewidth=0.6)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("epoch", fontsize=8)
    axes[0].set_ylabel(title, fontsize=9)
    fig.suptitle(f"{zoo}: learning curves by phase ({title}, up to {per_panel} models a panel)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    return _save(fig, path)


# ---- public figures ----------------------------------------------------------------------------
def heatmap(cells: Any, metric: str, zoo: str, path: Path, style: MetricStyle | None = None) -> Path:
    """PNG heatmap of one metric over the phase plane (x = temperature, y = load); returns path.
    `style` draws a column METRICS does not know (a study's result)."""
    if style is None and metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; valid metrics: {', '.join(METRICS)}")
    style = style or METRICS[metric]
    df = _cells_frame(cells, zoo)
    if metric not in df.columns:
        df[metric] = np.nan
    grid = phase_grid(df, zoo)
    ny, nx = grid.shape
    values = np.full((ny, nx), np.nan)
    f = grid.frame.assign(_v=pd.to_numeric(grid.frame[metric], errors="coerce").astype(float))
    for (iy, ix), v in f.groupby(["_iy", "_ix"])["_v"].mean().items():  # duplicate cells: mean
        values[iy, ix] = v

    norm = _metric_norm(values, style.kind)
    cmap = colormaps[style.cmap].with_extremes(bad=_NAN_COLOR)
    fig = _new_figure(_plane_figsize(nx, ny, extra_w=1.6))
    ax = fig.add_subplot()
    im = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, norm=norm, origin="lower", interpolation="nearest", zorder=0)
    _setup_plane(ax, grid)
    fs = _tile_fontsize(nx, ny)
    for iy in range(ny):
        for ix in range(nx):
            v = values[iy, ix]
            if not np.isfinite(v):
                _nan_tile(ax, ix, iy, fs)
                continue
            ax.text(ix, iy, _format_value(v), ha="center", va="center", fontsize=fs, color=_text_color(cmap(norm(v))), zorder=3)
    cax = ax.inset_axes([1.04, 0.0, 0.045 * 5 / max(nx, 5), 1.0])  # exactly as tall as the plane
    _colorbar(fig.colorbar(im, cax=cax), style, norm)
    ax.set_title(f"{zoo}: {style.title}")
    return _save(fig, path)


def _normalize_phase(p: Any) -> str:
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return UNKNOWN
    s = str(p).strip().upper().replace("_", "-").replace(" ", "")
    s = {"IVA": "IV-A", "IVB": "IV-B", "1": "I", "2": "II", "3": "III"}.get(s, s)
    return s if s in PHASES else UNKNOWN


def _is_true(v: Any) -> bool:
    """A stored flag: True / 1 count; None, NaN and a missing column do not (no claim made)."""
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return False
    return bool(v)


def phase_map_figure(cells: Any, zoo: str, margin_bound: float = 1.0) -> Figure:
    """The phase map as a Figure (phase_map saves it): one fixed color per phase, the label in
    each tile; a cell whose `phase_uncertain` is true (its deciding metric lies less than
    `margin_bound` seed spreads from its threshold, zoo.landscape.phases) is hatched '///' over
    its phase color, and the legend says what the hatching means."""
    df = _cells_frame(cells, zoo)
    if "phase" not in df.columns:
        df["phase"] = None
    if "phase_uncertain" not in df.columns:
        df["phase_uncertain"] = None  # a table from before the flag: nothing is hatched
    grid = phase_grid(df, zoo)
    ny, nx = grid.shape
    labels = [[None] * nx for _ in range(ny)]
    uncertain = [[False] * nx for _ in range(ny)]
    for ix, iy, p, u in zip(grid.frame["_ix"], grid.frame["_iy"], grid.frame["phase"], grid.frame["phase_uncertain"]):
        if labels[iy][ix] in (None, UNKNOWN):  # duplicate cells: the first labelled row, with its flag
            labels[iy][ix] = _normalize_phase(p)
            uncertain[iy][ix] = _is_true(u)

    fig = _new_figure(_plane_figsize(nx, ny, extra_w=3.6))
    ax = fig.add_subplot()
    _setup_plane(ax, grid)
    fs = _tile_fontsize(nx, ny) + 2
    seen, any_uncertain = set(), False
    for iy in range(ny):
        for ix in range(nx):
            lab = labels[iy][ix] or UNKNOWN
            seen.add(lab)
            if lab == UNKNOWN:
                _nan_tile(ax, ix, iy, fs, text="?")
                continue
            color, hatched = PHASE_COLORS[lab], uncertain[iy][ix]
            any_uncertain |= hatched
            ax.add_patch(Rectangle((ix - 0.5, iy - 0.5), 1, 1, facecolor=color, linewidth=0, zorder=1,
                                   hatch=UNCERTAIN_HATCH if hatched else None, edgecolor=_UNCERTAIN_EDGE))
            box = dict(boxstyle="round,pad=0.15", facecolor=color, edgecolor="none") if hatched else None
            ax.text(ix, iy, lab, ha="center", va="center", fontsize=fs, fontweight="bold", color="#222222", zorder=3, bbox=box)
    ax.set_axisbelow(False)  # keep the white tile separators on top of the patches
    handles = [Patch(facecolor=PHASE_COLORS[p], label=f"{p}: {meaning}") for p, meaning in PHASES.items()]
    if UNKNOWN in seen:
        handles.append(Patch(facecolor=_NAN_COLOR, edgecolor=_HATCH_EDGE, hatch="///", label="?: unknown (no label)"))
    if any_uncertain:
        handles.append(Patch(facecolor="white", edgecolor=_UNCERTAIN_EDGE, hatch=UNCERTAIN_HATCH,
                             label=f"hatched: margin < {margin_bound:g} seed spread or unknown (uncertain)"))
    ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.03, 0.5), frameon=False, title="phase", alignment="left",
              fontsize=9, title_fontsize=10, handlelength=1.6, handleheight=1.2)
    ax.set_title(f"{zoo}: phases")
    return fig


def phase_map(cells: Any, zoo: str, path: Path, margin_bound: float = 1.0) -> Path:
    """PNG of the phase labels on the plane (phase_map_figure), uncertain cells hatched."""
    return _save(phase_map_figure(cells, zoo, margin_bound), path)


def plane_map(cells: Any, metric: str, zoo: str, path: Path, style: MetricStyle) -> Path:
    """A column of a per-cell table over the plane: tiles for a full grid, dots otherwise."""
    df = _cells_frame(cells, zoo)
    return (heatmap if is_grid(df) else heatmap_scatter)(df, metric, zoo, path, style)


def by_phase(cells: Any, metric: str, zoo: str, path: Path, title: str, per_cell: str | None = None) -> Path:
    """Box plot of a per-cell column grouped by phase label (I, II, III, IV-A, IV-B, then
    unknown), every cell a dot over its phase's box; `per_cell` (a column of lists, e.g. the
    per-seed values) adds the cell's seeds as small grey dots. A dashed line marks 0."""
    df = _select_zoo(_to_frame(cells), zoo, "cells")
    _require(df, ["phase", metric], "cells")
    phases = df["phase"].map(_normalize_phase)
    order = [p for p in [*PHASES, UNKNOWN] if (phases == p).any()]
    fig = _new_figure((1.4 + 1.1 * max(len(order), 2), 4.2))
    ax = fig.add_subplot()
    rng = np.random.default_rng(0)  # the jitter of the dots: the same figure every run
    for i, p in enumerate(order):
        sel = df[phases == p]
        v = pd.to_numeric(sel[metric], errors="coerce").to_numpy(float)
        v = v[np.isfinite(v)]
        if per_cell and per_cell in sel.columns:
            seeds = np.array([float(x) for xs in sel[per_cell] if xs is not None for x in xs], dtype=float)
            seeds = seeds[np.isfinite(seeds)]
            ax.scatter(i + rng.uniform(-0.28, 0.28, seeds.size), seeds, s=6, color="#9a9a9a", zorder=2, linewidth=0)
        if v.size:
            ax.boxplot([v], positions=[i], widths=0.55, showfliers=False, patch_artist=True, zorder=1,
                       boxprops=dict(facecolor=PHASE_COLORS[p], edgecolor="#444444"),
                       medianprops=dict(color="black"), whiskerprops=dict(color="#444444"), capprops=dict(color="#444444"))
            ax.scatter(i + rng.uniform(-0.15, 0.15, v.size), v, s=18, color="black", zorder=3, linewidth=0)
    ax.axhline(0.0, color="#888888", linewidth=0.8, linestyle="--", zorder=0)
    ax.set_xticks(range(len(order)), [f"{p}\n({int((phases == p).sum())} cells)" for p in order])
    ax.set_xlim(-0.6, len(order) - 0.4)
    ax.set_xlabel("phase")
    ax.set_ylabel(title)
    ax.set_title(f"{zoo}: {title}, by phase", fontsize=10)
    ax.grid(axis="y", color="#e6e6e6", linewidth=0.6)
    ax.set_axisbelow(True)
    return _save(fig, path)


def plot_zoo(cells: Any, zoo: str, out_dir: Path, margin_bound: float = 1.0) -> list[Path]:
    """Write `<zoo>-phases.png` and `<zoo>-<metric>.png` for every metric of METRICS with at
    least one finite value into out_dir (created); returns the paths, phases first.
    `margin_bound`: the spec's metrics.phases.margin, named in the phase map's legend."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    df = _cells_frame(cells, zoo)
    grid = is_grid(df)
    phases = out_dir / f"{zoo}-phases.png"
    paths = [phase_map(df, zoo, phases, margin_bound) if grid else _save(phase_scatter_figure(df, zoo, margin_bound), phases)]
    for metric in METRICS:
        if metric not in df.columns:
            continue
        v = pd.to_numeric(df[metric], errors="coerce").to_numpy(dtype=float)
        if np.isfinite(v).any():
            draw = heatmap if grid else heatmap_scatter
            paths.append(draw(df, metric, zoo, out_dir / f"{zoo}-{metric}.png"))
    return paths


def _as_curve(x: Any) -> np.ndarray:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return np.array([], dtype=float)
    return np.asarray([np.nan if y is None else float(y) for y in x], dtype=float)


def model_rows(rows: Any, zoo: str | None, metric: str = "test_acc") -> pd.DataFrame:
    """One row per model of a per-model(-checkpoint) table: rows repeat per checkpoint epoch,
    so keep the latest epoch's row per model_id (or per (cell, seed) without a model_id)."""
    col = f"curve_{metric}"
    df = _select_zoo(_to_frame(rows), zoo, "rows")
    if col not in df.columns:
        have = sorted(c[len("curve_"):] for c in map(str, df.columns) if c.startswith("curve_"))
        raise ValueError(f"rows have no column {col!r}; learning curves present: {have or 'none'}")
    _require(df, ["temperature", "load"], "rows")
    if "seed" not in df.columns:
        df["seed"] = 0
    if "epoch" in df.columns:
        df = df.sort_values("epoch", kind="stable")
    if "model_id" in df.columns:
        key = ["model_id"]
    elif "cell" in df.columns:
        key = ["cell", "seed"]
    else:
        key = ["temperature", "load", "seed"]
    return df.drop_duplicates(subset=key, keep="last").reset_index(drop=True)


def learning_curves(rows: Any, zoo: str, path: Path, metric: str = "test_acc") -> Path:
    """Small multiples laid out like the phase plane (columns = temperature, rows = load, load
    increasing upwards): one subplot per cell, one line per seed, shared axes. `rows` is the
    per-model(-checkpoint) table; rows repeated per checkpoint epoch are counted once."""
    col = f"curve_{metric}"
    df = model_rows(rows, zoo, metric)
    grid = phase_grid(df, zoo)
    ny, nx = grid.shape
    title = METRICS[metric].title if metric in METRICS else _CURVE_TITLES.get(metric, metric)

    seeds = sorted(pd.unique(grid.frame["seed"]), key=lambda s: (str(type(s)), s))
    palette = colormaps["tab10"]
    seed_color = {s: palette(i % 10) for i, s in enumerate(seeds)}

    sub = 1.7 if max(nx, ny) <= 6 else 1.45
    fig = _new_figure((max(5.0, sub * nx + 1.2), max(3.5, sub * 0.8 * ny + 1.3)))
    axes = fig.subplots(ny, nx, sharex=True, sharey=True, squeeze=False)
    for iy in range(ny):
        for ix in range(nx):
            ax = axes[ny - 1 - iy][ix]
            ax.tick_params(labelsize=7)
            ax.grid(True, color="#e6e6e6", linewidth=0.6)
            if iy == ny - 1:
                ax.set_title(f"{grid.temperature_param}={grid.xticklabels[ix]}", fontsize=8)
            if ix == 0:
                ax.set_ylabel(f"{grid.load_param}={grid.yticklabels[iy]}", fontsize=8)
    for (ix, iy), g in grid.frame.groupby(["_ix", "_iy"]):
        ax = axes[ny - 1 - iy][ix]
        for s, curve in zip(g["seed"], g[col]):
            y = _as_curve(curve)
            if y.size:
                ax.plot(np.arange(y.size), y, color=seed_color[s], linewidth=1.1, alpha=0.9)
    occupied = set(zip(grid.frame["_ix"], grid.frame["_iy"]))
    for iy in range(ny):
        for ix in range(nx):
            if (ix, iy) not in occupied:
                axes[ny - 1 - iy][ix].text(0.5, 0.5, "n/a", transform=axes[ny - 1 - iy][ix].transAxes,
                                           ha="center", va="center", color="#888888", fontsize=8)
    fig.supxlabel(f"epoch   (columns: {grid.xlabel}; rows: {grid.ylabel})", fontsize=9)
    fig.supylabel(title, fontsize=9)
    fig.suptitle(f"{zoo}: learning curves, {title} (one line per seed)", fontsize=11)
    if 1 < len(seeds) <= 10:  # a legend row under the title, clear of it
        fig.legend(handles=[Patch(color=seed_color[s], label=f"seed {s}") for s in seeds], loc="upper center",
                   fontsize=7, frameon=False, ncol=min(len(seeds), 10), bbox_to_anchor=(0.5, 0.955))
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    return _save(fig, path)


# ---- PBT zoos (--phase pbt) ----------------------------------------------------------------------
_SCHEDULE_TITLES = {"lr": "learning rate", "batch_size": "batch size", "momentum": "momentum",
                    "weight_decay": "weight decay"}


def pbt_schedules(rows: Any, zoo: str, path: Path, coordinate: Callable[[dict], float] | None = None) -> Path:
    """The schedules PBT discovered: each member's hyperparameters per epoch (its last row's
    history, which runs through the members it copied), one panel per hyperparameter that
    changed, one color per load value; copies (exploits) marked with a dot. `coordinate`
    (hyperparameters -> temperature coordinate, zoo.pbt.temperature_coordinate) adds a panel of
    where on the plane's temperature axis each epoch's hyperparameters sit."""
    df = model_rows(rows, zoo, "test_acc")
    _require(df, ["schedule_lr", "lineage", "load"], "PBT rows")
    params = [p for p in _SCHEDULE_TITLES
              if f"schedule_{p}" in df.columns and any(len(set(_as_curve(s))) > 1 for s in df[f"schedule_{p}"])]
    params = params or ["lr"]
    tparam = _param_name(df, "temperature_param", "temperature")
    if coordinate is not None:
        df = df.copy()
        df["schedule_temperature"] = [
            [coordinate({k: row[f"schedule_{k}"][i] for k in _SCHEDULE_TITLES}) for i in range(len(row["schedule_lr"]))]
            for _, row in df.iterrows()]
        params.append("temperature")
    loads = sorted(set(df["load"].astype(float)))
    palette = colormaps["viridis"]
    color = {x: palette(i / max(1, len(loads) - 1)) for i, x in enumerate(loads)}
    lparam = _param_name(df, "load_param", "load")
    fig = _new_figure((4.2 * len(params) + 1.6, 3.6))
    axes = fig.subplots(1, len(params), squeeze=False)[0]
    for ax, p in zip(axes, params):
        for load, sched, lineage in zip(df["load"].astype(float), df[f"schedule_{p}"], df["lineage"]):
            y = _as_curve(sched)
            if not y.size:
                continue
            epochs = np.arange(1, y.size + 1)
            ax.step(epochs, y, where="post", color=color[load], linewidth=1.0, alpha=0.75)
            copies = [s["from_epoch"] for s in json.loads(lineage)[1:] if 0 < s["from_epoch"] <= y.size]
            ax.plot(copies, [y[e - 1] for e in copies], "o", color=color[load], markersize=3, alpha=0.9)
        if p in ("lr", "batch_size", "weight_decay", "temperature") and (_as_curve(df[f"schedule_{p}"].iloc[0]) > 0).all():
            ax.set_yscale("log", base=2 if "batch_size" in (p, tparam) and p != "lr" else 10)
        ax.set_xlabel("epoch")
        ax.set_title(_SCHEDULE_TITLES.get(p) or f"{tparam} at equal noise scale (plane coordinate)", fontsize=10)
        ax.grid(True, color="#e6e6e6", linewidth=0.6)
    handles = [Patch(color=color[x], label=f"{lparam}={format_tick(x)}") for x in loads]
    handles.append(Line2D([], [], marker="o", linestyle="", color="#444444", markersize=4, label="copied weights (exploit)"))
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, fontsize=8)
    fig.suptitle(f"{zoo}: schedules discovered by PBT (one line per member)", fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def _index_coordinate(values: list[float], v: np.ndarray) -> np.ndarray:
    """Fractional tile index of v on an axis of log-spaced tile values (linear in log between
    tiles, extended beyond the ends), so a point sits where its value lies on the tiles."""
    lv, x = np.log(np.asarray(values, dtype=float)), np.log(np.asarray(v, dtype=float))
    if len(lv) == 1:
        return np.zeros_like(x)
    idx = np.interp(x, lv, np.arange(len(lv)))
    lo, hi = x < lv[0], x > lv[-1]
    idx[lo] = (x[lo] - lv[0]) / (lv[1] - lv[0])
    idx[hi] = len(lv) - 1 + (x[hi] - lv[-1]) / (lv[-1] - lv[-2])
    return idx


def pbt_on_phase_map(grid_cells: Any, grid_zoo: str, rows: Any, zoo: str, path: Path, margin_bound: float = 1.0) -> Path:
    """Where the PBT members of `zoo` end up on the phase map of the grid zoo `grid_zoo` (same
    plane): each member's final hyperparameters at their temperature coordinate (zoo.pbt:
    the equal-noise-scale value of the axis), a faint line from where it started."""
    fig = phase_map_figure(grid_cells, grid_zoo, margin_bound)
    ax = fig.axes[0]
    grid = phase_grid(_cells_frame(grid_cells, grid_zoo), grid_zoo)
    df = _select_zoo(_to_frame(rows), zoo, "rows").sort_values("epoch", kind="stable")
    first = df.drop_duplicates("model_id", keep="first").set_index("model_id")
    last = df.drop_duplicates("model_id", keep="last").set_index("model_id")
    first = first.loc[last.index]
    rng = np.random.default_rng(0)
    jitter = rng.uniform(-0.3, 0.3, len(last))  # members of one load value spread across its row
    y = _index_coordinate(grid.loads, last["load"].to_numpy(float)) + jitter
    x0 = _index_coordinate(grid.temperatures, first["temperature"].to_numpy(float))
    x1 = _index_coordinate(grid.temperatures, last["temperature"].to_numpy(float))
    for a, b, yy in zip(x0, x1, y):
        ax.plot([a, b], [yy, yy], color="#333333", linewidth=0.6, alpha=0.45, zorder=4)
    ax.scatter(x0, y, s=10, facecolor="white", edgecolor="#333333", linewidth=0.6, zorder=5)
    ax.scatter(x1, y, s=16, color="#111111", zorder=6)
    ny, nx = grid.shape
    ax.set_xlim(min(-0.5, float(np.nanmin([x0.min(), x1.min()])) - 0.3),
                max(nx - 0.5, float(np.nanmax([x0.max(), x1.max()])) + 0.3))
    leg = ax.get_legend()
    handles = list(leg.legend_handles) if leg is not None else []
    handles += [Line2D([], [], marker="o", linestyle="", markerfacecolor="white", markeredgecolor="#333333",
                       markersize=4, label=f"{zoo} member: start"),
                Line2D([], [], marker="o", linestyle="", color="#111111", markersize=5, label="... and end")]
    ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.03, 0.5), frameon=False, fontsize=9)
    ax.set_title(f"{zoo} members on the phases of {grid_zoo}")
    return _save(fig, path)
