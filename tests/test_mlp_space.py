"""The mlp architecture space (activation x residual x norm): builds, parameter counts, errors,
graphs, the hand-batched forward against each member's own, and population training against
one model at a time."""
from __future__ import annotations

import itertools
import re

import pytest
import torch
import torch.nn as nn

from hypernet import module_to_graph
from tests.reference import assert_oracle_equal, plain_train
from zoo import nets, tasks
from zoo.nets.mlp import ACTIVATIONS, NORMS
from zoo.stacked import stacked_forward
from zoo.train import MemberConfig, Population

SPACE = list(itertools.product(ACTIVATIONS, (False, True), NORMS))
SPACE_IDS = [f"{a}-{'res' if r else 'plain'}-{n}" for a, r, n in SPACE]
FAN_IN, CLASSES, WIDTH = 40, 10, 16  # mnist1d: input (1, 40), 10 classes


@pytest.fixture(scope="module")
def task():
    return tasks.load("mnist1d")


def _mlp(task, depth: int, activation: str = "relu", residual: bool = False, norm: str = "none") -> nn.Module:
    return nets.build("mlp", task, width=WIDTH, depth=depth, activation=activation, residual=residual, norm=norm)


def _expected_params(depth: int, norm: str) -> int:
    if depth == 0:
        return FAN_IN * CLASSES + CLASSES
    layers = (FAN_IN + 1) * WIDTH + (depth - 1) * (WIDTH + 1) * WIDTH + (WIDTH + 1) * CLASSES
    return layers + (2 * WIDTH * depth if norm == "layernorm" else 0)


@pytest.mark.parametrize("depth", range(5))
def test_every_combination_builds_with_the_formula_parameter_count(task, depth):
    for activation, residual, norm in SPACE:
        net = _mlp(task, depth, activation, residual, norm)
        assert nets.n_params(net) == _expected_params(depth, norm)
        assert net(torch.randn(3, 1, FAN_IN)).shape == (3, CLASSES)
        acts = [m for m in net.modules() if isinstance(m, (nn.ReLU, nn.GELU, nn.Tanh, nn.SiLU))]
        assert len(acts) == depth and all(type(m).__name__.lower() == activation for m in acts)
        assert sum(isinstance(m, nn.LayerNorm) for m in net.modules()) == (depth if norm == "layernorm" else 0)


def test_defaults_are_the_original_net(task):
    """The nets of zoos built before these knobs: same children, same state-dict keys."""
    for net in (nets.build("mlp", task, width=WIDTH, depth=3), _mlp(task, 3)):
        assert isinstance(net, nn.Sequential)
        assert [n for n, _ in net.named_children()] == ["flatten", "fc0", "act0", "fc1", "act1", "fc2", "act2", "head"]
        assert list(net.state_dict()) == [f"{n}.{p}" for n in ("fc0", "fc1", "fc2", "head") for p in ("weight", "bias")]
        assert all(type(m) is nn.ReLU for n, m in net.named_children() if n.startswith("act"))
    assert {"activation": "relu", "residual": False, "norm": "none"}.items() <= nets.knobs("mlp").items()


def test_state_dict_keys_are_deterministic(task):
    net = _mlp(task, 3, "gelu", True, "layernorm")
    assert list(net.state_dict()) == [
        "fc0.weight", "fc0.bias", "norm0.weight", "norm0.bias",
        "res1.fc.weight", "res1.fc.bias", "res1.norm.weight", "res1.norm.bias",
        "res2.fc.weight", "res2.fc.bias", "res2.norm.weight", "res2.norm.bias",
        "head.weight", "head.bias",
    ]
    assert list(_mlp(task, 2, "tanh", False, "layernorm").state_dict()) == [
        "fc0.weight", "fc0.bias", "norm0.weight", "norm0.bias", "fc1.weight", "fc1.bias",
        "norm1.weight", "norm1.bias", "head.weight", "head.bias"]
    # one hidden layer has no width -> width layer to skip around
    assert str(_mlp(task, 1, "silu", True)) == str(_mlp(task, 1, "silu", False))


@pytest.mark.parametrize("knob,value,valid", [
    ("activation", "elu", "relu, gelu, tanh, silu"),
    ("norm", "batchnorm", "none, layernorm"),
    ("residual", "yes", "True, False"),
])
def test_bad_values_name_the_knob_and_the_valid_ones(task, knob, value, valid):
    with pytest.raises(ValueError, match=re.escape(f"mlp {knob} {value!r} is not valid; valid: {valid}")):
        nets.build("mlp", task, width=WIDTH, **{knob: value})


def test_init_is_seeded_and_sets_every_tensor(task):
    a = nets.init_(_mlp(task, 3, "gelu", True, "layernorm"), seed=4).state_dict()
    b = nets.init_(_mlp(task, 3, "gelu", True, "layernorm"), seed=4).state_dict()
    c = nets.init_(_mlp(task, 3, "gelu", True, "layernorm"), seed=5).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["res2.fc.weight"], c["res2.fc.weight"])
    for k, v in a.items():
        if k.endswith("bias"):
            assert (v == 0).all(), k
        elif "norm" in k:
            assert (v == 1).all(), k
        else:  # Kaiming-uniform: U(-b, b), b = sqrt(6 / fan_in)
            assert 0 < v.abs().max() <= (6 / v.shape[1]) ** 0.5, k


@pytest.mark.parametrize("activation,residual,norm", SPACE, ids=SPACE_IDS)
def test_graph_has_the_expected_ops(task, activation, residual, norm):
    net = _mlp(task, 3, activation, residual, norm)
    g = module_to_graph(net)
    count = {op: g.op_names.count(op) for op in set(g.op_names)}
    assert count["linear"] == 4 and count[activation] == 3
    assert count.get("layernorm", 0) == (3 if norm == "layernorm" else 0)
    assert count.get("add", 0) == (2 if residual else 0)
    assert sorted(p for ps in g.param_names for p in ps) == sorted(n for n, _ in net.named_parameters())
    if residual:  # each add reads the stream and its layer's output
        src, dst = g.edge_index[:, g.edge_attr == 1]
        inputs = lambda node: sorted(g.node_names[s] for s in src[dst == g.node_names.index(node)].tolist())
        assert inputs("res1.add") == ["act0", "res1.act"] and inputs("res2.add") == ["res1.add", "res2.act"]


def _randomized(net: nn.Module, seed: int) -> nn.Module:
    """Random values in every tensor (norm weights and biases too), so members differ everywhere;
    weights scaled by 1/sqrt(fan_in), so activations stay O(1) and an absolute tolerance means
    the same at every depth."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            scale = p.shape[1] ** -0.5 if p.dim() == 2 else 0.5
            p.copy_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return net


@pytest.mark.parametrize("depth", [1, 3])
@pytest.mark.parametrize("activation,residual,norm", SPACE, ids=SPACE_IDS)
def test_stacked_forward_matches_each_member(task, activation, residual, norm, depth):
    make = lambda: _mlp(task, depth, activation, residual, norm).double()
    members = [_randomized(make(), seed) for seed in range(3)]
    f = stacked_forward(make())
    assert f is not None
    params = {n: torch.stack([m.get_parameter(n).detach() for m in members]).requires_grad_(True)
              for n, _ in members[0].named_parameters()}
    x = torch.randn(3, 5, 1, FAN_IN, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    out = f(params, {}, x)
    assert out.shape == (3, 5, CLASSES)
    (out**2).sum().backward()
    for i, m in enumerate(members):
        ref = m(x[i])
        torch.testing.assert_close(out[i].detach(), ref.detach(), rtol=0, atol=1e-12)
        (ref**2).sum().backward()
        for n, p in m.named_parameters():
            torch.testing.assert_close(params[n].grad[i], p.grad, rtol=0, atol=1e-12, )


@pytest.mark.parametrize("arch", [
    {"family": "mlp", "width": 16, "depth": 3, "activation": "gelu", "residual": True, "norm": "layernorm"},
    {"family": "mlp", "width": 16, "depth": 3, "activation": "silu", "residual": True, "norm": "none"},
], ids=["gelu-res-layernorm", "silu-res"])
@pytest.mark.parametrize("vectorize", ["auto", "vmap"])
def test_population_equals_one_at_a_time(task, arch, vectorize):
    """float64 oracle, as in tests/test_train.py: every member equals that member trained alone."""
    common = {"optimizer": "sgd", "momentum": 0.9, "schedule": "cosine", "batch_size": 128, "epochs": 2,
              "data_fraction": 0.25}
    members = [MemberConfig("a", seed=0, lr=0.05), MemberConfig("b", seed=1, lr=0.1, weight_decay=1e-3, label_noise=0.2),
               MemberConfig("c", seed=2, lr=0.025, weight_decay=5e-4)]
    pop = Population(task, arch, "kaiming_uniform", common, members, vectorize=vectorize, dtype=torch.float64)
    assert pop.vectorized_by == ("stacked" if vectorize == "auto" else "vmap")
    for epoch in (1, 2):
        pop.train_epoch(epoch)
    for i, m in enumerate(members):
        ref = plain_train(task, arch, "kaiming_uniform", common, m).state_dict()
        assert_oracle_equal(ref, pop.member_state(i), f"member {m.model_id}")
    init = nets.init_(nets.build("mlp", task, **{k: v for k, v in arch.items() if k != "family"}), 0).state_dict()
    assert (init["res2.fc.weight"].double() - pop.member_state(0)["res2.fc.weight"]).abs().max() > 1e-3
