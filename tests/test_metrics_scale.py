"""Landscape metrics whose cost per cell is bounded however many seeds a cell has: at most
`metrics.seeds` seeds and `metrics.pairs` seed pairs, and checkpoint states read per cell when
its job is submitted, not for every cell up front."""
from __future__ import annotations

import math

import pytest

from pipelines.cell import cell_metrics
from pipelines.metrics import _plan
from pipelines.runner import Job, Reporter, run_jobs
from tests.conftest import tiny_spec
from zoo import store, tasks
from zoo.errors import ZooError
from zoo.landscape.cka import linear_cka, pairwise_cka
from zoo.landscape.connectivity import pairs
from zoo.spec import parse_spec
from zoo.train import MemberConfig, Population, derived_seed


def test_pairs_all_or_a_seeded_subset_in_fixed_order():
    assert pairs(4) == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    assert pairs(4, 10) == pairs(4) and pairs(4, 6) == pairs(4)
    sub = pairs(8, 5, seed=7)
    assert len(sub) == 5 and len(set(sub)) == 5 and set(sub) <= set(pairs(8))
    assert sub == sorted(sub, key=pairs(8).index)  # kept in the fixed order
    assert sub == pairs(8, 5, seed=7) and sub != pairs(8, 5, seed=8)


def test_metrics_seeds_and_pairs_are_validated():
    with pytest.raises(ZooError, match=r"metrics\.seeds: Input should be greater than or equal to 2"):
        parse_spec(tiny_spec(metrics={"seeds": 1}))
    with pytest.raises(ZooError, match=r"metrics\.pairs: Input should be greater than or equal to 1"):
        parse_spec(tiny_spec(metrics={"pairs": 0}))
    spec = parse_spec(tiny_spec(metrics={"seeds": 3, "pairs": 2}))
    assert (spec.metrics.seeds, spec.metrics.pairs) == (3, 2)


def test_cell_metrics_compare_only_the_chosen_pairs():
    spec = tiny_spec("scale", seeds=[0, 1, 2, 3], metrics={"pairs": 2, "hessian": {"batches": 1, "batch_size": 64,
                     "max_iter": 5, "probes": 5}, "connectivity": {"epochs": 0, "points": 3}, "cka": {"samples": 100}})
    parsed = parse_spec(spec)
    cell = parsed.cells()[0]
    members = [parsed.member(cell, s) for s in parsed.seeds]
    task = tasks.load("mnist1d")
    configs = [MemberConfig(m.model_id, m.seed, m.training["lr"]) for m in members]
    pop = Population(task, members[0].arch, "kaiming_uniform", members[0].training, configs)
    pop.train_epoch(1)
    states = [{k: v.numpy() for k, v in pop.member_state(i).items()} for i in range(4)]
    out = cell_metrics(parsed.to_json(), cell.id, [m.model_id for m in members], states)
    assert out["n_pairs"] == 2 and len(out["pair_members"]) == 2
    chosen = [tuple(p) for p in out["pair_members"]]
    assert chosen == pairs(4, 2, derived_seed("pairs", cell.id))  # seeded by the cell: the same on every run
    assert len(out["pair_mc_loss"]) == len(out["pair_cka_logits"]) == 2
    assert out["cka_logits"] == pytest.approx(sum(out["pair_cka_logits"]) / 2, abs=1e-12)
    assert out["mc_loss"] == pytest.approx(sum(out["pair_mc_loss"]) / 2, rel=1e-6)
    # the pairs' CKA are those of the chosen pairs, not of the first two pairs
    from zoo.landscape.cka import penultimate_and_logits

    reps = [penultimate_and_logits(pop.member_module(i), task.x_test[:100])[1] for i in range(4)]
    assert out["pair_cka_logits"] == pytest.approx([linear_cka(reps[i], reps[j]) for i, j in chosen], abs=1e-9)
    assert pairwise_cka(reps) == pytest.approx([linear_cka(reps[i], reps[j]) for i, j in pairs(4)], abs=1e-12)
    assert len(out["member_hessian_trace"]) == 4 and all(math.isfinite(v) for v in out["member_hessian_trace"])


def test_jobs_load_their_arguments_when_submitted():
    loaded, ran = [], []

    def make(i):
        def load():
            loaded.append(i)
            return (i,)
        return Job(f"job {i}", (), 1, lambda res: None, load=load)

    def fn(i):
        ran.append(i)
        assert loaded == list(range(i + 1))  # job i's arguments exist only once it is its turn
        return {"seconds": 0.0}

    jobs = [make(i) for i in range(4)]
    assert loaded == []  # planning read nothing
    run_jobs(fn, jobs, address=None, workers=1, use_ray=False, reporter=Reporter(None, "t", "jobs", 0, 4))
    assert ran == [0, 1, 2, 3]


def test_plan_takes_at_most_metrics_seeds_and_reads_no_state(tmp_path, monkeypatch):
    """_plan of a trained zoo: each cell's job measures the lowest `metrics.seeds` ok seeds, and
    no checkpoint is read until a job's arguments are built."""
    from pipelines.build import build
    from zoo.spec import Collection

    spec = parse_spec(tiny_spec("plan_scale", seeds=[0, 1, 2, 3], training={"epochs": 1}, checkpoints=[0, 1],
                                metrics={"seeds": 3, "enabled": False}))
    out = tmp_path / "zoo"
    build(Collection(spec.name, [spec]), out, use_ray=False, progress=False, metrics=False)
    reads = []
    real = store.read_state
    monkeypatch.setattr(store, "read_state", lambda root, row: reads.append(row["model_id"]) or real(root, row))
    jobs, n = _plan(out, spec)
    assert n == len(jobs) == 4 and reads == []
    rows = store.read_rows(out, spec.name).to_pandas()
    for job, cell in zip(jobs, spec.cells()):
        _, cell_id, ids, states = job.arguments()
        assert cell_id == cell.id and len(ids) == len(states) == 3
        at = rows[(rows["cell"] == cell.id) & (rows["epoch"] == 1)].sort_values("seed")
        assert ids == at["model_id"].tolist()[:3]  # seeds 0, 1, 2
    assert len(reads) == 12
