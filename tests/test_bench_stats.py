"""The benchmarks' shared statistics: a median with a seeded percentile-bootstrap interval."""
from __future__ import annotations

import pytest

from bench.stats import median_ci, rounded


def test_median_and_interval_known_answers():
    assert median_ci([2.0]) == (2.0, 2.0, 2.0)
    med, lo, hi = median_ci([1.0, 2.0, 3.0, 4.0, 100.0])
    # 5 samples: a resample's median is the smallest sample with probability 5.8% > 2.5%, so the
    # interval is the whole range
    assert (med, lo, hi) == (3.0, 1.0, 100.0)
    # 7 samples: the 95% interval of the median drops the extremes (they are a resample's median
    # with probability < 2.5%)
    med, lo, hi = median_ci([5.0, 1.0, 7.0, 3.0, 2.0, 6.0, 4.0])
    assert med == 4.0 and lo == 2.0 and hi == 6.0


def test_interval_is_reproducible_and_rounded():
    xs = [0.93, 1.39, 1.02, 1.03, 1.24, 0.96, 1.25]
    assert median_ci(xs) == median_ci(xs)
    assert rounded(median_ci(xs), 2) == {"median": 1.03, "ci95": [0.96, 1.25]}
    with pytest.raises(ValueError, match="non-empty 1-d"):
        median_ci([])
