"""The downstream studies (`zoo study`): each study's math on known answers, the stage on a tiny
built zoo (files, manifest, card, resume with the same bytes), and the CLI's errors."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hypernet.symmetry import perm_groups, permute, random_permutation
from pipelines.studies import averaging, prune, run
from pipelines.studies.common import retained
from tests.conftest import pids_named, tiny_spec, write_spec
from zoo import nets, store
from zoo.spec import parse_spec

SPEC = tiny_spec("tiny_study", training={"epochs": 3, "data_fraction": 0.5}, model={"family": "mlp", "depth": 2},
                 axes={"temperature": {"param": "batch_size", "values": [32, 128]},
                       "load": {"param": "width", "values": [8, 32]}},
                 checkpoints=[0, 3],
                 metrics={"hessian": {"batches": 1, "batch_size": 128, "max_iter": 10, "probes": 5},
                          "connectivity": {"epochs": 1, "points": 5}})


def zoo_cmd(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipelines.zoo_cli", *args], capture_output=True, text=True, timeout=400)


def _mlp(seed: int, width: int = 16) -> torch.nn.Module:
    return nets.init_(nets.build("mlp", input_shape=(1, 40), n_classes=10, width=width, depth=2), seed)


# ---- the math -------------------------------------------------------------------------------------
def test_average_of_equal_nets_is_the_net():
    sd = _mlp(0).state_dict()
    avg = averaging.average([sd, {k: v.clone() for k, v in sd.items()}])
    assert all(torch.equal(avg[k], sd[k]) for k in sd)


def test_matched_average_of_a_permuted_copy_is_the_net():
    """A net and a hidden-unit permutation of it are the same function: weight matching finds the
    permutation, so their matched average is the net, while the plain average is not."""
    net = _mlp(1)
    sd = net.state_dict()
    groups = perm_groups(net)
    copy = permute(sd, groups, random_permutation(groups, torch.Generator().manual_seed(3)))
    assert not all(torch.equal(copy[k], sd[k]) for k in sd)
    m = averaging.average(averaging.matched([sd, copy], net))
    assert all(torch.allclose(m[k], sd[k], atol=1e-7) for k in sd)
    plain = averaging.average([sd, copy])
    assert max(float((plain[k] - sd[k]).abs().max()) for k in sd) > 0.01


def test_prune_zero_is_the_identity_and_a_fraction_is_global():
    sd = _mlp(2).state_dict()
    names = prune.prunable(sd, [n for n, _ in _mlp(2).named_parameters()])
    assert names and all(sd[k].dim() == 2 for k in names)  # weights only: biases are kept
    masks = prune.magnitude_masks(sd, names, 0.0)
    out = prune.apply_masks(sd, masks)
    assert all(torch.equal(out[k], sd[k]) for k in sd)
    masks = prune.magnitude_masks(sd, names, 0.8)
    total = sum(sd[k].numel() for k in names)
    kept = sum(int(masks[k].sum()) for k in names)
    assert kept == total - round(0.8 * total)
    # global: every kept entry is at least as large as every pruned one, across layers
    kept_min = min(float(sd[k][masks[k]].abs().min()) for k in names)
    pruned_max = max(float(sd[k][~masks[k]].abs().max()) for k in names)
    assert kept_min >= pruned_max
    # per layer the fractions differ (the layers' scales differ): it is not layer-wise pruning
    fractions = {k: float((~masks[k]).float().mean()) for k in names}
    assert max(fractions.values()) - min(fractions.values()) > 0.05
    out = prune.apply_masks(sd, masks)
    assert all(torch.equal(out[k], sd[k]) for k in sd if k not in names)
    with pytest.raises(ValueError, match="sparsity"):
        prune.magnitude_masks(sd, names, 1.0)


def test_retained_is_one_for_equal_scores_and_below_for_worse():
    assert retained(0.5, 0.5, True) == 1.0 and retained(0.25, 0.5, True) == 0.5
    assert retained(0.2, 0.1, False) == 0.5  # an error twice as large keeps half


def test_by_phase_uses_the_seeds_of_each_cell():
    rows = [{"phase": "II", "x": 1.0, "per_seed": {"x": [0.0, 1.0, 2.0]}},
            {"phase": "II", "x": 3.0, "per_seed": {"x": [3.0, 3.0, 3.0]}},
            {"phase": "I", "x": -1.0}]
    s = run.by_phase(rows, "x")
    assert s["II"]["median"] == 2.0 and s["II"]["cells"] == 2  # median of the cells' medians (1, 3)
    lo, hi = s["II"]["ci"]
    assert lo <= 2.0 <= hi and hi - lo > 0
    assert s["I"] == {"median": -1.0, "ci": [-1.0, -1.0], "cells": 1}


def test_the_studies_say_which_zoos_they_support():
    digits = parse_spec({**SPEC, "name": "d", "task": "digits"}, "spec")
    assert "mnist1d" in run.STUDIES.get("transfer").supports(digits)
    gpt = parse_spec(tiny_spec("g", task="pydoc", model={"family": "gpt", "depth": 1}), "spec")
    assert "mlp" in run.STUDIES.get("averaging").supports(gpt)
    assert run.STUDIES.get("prune").supports(gpt) is None


# ---- the stage on a tiny zoo --------------------------------------------------------------------
@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    from pipelines.build import build
    from zoo.spec import load_config

    d = tmp_path_factory.mktemp("study")
    out = d / "phases"
    build(load_config(write_spec(d / "tiny_study.yaml", SPEC)), out, use_ray=False, progress=False)
    return out


def _study_files(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): store.sha256_file(p) for p in sorted((root / "studies").rglob("*")) if p.is_file()}


@pytest.mark.parametrize("name", ["averaging", "transfer", "prune"])
def test_study_on_a_tiny_zoo(built, name):
    res = run.run(name, built, use_ray=False, progress=False)["tiny_study"]
    d = run.study_dir(built, "tiny_study", name)
    assert len(res["cells"]) == 4 and all(r["phase"] for r in res["cells"])
    assert set(res["by_phase"]) == set(run.STUDIES.get(name).figures)
    for key in run.STUDIES.get(name).figures:
        assert (d / f"{key}.png").stat().st_size > 1000 and (d / f"{key}-by-phase.png").stat().st_size > 1000
    stored = json.loads((d / "results.json").read_text())
    assert stored["settings"] == run.STUDIES.get(name).settings and stored["machine"]["torch"]
    m = store.read_manifest(built)
    assert m["studies"]["tiny_study"][name]["figures"]
    assert store.verify(built) == []  # the study's files are tracked with their sha256
    card = (built / "README.md").read_text()
    assert f"### {name} on tiny_study" in card and f"studies/tiny_study/{name}/" in card
    cell = res["cells"][0]
    if name == "averaging":
        assert len(cell["members"]) == 2 and cell["matched_delta"] == pytest.approx(cell["matched"] - cell["member_mean"])
    elif name == "prune":
        # pruning can only lose here: a 95%-sparse tiny MLP keeps less than the dense net
        assert all(r["retained_95"] < 1.0 for r in res["cells"])
        assert set(cell["pruned"]) == {"50", "80", "90", "95"}
    else:
        assert cell["target"]["task_args"] == {"seed": 1, "corr_noise": 0.5} and cell["steps"] > 0
        assert cell["gain"] == pytest.approx(sorted(cell["per_seed"]["gain"])[0] / 2 + sorted(cell["per_seed"]["gain"])[1] / 2)


def test_predict_stage_on_a_tiny_zoo(built):
    """The WSL benchmark as a stage: one job for the zoo, its per-cell errors drawn over the plane."""
    res = run.run("predict", built, settings={"methods": ["constant", "stats-ridge"], "folds": 4}, use_ray=False,
                  progress=False)["tiny_study"]
    d = run.study_dir(built, "tiny_study", "predict")
    tasks = res["zoo_result"]["tasks"]
    assert set(tasks) == {"test_acc", "gap", "phase"}
    assert set(tasks["test_acc"]["methods"]) == {"constant", "stats-ridge"}
    assert res["zoo_result"]["rows"] == 8 and res["zoo_result"]["models"] == 8  # epoch 3 only (min_epoch 1)
    assert all(r.get("abs_error_acc") is not None for r in res["cells"])
    assert (d / "abs_error_acc.png").exists() and "## Weight-space learning" in (d / "results.md").read_text()
    assert store.verify(built) == []


def test_a_rerun_resumes_and_writes_the_same_bytes(built):
    run.run("prune", built, use_ray=False, progress=False)
    before = _study_files(built)
    cells = sorted((run.study_dir(built, "tiny_study", "prune") / "cells").glob("*.json"))
    cells[1].unlink()  # as if killed before this cell was committed
    run.run("prune", built, use_ray=False, progress=False)
    assert _study_files(built) == before
    # other settings: every cell is recomputed, and the stored settings say so
    res = run.run("prune", built, settings={"sparsities": [0.5]}, use_ray=False, progress=False)["tiny_study"]
    assert res["settings"]["sparsities"] == [0.5] and set(res["cells"][0]["pruned"]) == {"50"}


def test_a_rewritten_checkpoint_shard_recomputes_the_cells_that_read_it(built, tmp_path):
    """The cell files are keyed by their inputs too: a shard rewritten under a finished study (a
    rebuilt zoo) recomputes the cells that read it, from the new weights, and keeps the others."""
    import shutil

    from safetensors.torch import load_file, save_file

    from pipelines.zoodata import load_cells

    root = tmp_path / "zoo"
    shutil.copytree(built, root)
    run.run("prune", root, use_ray=False, progress=False)
    d = run.study_dir(root, "tiny_study", "prune") / "cells"
    before = {f.name: (f.stat().st_mtime_ns, json.loads(f.read_text())) for f in d.glob("*.json")}
    cells = load_cells(root, ["tiny_study"])
    shard = cells[0].rows[0]["shard"]
    readers = {f"{c.cell}.json" for c in cells if any(r["shard"] == shard for r in c.rows)}
    assert readers and readers != set(before), "the test needs cells on other shards"
    tensors = load_file(root / shard)
    save_file({k: v * 0.5 if v.is_floating_point() else v for k, v in tensors.items()}, root / shard)
    store.refresh_manifest(root, store.open_manifest(root))
    run.run("prune", root, use_ray=False, progress=False)
    after = {f.name: (f.stat().st_mtime_ns, json.loads(f.read_text())) for f in d.glob("*.json")}
    assert {n for n in before if after[n][0] != before[n][0]} == readers
    for n in readers:
        assert after[n][1]["inputs_sha256"] != before[n][1]["inputs_sha256"]
        assert after[n][1]["pruned"] != before[n][1]["pruned"]  # computed from the halved weights
    assert store.verify(root) == []


@pytest.mark.slow
def test_a_study_killed_mid_run_on_ray_resumes_to_the_same_bytes(built, tmp_path):
    """kill -9 of `zoo study` (its driver and local Ray cluster) after some cells are committed,
    then a rerun: it computes only the missing cells and the study's files are byte for byte those
    of an uninterrupted run."""
    import os
    import shutil
    import signal
    import time

    ref, root = tmp_path / "ref", tmp_path / "killed"
    shutil.copytree(built, ref)
    shutil.copytree(built, root)
    run.run("prune", ref, recompute=True, use_ray=False, progress=False)
    cells = run.study_dir(root, "tiny_study", "prune") / "cells"
    if cells.exists():
        shutil.rmtree(cells)  # an earlier test's study on the shared zoo: start from none
    n_cells = lambda: len(list(cells.glob("*.json"))) if cells.exists() else 0
    cmd = [sys.executable, "-m", "pipelines.zoo_cli", "study", "prune", str(root), "--workers", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    end = time.time() + 300
    while n_cells() < 1 and time.time() < end and proc.poll() is None:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = n_cells()
    assert 1 <= done < 4, "the study finished (or never started) before it could be interrupted"
    # the killed run's Ray workers are not in its process group; none may outlive it into the rerun
    for pid in pids_named("ray::study_cell"):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    r = zoo_cmd("study", "prune", str(root), "--workers", "1")
    assert r.returncode == 0, r.stderr
    assert f"{done} already done, {4 - done} to compute" in " ".join(r.stderr.split())
    assert _study_files(root) == _study_files(ref)
    assert store.verify(root) == []


@pytest.mark.slow
def test_study_cli_on_ray_and_its_errors(built, tmp_path):
    r = zoo_cmd("study", "averaging", str(built), "--zoo", "tiny_study", "--workers", "2", "--recompute")
    assert r.returncode == 0, r.stderr
    assert "tiny_study: averaging of 4 cells" in r.stdout
    for args, msg in [(("study", "merge", str(built)), "unknown study 'merge'; valid: averaging, predict, prune, transfer"),
                      (("study", "averaging", str(built), "--epochs", "2"), "--epochs applies to"),
                      (("study", "prune", str(built), "--sparsity", "1.0"), "--sparsity must be in [0, 1)"),
                      (("study", "prune", str(built), "--zoo", "nope"), "no complete zoo ['nope']")]:
        r = zoo_cmd(*args)
        assert r.returncode == 2 and msg in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1
    # a zoo without phase labels: the error names the command that computes them
    from pipelines.build import build
    from zoo.spec import load_config

    bare = tmp_path / "bare"
    build(load_config(write_spec(tmp_path / "s.yaml", {**SPEC, "name": "bare"})), bare, use_ray=False, progress=False,
          metrics=False)
    r = zoo_cmd("study", "prune", str(bare))
    assert r.returncode == 2 and f"zoo metrics {bare} --zoo bare" in r.stderr, r.stderr
