"""Summary statistics the benchmarks share: a median with a bootstrap 95% interval.

Every benchmark claim is a median over repeats with a percentile-bootstrap interval of that
median (resample the repeats with replacement, take each resample's median, read the 2.5% and
97.5% quantiles). The resampling uses a fixed numpy seed, so a rerun with the same samples
prints the same interval. With few repeats the interval is coarse: up to 5 samples it is their
whole range (a resample's median is the smallest sample with probability 5.8% > 2.5% at n = 5),
from 7 on it drops the extremes (7 samples: 2nd smallest to 2nd largest). It says how much the
repeats disagreed on this machine, not how the number would move on another one.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["BOOTSTRAP_SEED", "median_ci", "rounded"]

BOOTSTRAP_SEED = 0
N_RESAMPLES = 10_000


def median_ci(samples: Sequence[float], level: float = 0.95, n_resamples: int = N_RESAMPLES,
              seed: int = BOOTSTRAP_SEED) -> tuple[float, float, float]:
    """(median, low, high): the samples' median and its percentile-bootstrap `level` interval.

    One sample gives (x, x, x). NaN in the samples propagates (a NaN median, NaN bounds).
    """
    a = np.asarray(samples, dtype=np.float64)  # (n,)
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"median_ci needs a non-empty 1-d list of samples, got shape {a.shape}")
    med = float(np.median(a))
    if a.size == 1:
        return med, med, med
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, a.size, size=(n_resamples, a.size))  # (resamples, n)
    meds = np.median(a[idx], axis=1)  # (resamples,)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(meds, [alpha, 1.0 - alpha])
    return med, float(low), float(high)


def rounded(stat: tuple[float, float, float], digits: int = 4) -> dict:
    """{"median", "ci95": [low, high]} rounded for a JSON line."""
    med, low, high = stat
    return {"median": round(med, digits), "ci95": [round(low, digits), round(high, digits)]}
