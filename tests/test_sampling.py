"""Sampled planes (--phase random), sampled architectures and packed populations: the plan side.

Everything here is planning (no training): ids, prefix stability, rounding, packing and the
one-line errors. Training a packed bundle is tested in tests/test_packing.py.
"""
from __future__ import annotations

import json
from collections import Counter

import pytest

from pipelines.build import set_phase
from pipelines.plan import plan, plan_summary, population_key, populations
from tests.conftest import tiny_spec
from zoo.errors import ZooError
from zoo.spec import Collection, arch_id, parse_spec


def random_spec(points: int = 12, **over) -> dict:
    spec = tiny_spec("sampled", phase="random", sampling={
        "points": points, "seed": 3,
        "temperature": {"param": "lr", "range": [0.005, 0.5]},
        "load": {"param": "width", "values": [4, 8, 16]},
    })
    spec.pop("axes")
    for k, v in over.items():
        spec[k] = {**spec[k], **v} if isinstance(v, dict) and isinstance(spec.get(k), dict) else v
    return spec


def error(data: dict) -> str:
    with pytest.raises(ZooError) as ei:
        parse_spec(data, "configs/zoos/x.yaml")
    msg = str(ei.value)
    assert "\n" not in msg and msg.startswith("configs/zoos/x.yaml: "), msg
    return msg


# ---- sampled planes -------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["sobol", "uniform"])
def test_points_lie_in_the_ranges_and_ids_are_stable(method):
    spec = parse_spec(random_spec(40, sampling={"method": method}))
    cells = spec.cells()
    assert 30 <= len(cells) <= 40  # 3 widths: a few rounded points can coincide
    assert all(0.005 <= c.temperature <= 0.5 and c.load in (4, 8, 16) for c in cells)
    assert all(c.temperature == float(f"{c.temperature:.4g}") for c in cells)  # 4 significant digits
    assert len({(c.temperature, c.load) for c in cells}) == len(cells)  # kept once
    assert [c.id for c in cells] == sorted(c.id for c in cells) and cells[0].id.startswith("P")
    ids = [m.model_id for m in spec.members()]
    assert len(ids) == len(set(ids)) == len(cells) * len(spec.seeds)
    assert ids == [m.model_id for m in parse_spec(random_spec(40, sampling={"method": method})).members()]
    # the log range is covered on both sides of its geometric middle
    low = sum(c.temperature < 0.05 for c in cells)
    assert 0.3 * len(cells) <= low <= 0.7 * len(cells)


@pytest.mark.parametrize("method", ["sobol", "uniform"])
def test_growing_points_keeps_the_earlier_models(method):
    small = parse_spec(random_spec(10, sampling={"method": method})).members()
    large = parse_spec(random_spec(25, sampling={"method": method})).members()
    assert [m.model_id for m in small] == [m.model_id for m in large[: len(small)]]
    assert len(large) > len(small)
    # another sampling seed is another plane
    other = parse_spec(random_spec(10, sampling={"seed": 4, "method": method})).members()
    assert {m.model_id for m in other}.isdisjoint({m.model_id for m in small})


def test_integer_ranges_round_and_points_that_coincide_are_kept_once():
    spec = parse_spec(random_spec(50, sampling={"load": {"param": "width", "range": [4, 6]},
                                                "temperature": {"param": "batch_size", "values": [32, 64]}}))
    coords = [(c.temperature, c.load) for c in spec.cells()]
    assert sorted(coords) == [(t, w) for t in (32, 64) for w in (4, 5, 6)]
    assert all(isinstance(w, int) for _, w in coords)


def test_a_point_is_a_cell_of_the_plan():
    spec = parse_spec(random_spec(8))
    groups = spec.groups()
    assert list(groups) == [c.id for c in spec.cells()]
    for gid, members in groups.items():
        assert [m.seed for m in members] == spec.seeds
        assert {m.cell.id for m in members} == {gid}
        assert all(m.training["lr"] == members[0].cell.temperature for m in members)


def test_phase_flag_sets_every_zoo_and_says_what_is_missing():
    grid = parse_spec(tiny_spec("g"))
    sampled = parse_spec(random_spec(6))
    col = Collection("c", [sampled])
    set_phase(col, "random")
    assert col.zoos[0] is sampled
    col = Collection("c", [grid])
    with pytest.raises(ZooError, match=r"zoo g: sampling: required for --phase random"):
        set_phase(col, "random")
    with pytest.raises(ZooError, match=r"--phase 'annealing' is not valid; valid: grid, random, pbt"):
        set_phase(col, "annealing")
    with pytest.raises(ZooError, match=r"zoo g: pbt: required for --phase pbt"):
        set_phase(col, "pbt")
    with pytest.raises(ZooError, match=r"axes: required for --phase grid; this spec has a sampling block"):
        set_phase(Collection("c", [sampled]), "grid")


@pytest.mark.parametrize("sampling, expected", [
    ({"points": 0}, r"sampling.points: Input should be greater than or equal to 1"),
    ({"temperature": {"param": "lr", "range": [0.0, 0.5]}}, r"temperature.range: a log-scale range must be positive"),
    ({"temperature": {"param": "lr", "range": [-1.0, 0.5], "log": False}}, r"temperature.range\[0\]: lr must be > 0"),
    ({"temperature": {"param": "lr", "range": [0.5, 0.1]}}, r"temperature.range: low must be below high"),
    ({"temperature": {"param": "lr"}}, r"temperature: give either range: \[low, high\] or values"),
    ({"temperature": {"param": "lr", "range": [0.1, 0.5], "values": [0.1]}}, r"give either range"),
    ({"temperature": {"param": "momentum", "range": [0.1, 0.5]}}, r"temperature.param 'momentum' is not valid; expected one of batch_size, lr"),
    ({"load": {"param": "width", "range": [4.2, 4.8]}}, r"load.range: holds no integer width"),
    ({"load": {"param": "width", "values": [4, 4]}}, r"load.values: must be distinct"),
    ({"load": {"param": "width", "values": [0, 4]}}, r"load.values\[0\]: width must be a positive integer"),
    ({"method": "halton"}, r"sampling.method: Input should be 'sobol' or 'uniform'"),
    ({"spread": 2}, r"sampling.spread: unknown field; valid: points, method, seed, temperature, load"),
])
def test_bad_sampling_block_is_one_line(sampling, expected):
    assert __import__("re").search(expected, error(random_spec(5, sampling=sampling)))


# ---- sampled architectures ------------------------------------------------------------------
def arch_spec(count: int = 5, space: dict | None = None, **over) -> dict:
    spec = tiny_spec("deep", architectures={"count": count, "seed": 1,
                                            "space": {"depth": [1, 2, 3], "width": [4, 8]} if space is None else space},
                     axes={"temperature": {"param": "lr", "values": [0.01, 0.1]},
                           "load": {"param": "data_fraction", "values": [0.25, 0.5]}})
    spec.update(over)
    return spec


def test_architectures_are_distinct_seeded_and_prefix_stable():
    spec = parse_spec(arch_spec(5))
    archs = spec.archs()
    assert len(archs) == 5 and len({json.dumps(a, sort_keys=True) for a in archs}) == 5
    assert all(a["family"] == "mlp" and a["depth"] in (1, 2, 3) and a["width"] in (4, 8) for a in archs)
    assert parse_spec(arch_spec(6)).archs()[:5] == archs  # a larger count keeps the first ones
    assert parse_spec(arch_spec(5, architectures={"count": 5, "seed": 2, "space": {"depth": [1, 2, 3], "width": [4, 8]}})).archs() != archs
    members = spec.members()
    assert len(members) == len(spec.cells()) * 5 * len(spec.seeds)
    groups = spec.groups()
    assert len(groups) == len(spec.cells()) * 5
    for gid, ms in groups.items():
        assert gid == f"{ms[0].cell.id}-{ms[0].arch_id}" and len({m.arch_id for m in ms}) == 1
        assert ms[0].arch_id == arch_id(ms[0].arch)


def test_a_zoo_without_sampled_architectures_keeps_its_ids():
    spec = parse_spec(tiny_spec("t"))
    m = spec.members()[0]
    assert m.group == m.cell.id == "T0L0"
    assert m.arch == {"family": "mlp", "depth": 1, "width": 4}  # no knob that did not exist before


@pytest.mark.parametrize("space, count, expected", [
    ({"depth": [1, 2], "widthh": [4]}, 2, r"architectures.space: model family 'mlp' has no knob\(s\) \['widthh'\]; valid: "),
    ({"depth": [1, -1]}, 1, r"architectures.space.depth\[1\]: mlp needs width >= 1 and depth >= 0"),
    ({"depth": []}, 1, r"architectures.space: depth: expected a non-empty list of choices"),
    ({}, 1, r"architectures.space: Dictionary should have at least 1 item"),
    ({"depth": [1, 2]}, 3, r"architectures.count: 3 is more than the 2 distinct architectures of the space"),
    ({"depth": [1, 1]}, 1, r"architectures.space: depth: choices must be distinct"),
])
def test_bad_architecture_space_is_one_line(space, count, expected):
    assert __import__("re").search(expected, error(arch_spec(count, space)))


def test_width_is_sampled_in_one_place_only():
    data = arch_spec(2, {"width": [4, 8]})
    data["axes"]["load"] = {"param": "width", "values": [16, 32]}
    assert "architectures.space.width: width is an axis of the plane (axes)" in error(data)


# ---- packing ---------------------------------------------------------------------------------
def test_members_that_can_share_a_step_share_a_population_across_cells():
    spec = parse_spec(random_spec(30, compute={"max_members": 64}))
    pops = populations(spec)
    assert len(pops) == 3  # one per width: lr and seed are per member
    for pop in pops:
        assert len({population_key(m) for m in pop}) == 1
        assert len({m.cell.id for m in pop}) > 1
    assert sorted(m.model_id for p in pops for m in p) == sorted(m.model_id for m in spec.members())


def test_a_large_group_splits_into_near_equal_populations():
    spec = parse_spec(random_spec(30, compute={"max_members": 8}))
    sizes = Counter(population_key(p[0]) for p in populations(spec) for _ in p)
    for pop in populations(spec):
        same = [len(p) for p in populations(spec) if population_key(p[0]) == population_key(pop[0])]
        assert max(same) - min(same) <= 1 and max(same) <= 8
    assert sum(sizes.values()) == len(spec.members())


def test_small_populations_are_packed_into_bundles():
    base = tiny_spec("grid4", axes={"temperature": {"param": "batch_size", "values": [32, 64, 128, 256]},
                                    "load": {"param": "width", "values": [4, 8]}})
    alone = plan(parse_spec(base))
    assert [len(b.populations) for b in alone] == [1] * 8
    packed = plan(parse_spec({**base, "compute": {"bundle_members": 6}}))
    assert [len(b.populations) for b in packed] == [3, 3, 2]  # 2 members each, at most 6 a bundle
    assert [m.model_id for b in packed for m in b.members] == [m.model_id for b in alone for m in b.members]
    assert [b.bundle_id for b in packed] == [b.bundle_id for b in plan(parse_spec({**base, "compute": {"bundle_members": 6}}))]
    assert len({b.bundle_id for b in packed}) == 3
    s = plan_summary(parse_spec({**base, "compute": {"bundle_members": 6}}))
    assert (s["models"], s["populations"], s["bundles"], s["architectures"]) == (16, 8, 3, 2)
