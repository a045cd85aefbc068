"""Mode connectivity: known values, identical endpoints, a constructed barrier, and the fit."""
from __future__ import annotations

import pytest
import torch

from zoo import tasks
from zoo.landscape.connectivity import bezier, connectivity, mode_connectivity, pairs
from zoo.train import MemberConfig, Population


def test_mode_connectivity_known_values():
    v = torch.tensor([
        [0.1, 0.5, 0.9, 0.5, 0.1],   # a barrier of 0.8 above both endpoints
        [1.0, 0.6, 0.4, 0.6, 1.0],   # the curve beats its endpoints by 0.6
        [0.3, 0.3, 0.3, 0.3, 0.3],
        [0.0, 0.1, 0.9, 0.2, 0.2],    # unequal endpoints: deviation from their mean 0.1
    ], dtype=torch.float64)
    mc = mode_connectivity(v)
    # float64: each value is one subtraction and one halving away from the decimals above, a few
    # units in the last place (~1e-16) at most
    assert mc.tolist() == pytest.approx([-0.8, 0.6, 0.0, -0.8], rel=0, abs=1e-15)
    # endpoints are excluded from t*: a straight line between unequal endpoints is not reported
    # as a barrier of ½|v0 - v1| = 0.5 (it would be with t* allowed at an endpoint). Its interior
    # deviations from ½(v0+v1) = 0.5 are -0.25, 0, +0.25; every value here is a dyadic fraction, so
    # float64 computes them exactly and the answer is exactly 0.25 in size. Its sign is the argmax's
    # tie-break (the first of the two equal |deviations|: +0.25 going up, -0.25 going down), so only
    # the size is asserted here and the sign on curves without a tie below.
    straight = torch.tensor([[0.0, 0.25, 0.5, 0.75, 1.0]], dtype=torch.float64)
    assert mode_connectivity(straight).abs().tolist() == [0.25]
    assert mode_connectivity(straight.flip(1)).abs().tolist() == [0.25]
    # monotone curves without a tie, also exact: below the chord at t* (a bonus) is mc > 0, above
    # it (a barrier) mc < 0
    below = torch.tensor([[0.0, 0.125, 0.5, 0.75, 1.0]], dtype=torch.float64)  # deviations -0.375, 0, 0.25
    above = torch.tensor([[0.0, 0.25, 0.5, 0.875, 1.0]], dtype=torch.float64)  # deviations -0.25, 0, 0.375
    assert mode_connectivity(torch.cat([below, above])).tolist() == [0.375, -0.375]
    with pytest.raises(ValueError, match="at least 3 points"):
        mode_connectivity(v[:, :2])


def test_bezier_endpoints_and_midpoint():
    a, c, b = {"w": torch.zeros(2, 3)}, {"w": torch.ones(2, 3)}, {"w": torch.full((2, 3), 4.0)}
    assert bezier(a, c, b, torch.zeros(2))["w"].equal(a["w"])
    assert bezier(a, c, b, torch.ones(2))["w"].equal(b["w"])
    # t = ½: ¼ a + ½ c + ¼ b
    assert bezier(a, c, b, torch.full((2,), 0.5))["w"].allclose(torch.full((2, 3), 0.5 + 1.0))


def test_pairs():
    assert pairs(3) == [(0, 1), (0, 2), (1, 2)] and pairs(1) == []


@pytest.fixture(scope="module")
def trained():
    task = tasks.load("mnist1d")
    common = {"optimizer": "sgd", "momentum": 0.9, "batch_size": 64, "epochs": 6, "data_fraction": 0.25}
    pop = Population(task, {"family": "mlp", "width": 64, "depth": 1}, "kaiming_uniform", common,
                     [MemberConfig("a", 0, 0.05), MemberConfig("b", 1, 0.05)])
    for e in range(1, 7):
        pop.train_epoch(e)
    return pop


def _stack(pop, idx):
    return {k: v.detach()[idx] for k, v in pop.params.items()}


def test_same_model_at_both_ends_gives_mc_zero(trained):
    pop = trained
    th = _stack(pop, [0])
    untrained_curve = connectivity(pop._fwd, {}, th, th, pop.x, pop.y[0], epochs=0, batch_size=128, lr=0.01, points=7)
    assert untrained_curve["mc_loss"].abs().max().item() < 1e-6
    assert untrained_curve["mc_error"].abs().max().item() < 1e-9
    fitted = connectivity(pop._fwd, {}, th, th, pop.x, pop.y[0], epochs=2, batch_size=128, lr=1e-3, points=7)
    assert fitted["mc_loss"].abs().max().item() < 0.05


def test_permuted_copy_has_a_barrier_on_the_straight_path(trained):
    """A model and a hidden-unit permutation of it compute the same function, but the midpoint of
    the two weight vectors averages unrelated units: a loss barrier, mc < 0."""
    pop = trained
    a = {k: v.detach()[0] for k, v in pop.params.items()}
    perm = torch.randperm(64, generator=torch.Generator().manual_seed(0))
    b = {"fc0.weight": a["fc0.weight"][perm], "fc0.bias": a["fc0.bias"][perm],
         "head.weight": a["head.weight"][:, perm], "head.bias": a["head.bias"]}
    th0 = {k: v.unsqueeze(0) for k, v in a.items()}
    th1 = {k: b[k].unsqueeze(0) for k in a}
    res = connectivity(pop._fwd, {}, th0, th1, pop.x, pop.y[0], epochs=0, batch_size=128, lr=0.01, points=11)
    ends = res["curve_loss"][0, [0, -1]]
    assert torch.allclose(ends[0], ends[1], atol=1e-5)  # same function at both ends
    assert res["mc_loss"].item() < -0.1 and res["mc_error"].item() < 0


def test_fitting_the_control_point_lowers_the_barrier(trained):
    pop = trained
    th0, th1 = _stack(pop, [0]), _stack(pop, [1])
    straight = connectivity(pop._fwd, {}, th0, th1, pop.x, pop.y[0], epochs=0, batch_size=128, lr=0.01, points=11)
    fitted = connectivity(pop._fwd, {}, th0, th1, pop.x, pop.y[0], epochs=4, batch_size=64, lr=0.01, points=11)
    assert fitted["mc_loss"].item() > straight["mc_loss"].item()
    assert fitted["curve_loss"].shape == (1, 11) and fitted["t"][0] == 0 and fitted["t"][-1] == 1
