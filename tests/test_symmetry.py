"""Permutation symmetry (hypernet.symmetry): groups, function-preserving permutations, weight
matching (Git Re-Basin) canonical forms, on real zoo nets of every supported family."""
from __future__ import annotations

from functools import cache

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from hypernet.symmetry import PermGroup, canonicalize, perm_groups, permute, random_permutation, weight_matching
from zoo import nets, tasks
from zoo.errors import ZooError

# case -> (family, task, knobs)
CASES = {
    "mlp": ("mlp", "mnist1d", {"width": 8, "depth": 2}),
    # the knobs a zoo samples (configs/zoos/deepnets_mnist1d.yaml): LayerNorm vectors follow their
    # layer's units; with residual blocks the whole stream is one group
    "mlp_layernorm": ("mlp", "mnist1d", {"width": 8, "depth": 3, "norm": "layernorm", "activation": "gelu"}),
    "mlp_residual": ("mlp", "mnist1d", {"width": 8, "depth": 3, "residual": True, "norm": "layernorm",
                                        "activation": "silu"}),
    "pinn": ("pinn", "convection", {"width": 8, "depth": 2}),
    "cnn": ("cnn", "mnist1d", {}),
    "resnet": ("resnet", "mnist1d", {"width": 4, "stages": 2}),
}
# extra architectures for the function-preservation check only: 2-D convs, identity-shortcut blocks
EXTRA = {
    "cnn2d": ("cnn", "digits", {"width": 8, "depth": 2}),
    "resnet2d": ("resnet", "digits", {"width": 4, "depth": 2, "stages": 2}),
}


def _build(case: str, seed: int = 0) -> nn.Module:
    family, task, kw = {**CASES, **EXTRA}[case]
    return nets.init_(nets.build(family, task, **kw), seed)


def _inputs(case: str, n: int = 64) -> torch.Tensor:
    task = {**CASES, **EXTRA}[case][1]
    return tasks.load(task).x_test[:n]  # mnist1d (n, 1, 40); digits (n, 1, 8, 8); convection (n, 2) = (t, x)


@cache
def _trained(case: str, seed: int) -> tuple[tuple[str, torch.Tensor], ...]:
    """State of a net trained 30 SGD steps on one batch from init `seed` (distinct units, and
    nonzero BN running statistics). A tuple so the cache cannot be mutated through it."""
    torch.manual_seed(seed)
    net = _build(case, seed)
    task = tasks.load({**CASES, **EXTRA}[case][1])
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(task.x_train), generator=g)[:128]
    x, y = task.x_train[idx], task.y_train[idx]
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    net.train()
    for _ in range(30):
        out = net(x)
        loss = F.mse_loss(out, y) if task.n_classes == 1 and y.is_floating_point() else F.cross_entropy(out, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return tuple((k, v.detach().clone()) for k, v in net.state_dict().items())


def _state(case: str, seed: int = 0) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in _trained(case, seed)}


def _outputs(case: str, state: dict[str, torch.Tensor]) -> torch.Tensor:
    """The net's function in float64: a permutation reorders the sums of the next layer, which in
    float32 moves outputs by up to ~n u sum|terms| (1e-5 and more, depending on the CPU's kernels);
    in float64 the same reordering stays below 1e-12, so equality can be checked tightly."""
    net = _build(case, 123).double()
    net.load_state_dict(state)  # float32 values, exactly representable in float64
    net.eval()
    with torch.no_grad():
        return net(_inputs(case).double())


def _similarity(a: dict, b: dict, groups: list[PermGroup]) -> float:
    """Summed inner products of the parameters the groups touch (the weight matching objective)."""
    keys = {k for g in groups for k, _ in g.axes if not k.endswith(("running_mean", "running_var"))}
    return sum(float((a[k].double() * b[k].double()).sum()) for k in keys)


def _assert_states_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("case", [*CASES, *EXTRA])
def test_random_permutation_preserves_function(case):
    net = _build(case, 0)
    if "resnet" in case:  # nonzero running statistics, so their permutation matters
        net.train()
        with torch.no_grad():
            for i in range(3):
                net(_inputs(case) + 0.1 * i)
    state = net.state_dict()
    if "resnet" in case:
        assert state["bn.running_mean"].abs().sum() > 0 and not torch.allclose(state["bn.running_var"], torch.ones(4))
    before = {k: v.clone() for k, v in state.items()}
    groups = perm_groups(net)
    perms = random_permutation(groups, torch.Generator().manual_seed(1))
    assert any(not torch.equal(p, torch.arange(len(p))) for p in perms.values())
    permuted = permute(state, groups, perms)
    _assert_states_equal(state, before)  # input untouched
    assert any(not torch.equal(permuted[k], state[k]) for k in state)
    torch.testing.assert_close(_outputs(case, permuted), _outputs(case, state), atol=1e-10, rtol=0)


@pytest.mark.parametrize("case", CASES)
def test_canonicalize_recovers_permutation(case):
    state = _state(case)
    net = _build(case)
    groups = perm_groups(net)
    permuted = permute(state, groups, random_permutation(groups, torch.Generator().manual_seed(2)))
    _assert_states_equal(canonicalize(permuted, state, net), state)


@pytest.mark.parametrize("case", CASES)
def test_permuted_and_original_share_canonical_form(case):
    state, reference = _state(case, 0), _state(case, 1)  # independently initialized and trained
    net = _build(case)
    groups = perm_groups(net)
    permuted = permute(state, groups, random_permutation(groups, torch.Generator().manual_seed(3)))
    canon_a, canon_b = canonicalize(state, reference, net), canonicalize(permuted, reference, net)
    _assert_states_equal(canon_a, canon_b)
    torch.testing.assert_close(_outputs(case, canon_a), _outputs(case, state), atol=1e-10, rtol=0)


@pytest.mark.parametrize("case", CASES)
def test_weight_matching_increases_similarity(case):
    state, reference = _state(case, 0), _state(case, 1)
    groups = perm_groups(_build(case))
    perms = weight_matching(state, reference, groups)
    assert set(perms) == {g.name for g in groups}
    for g in groups:
        assert perms[g.name].dtype == torch.int64 and torch.equal(perms[g.name].sort().values, torch.arange(g.size))
    matched = permute(state, groups, perms)
    assert _similarity(matched, reference, groups) > _similarity(state, reference, groups)
    # the reference matched to itself is the identity
    assert all(torch.equal(p, torch.arange(len(p))) for p in weight_matching(reference, reference, groups).values())


def test_mlp_groups_by_hand():
    groups = perm_groups(nets.build("mlp", "mnist1d", width=8, depth=2))
    assert groups == [
        PermGroup("fc0", 8, (("fc0.weight", 0), ("fc0.bias", 0), ("fc1.weight", 1))),
        PermGroup("fc1", 8, (("fc1.weight", 0), ("fc1.bias", 0), ("head.weight", 1))),
    ]
    assert perm_groups(nets.build("mlp", "mnist1d", width=8, depth=0)) == []


def test_pinn_and_cnn_groups():
    assert [(g.name, g.size) for g in perm_groups(nets.build("pinn", "convection", width=8, depth=2))] == [
        ("fc0", 8), ("fc1", 8)]
    cnn = perm_groups(nets.build("cnn", "mnist1d"))
    assert [(g.name, g.size) for g in cnn] == [("conv0", 16), ("conv1", 16), ("conv2", 16)]
    assert cnn[-1].axes == (("conv2.weight", 0), ("conv2.bias", 0), ("head.weight", 1))


def test_resnet_groups():
    net = nets.build("resnet", "mnist1d", width=4, stages=2)
    groups = {g.name: g for g in perm_groups(net)}
    assert list(groups) == ["stage0.stream", "stage0.0.inner", "stage1.stream", "stage1.0.inner"]
    assert [g.size for g in groups.values()] == [4, 4, 8, 8]
    s0, s1 = set(groups["stage0.stream"].axes), set(groups["stage1.stream"].axes)
    assert {("stem.weight", 0), ("bn.running_mean", 0), ("bn.running_var", 0), ("stage0.0.bn2.running_mean", 0),
            ("stage0.0.conv1.weight", 1), ("stage1.0.shortcut.0.weight", 1), ("stage1.0.conv1.weight", 1)} <= s0
    assert {("stage1.0.shortcut.0.weight", 0), ("stage1.0.shortcut.1.weight", 0), ("stage1.0.shortcut.1.bias", 0),
            ("stage1.0.shortcut.1.running_mean", 0), ("stage1.0.shortcut.1.running_var", 0),
            ("stage1.0.bn2.weight", 0), ("head.weight", 1)} <= s1
    assert set(groups["stage0.0.inner"].axes) == {
        ("stage0.0.conv1.weight", 0), ("stage0.0.bn1.weight", 0), ("stage0.0.bn1.bias", 0),
        ("stage0.0.bn1.running_mean", 0), ("stage0.0.bn1.running_var", 0), ("stage0.0.conv2.weight", 1)}
    # every hidden axis is in exactly one group; data-facing axes and counters in none
    covered = [ka for g in groups.values() for ka in g.axes]
    assert len(covered) == len(set(covered))
    state = net.state_dict()
    free = {("stem.weight", 1), ("head.weight", 0), ("head.bias", 0)}
    expected = {(k, a) for k, v in state.items() for a in range(min(v.dim(), 2)) if (k, a) not in free}
    assert set(covered) == expected
    assert not any(k.endswith("num_batches_tracked") for k, _ in covered)


def test_permute_rejects_bad_perms():
    groups = perm_groups(nets.build("mlp", "mnist1d", width=8, depth=2))
    state = nets.build("mlp", "mnist1d", width=8, depth=2).state_dict()
    with pytest.raises(ValueError, match="not a permutation"):
        permute(state, groups, {"fc0": torch.zeros(8, dtype=torch.long)})
    with pytest.raises(ValueError, match="no group"):
        permute(state, groups, {"fc9": torch.arange(8)})
    only = permute(state, groups, {"fc1": torch.arange(8).flip(0)})  # fc0 untouched
    assert torch.equal(only["fc0.weight"], state["fc0.weight"])
    assert torch.equal(only["head.weight"], state["head.weight"].flip(1))


def test_unsupported_family():
    vit = nets.build("vit", "digits", width=16, depth=1, heads=2, patch=2, mlp_ratio=2)
    with pytest.raises(ZooError, match="mlp, pinn, cnn, resnet; got vit"):
        perm_groups(vit)
    with pytest.raises(ZooError, match="got vit"):
        canonicalize(vit.state_dict(), vit.state_dict(), vit)
