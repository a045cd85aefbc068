"""The init benchmark's statistics: medians over cases of per-case medians over seeds, and their
two-stage bootstrap interval, against distributions whose answer is known."""
from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from zoo.errors import ZooError

from pipelines.benchmark.protocol import Case, subset_cells
from pipelines.benchmark.run import default_seeds
from pipelines.benchmark.stats import bootstrap_ci, median_of_medians


def test_median_of_medians_drops_non_finite_values_and_empty_cases():
    assert median_of_medians([[1, 3], [10], [float("nan"), 7], [None], []]) == 7.0  # medians 2, 10, 7
    assert median_of_medians([[float("nan")]]) is None and bootstrap_ci([[None]]) is None


def test_one_case_with_equal_seeds_has_a_zero_width_interval():
    assert bootstrap_ci([[4.0, 4.0, 4.0]]) == [4.0, 4.0]
    assert bootstrap_ci([[1.0], [1.0]]) == [1.0, 1.0]


def test_interval_of_a_normal_median_has_the_known_width_and_coverage():
    """n cases of one seed from N(0, 1): the sample median's standard error is sqrt(pi/2)/sqrt(n),
    so the 95% interval is about 2 x 1.96 x 1.2533/sqrt(n) wide and covers the true median 0 in
    about 95% of repetitions."""
    rng = np.random.default_rng(0)
    n, reps = 200, 200
    widths, covered = [], 0
    for r in range(reps):
        x = rng.normal(size=n)
        lo, hi = bootstrap_ci([[v] for v in x], n_boot=400, seed=r)
        widths.append(hi - lo)
        covered += lo <= 0 <= hi
    expected = 2 * 1.96 * math.sqrt(math.pi / 2) / math.sqrt(n)
    assert np.median(widths) == pytest.approx(expected, rel=0.2)
    assert 0.88 <= covered / reps <= 0.99


def test_the_seeds_spread_widens_the_interval():
    """Cases that agree but whose seeds scatter: the two-stage interval is wider than the one of
    the per-case medians alone, since a case drawn again draws its seeds again."""
    rng = np.random.default_rng(1)
    groups = [list(5 + rng.normal(scale=3.0, size=5)) for _ in range(30)]
    medians_only = bootstrap_ci([[float(np.median(g))] for g in groups])
    both = bootstrap_ci(groups)
    assert both[1] - both[0] > medians_only[1] - medians_only[0]
    assert both[0] < 5 < both[1]
    assert bootstrap_ci(groups) == both  # a fixed seed: the same interval on a rerun


def test_default_seeds_start_with_the_zoos_members():
    class C:
        def __init__(self, seeds):
            self.members = [type("M", (), {"seed": s}) for s in seeds]

    assert default_seeds([C([3, 7])]) == [0, 1, 2, 3, 7]
    assert default_seeds([C([0, 1])]) == [0, 1, 2, 3, 4]
    assert default_seeds([C(range(9))], n=5) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("args, message", [
    (["--seeds", "1", "1"], "seeds must be distinct"),
    (["--threads", "0"], "--threads 0: must be at least 1"),
    (["--cells", "0"], "--cells 0: must be at least 1"),
])
def test_eval_cli_rejects_bad_seeds_threads_and_cells(args, message, tmp_path):
    r = subprocess.run([sys.executable, "-m", "pipelines.hypernet_cli", "eval", "--hypernet", str(tmp_path / "none"),
                        "--zoo", str(tmp_path), *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and message in r.stderr and r.stderr.count("\n") == 1, r.stderr


def _cases(widths_counts: dict[int, int]) -> list[Case]:
    out = []
    for w, n in widths_counts.items():
        out += [Case(f"z/w{w}-{i:02d}", "cells", "z", f"w{w}-{i:02d}", {"family": "mlp", "width": w}, 0.1, 1.0, None)
                for i in range(n)]
    return out + [Case("z/arch:wider", "archs", "z", "wider", {"family": "mlp", "width": 256}, 0.1, 1.0, None)]


def test_subset_cells_spreads_over_architectures_and_keeps_every_architecture_case():
    cases = _cases({8: 20, 16: 10, 32: 2})
    got = subset_cells(cases, 8)
    cells = [c for c in got if c.group == "cells"]
    assert len(cells) == 8 and [c.key for c in got if c.group == "archs"] == ["z/arch:wider"]
    per = {w: sum(c.arch["width"] == w for c in cells) for w in (8, 16, 32)}
    assert per == {8: 5, 16: 2, 32: 1}  # proportional to 20 / 10 / 2, every width at least one
    # evenly spaced through each width's plan order, in the cases' own order, the same on every call
    assert [c.name for c in cells if c.arch["width"] == 8] == ["w8-02", "w8-06", "w8-10", "w8-14", "w8-18"]
    assert [c.key for c in subset_cells(cases, 8)] == [c.key for c in got]
    assert [c.key for c in got] == [c.key for c in cases if c in got]


def test_subset_cells_all_fewer_than_groups_and_bad_n():
    cases = _cases({8: 3, 16: 3, 32: 3})
    assert subset_cells(cases, None) == cases and subset_cells(cases, 9) == cases and subset_cells(cases, 50) == cases
    two = [c for c in subset_cells(cases, 2) if c.group == "cells"]
    assert len(two) == 2 and len({c.arch["width"] for c in two}) == 2
    with pytest.raises(ZooError, match="--cells 0: must be at least 1"):
        subset_cells(cases, 0)
