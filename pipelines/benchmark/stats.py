"""Medians with bootstrap confidence intervals over cases and seeds, the statistics of the summary.

A benchmark number is a median over cases of a per-case median over seeds (a case's speedup is the
median over its seeds; the summary's is the median over cases). Its interval comes from the
two-stage (hierarchical) bootstrap: resample the cases with replacement, then within each drawn
case resample its seeds with replacement, and recompute the statistic; the 95% interval is the
2.5 and 97.5 percentiles of the replicates. Both sources of spread (which cases, which seeds) are in
it, so a margin inside the interval is one another machine or another seed list can undo.
"""
from __future__ import annotations

import math

import numpy as np

N_BOOT = 2000
LEVEL = 0.95


def _clean(groups: list[list[float]]) -> list[list[float]]:
    out = []
    for g in groups:
        g = [float(x) for x in g if x is not None and math.isfinite(float(x))]
        if g:
            out.append(g)
    return out


def median_of_medians(groups: list[list[float]]) -> float | None:
    """The median over groups (cases) of each group's median (over seeds); non-finite values and
    empty groups are left out. None when nothing is left."""
    g = _clean(groups)
    return float(np.median([np.median(x) for x in g])) if g else None


def bootstrap_ci(groups: list[list[float]], n_boot: int = N_BOOT, level: float = LEVEL,
                 seed: int = 0) -> list[float] | None:
    """The percentile interval [lo, hi] of median_of_medians under the two-stage bootstrap
    (cases, then seeds within a case), from a fixed seed so a results.json is reproducible.
    None when no group has a finite value."""
    g = _clean(groups)
    if not g:
        return None
    rng = np.random.default_rng(seed)
    n_cases, width = len(g), max(len(x) for x in g)
    vals = np.full((n_cases, width), np.nan)
    counts = np.array([len(x) for x in g])
    for i, x in enumerate(g):
        vals[i, : len(x)] = x
    cases = rng.integers(0, n_cases, size=(n_boot, n_cases))  # stage 1: which cases
    k = counts[cases]  # (B, C) seeds in each drawn case
    picks = np.floor(rng.random((n_boot, n_cases, width)) * k[..., None]).astype(int)  # stage 2: which seeds
    drawn = vals[cases[..., None], picks]
    drawn[np.arange(width)[None, None, :] >= k[..., None]] = np.nan  # a case draws as many seeds as it has
    stat = np.median(np.nanmedian(drawn, axis=2), axis=1)
    a = (1 - level) / 2
    lo, hi = np.quantile(stat, [a, 1 - a])
    return [float(lo), float(hi)]
