"""`zoo build --dry-run`: the plan as a table and a JSON line; nothing trained, nothing written."""
from __future__ import annotations

import json
import subprocess
import sys

from pipelines.plan import plan_summary
from tests.conftest import tiny_spec, write_spec
from zoo.spec import parse_spec


def _zoo(*args):
    return subprocess.run([sys.executable, "-m", "pipelines.zoo_cli", *args], capture_output=True, text=True, timeout=300)


def test_plan_summary_counts_and_size_by_hand():
    s = plan_summary(parse_spec(tiny_spec()))  # 2 batch sizes x widths 4, 8 x 2 seeds; MLP of depth 1
    assert {k: s[k] for k in ("models", "architectures", "populations", "bundles", "rows")} == {
        "models": 8, "architectures": 2, "populations": 4, "bundles": 4, "rows": 24}
    small, large = 40 * 4 + 4 + 4 * 10 + 10, 40 * 8 + 8 + 8 * 10 + 10  # 214, 418 parameters
    assert s["n_params"] == {"min": small, "max": large}
    # float32 tensors of 3 checkpoints, in the shards and in the flat `weights` column
    assert s["bytes_estimate"] == 4 * 3 * 2 * (4 * small + 4 * large)
    capped = plan_summary(parse_spec(tiny_spec(storage={"flat_weights_max_params": 300})))
    assert capped["bytes_estimate"] == 4 * 3 * (8 * (small + large) // 2 + 4 * small)


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path):
    spec = write_spec(tmp_path / "tiny.yaml", tiny_spec(compute={"max_members": 1}))
    out = tmp_path / "out"
    r = _zoo("build", "--dry-run", "--config", str(spec), "--out", str(out))
    assert r.returncode == 0, r.stderr
    # max_members 1: every member is a population of its own (a population is one stacked
    # training step, split at compute.max_members), and a bundle each
    assert json.loads(r.stdout.strip().splitlines()[-1]) == {"models": 8, "architectures": 2, "populations": 8,
                                                               "bundles": 8}
    assert "tiny" in r.stdout and "nothing is trained or written" in r.stdout
    assert not out.exists()


def test_dry_run_with_an_unknown_phase_lists_the_valid_ones(tmp_path):
    spec = write_spec(tmp_path / "tiny.yaml", tiny_spec())
    r = _zoo("build", "--dry-run", "--phase", "sobol", "--config", str(spec), "--out", str(tmp_path / "out"))
    assert r.returncode == 2 and "--phase 'sobol' is not valid; valid: grid" in r.stderr
    assert not (tmp_path / "out").exists()
