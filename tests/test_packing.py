"""Packed populations train every member as if alone, a packed bundle is its populations side by
side, and a sampled, packed build killed with -9 resumes to the same bytes."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from pipelines.bundle import make_population, train_bundle
from pipelines.plan import plan, populations
from tests.conftest import write_spec
from tests.reference import assert_oracle_equal, plain_train
from tests.test_sampling import random_spec
from zoo import store, tasks
from zoo.spec import parse_spec


def packed_spec(epochs: int = 2, **over) -> dict:
    base = {"training": {"epochs": epochs, "batch_size": 64}, "checkpoints": [0, epochs],
            "compute": {"max_members": 64, "bundle_members": 64}}
    return random_spec(6, **{**base, **over})


def test_a_population_across_points_equals_each_member_trained_alone():
    """float64 oracle (tests/reference.py): members of different points (their own lr) and seeds,
    packed into one population, each end where a plain loop training it alone ends."""
    spec = parse_spec(packed_spec())
    pop_members = max(populations(spec), key=len)
    assert len({m.cell.id for m in pop_members}) >= 2 and len({m.training["lr"] for m in pop_members}) >= 2
    pop = make_population(spec, list(pop_members), dtype=torch.float64)
    for epoch in range(1, spec.training.epochs + 1):
        pop.train_epoch(epoch)
    task = tasks.load(spec.task)
    for i, m in enumerate(pop_members):
        ref = plain_train(task, m.arch, spec.model.init, m.training, pop.members[i])
        assert_oracle_equal(ref.state_dict(), pop.member_state(i), f"member {m.model_id} ({m.cell.id}, seed {m.seed})")


def test_a_packed_bundle_is_its_populations_side_by_side():
    spec = parse_spec(packed_spec())
    (bundle,) = plan(spec)  # 6 points x 2 seeds over 3 widths: one bundle of 3 populations
    assert len(bundle.populations) == 3
    packed = train_bundle(spec.to_json(), bundle.member_ids(), bundle.bundle_id)
    alone = [train_bundle(spec.to_json(), [ids], bundle.bundle_id) for ids in bundle.member_ids()]
    rows = [r for a in alone for r in a["rows"]]
    tensors = [t for a in alone for t in a["tensors"]]
    assert len(packed["rows"]) == len(rows) == len(spec.members()) * len(spec.checkpoints)
    for got, want in zip(packed["rows"], rows):
        assert {k: v for k, v in got.items() if k != "weights"} == {k: v for k, v in want.items() if k != "weights"}
        np.testing.assert_array_equal(got["weights"], want["weights"])
    for (p1, s1), (p2, s2) in zip(packed["tensors"], tensors):
        assert p1 == p2 and s1.keys() == s2.keys()
        for k in s1:
            np.testing.assert_array_equal(s1[k], s2[k])
    ids = {r["model_id"] for r in packed["rows"]}
    assert ids == {m.model_id for m in spec.members()}
    assert {r["cell"] for r in packed["rows"]} == {c.id for c in spec.cells()}


@pytest.mark.slow
def test_killed_sampled_packed_build_resumes_to_the_same_bytes(tmp_path):
    """Kill -9 after the first committed bundle of a --phase random build whose bundles pack
    several populations; the rerun trains only the rest and ends with the uninterrupted bytes."""
    from tests.test_build import _wait_for, snapshot, zoo_cmd

    # 8 epochs: each bundle trains long enough (about a second) for the kill to land mid-build
    spec = packed_spec(8, compute={"max_members": 4, "bundle_members": 8}, metrics={"enabled": False})
    spec["sampling"]["points"] = 12
    path = write_spec(tmp_path / "sampled.yaml", spec)
    n_bundles = len(plan(parse_spec(spec)))
    assert n_bundles >= 3 and any(len(b.populations) > 1 for b in plan(parse_spec(spec)))
    whole = tmp_path / "whole"
    r = zoo_cmd("build", "--phase", "random", "--config", str(path), "--out", str(whole), "--workers", "2")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "interrupted"
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.zoo_cli", "build", "--phase", "random", "--config", str(path),
                             "--out", str(out), "--workers", "1", "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    committed = lambda: list((out / "data/sampled").glob("models-*.parquet")) if (out / "data/sampled").exists() else []
    assert _wait_for(lambda: len(committed()) >= 1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 1 <= len(committed()) < n_bundles, "the build finished before it could be interrupted"
    r = zoo_cmd("build", "--phase", "random", "--config", str(path), "--out", str(out), "--workers", "2")
    assert r.returncode == 0, r.stderr
    assert snapshot(out) == snapshot(whole)
    assert store.verify(out) == []
