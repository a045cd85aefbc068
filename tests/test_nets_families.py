"""ResNet, ViT, GPT and PINN families: shapes, parameter counts, causality, fx tracing,
vmap-over-functional_call populations and double backward (what the trainer and Hessian need)."""
from __future__ import annotations

import pytest
import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state, vmap

from zoo.nets.gpt import gpt
from zoo.nets.pinn import pinn
from zoo.nets.resnet import resnet
from zoo.nets.vit import vit

MNIST1D = (1, 40)  # (C, L)
DIGITS = (1, 8, 8)  # (C, H, W)
T, V = 16, 20  # gpt context length, vocabulary


def n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


# One small net per family with a matching input maker, for the generic checks below.
CASES = {
    "resnet": (lambda: resnet(DIGITS, 10, width=4), lambda n: torch.randn(n, *DIGITS)),
    "resnet1d": (lambda: resnet(MNIST1D, 10, width=4, depth=2), lambda n: torch.randn(n, *MNIST1D)),
    "vit": (lambda: vit(DIGITS, 10, width=16), lambda n: torch.randn(n, *DIGITS)),
    "gpt": (lambda: gpt((T,), V, width=16), lambda n: torch.randint(0, V, (n, T))),
    "pinn": (lambda: pinn((2,), 1, width=16), lambda n: torch.randn(n, 2)),
}


def _resnet_params(c_in: int, width: int, depth: int, stages: int, spatial: int, n_classes: int = 10) -> int:
    kk = 3**spatial
    total = c_in * width * kk + 2 * width  # stem conv (no bias) + BN (weight, bias)
    c = width
    for s in range(stages):
        c_out = width * 2**s
        for b in range(depth):
            total += c * c_out * kk + 2 * c_out + c_out * c_out * kk + 2 * c_out  # conv-BN-conv-BN
            if c != c_out or (s > 0 and b == 0):
                total += c * c_out + 2 * c_out  # 1x1 projection shortcut + BN
            c = c_out
    return total + c * n_classes + n_classes


def _block_params(width: int, mlp_ratio: int) -> int:
    h = width * mlp_ratio
    return 4 * width + (width * 3 * width + 3 * width) + (width * width + width) + (width * h + h) + (h * width + width)


# ---- shapes and sizes ------------------------------------------------------------------------
@pytest.mark.parametrize("width", [2, 8, 16])
def test_resnet_shapes_2d_and_1d(width):
    net2 = resnet(DIGITS, 10, width=width, depth=2, stages=3)
    assert isinstance(net2.stem, nn.Conv2d) and isinstance(net2.bn, nn.BatchNorm2d)
    assert tuple(net2(torch.randn(5, *DIGITS)).shape) == (5, 10)
    net1 = resnet(MNIST1D, 10, width=width)
    assert isinstance(net1.stem, nn.Conv1d) and isinstance(net1.bn, nn.BatchNorm1d)
    assert tuple(net1(torch.randn(5, *MNIST1D)).shape) == (5, 10)
    assert net2.head.in_features == width * 4 and net1.head.in_features == width * 2


@pytest.mark.parametrize("width,depth,stages", [(8, 1, 2), (4, 2, 2), (3, 1, 3), (5, 2, 1)])
def test_resnet_param_count(width, depth, stages):
    assert n_params(resnet(DIGITS, 10, width, depth, stages)) == _resnet_params(1, width, depth, stages, 2)
    assert n_params(resnet(MNIST1D, 10, width, depth, stages)) == _resnet_params(1, width, depth, stages, 1)


def test_resnet_default_by_hand():
    # stem 9*8 + 16; block 8->8: 2 * (9*64 + 16); block 8->16 /2: 9*128 + 32 + 9*256 + 32 + (128 + 32); head 170
    assert n_params(resnet(DIGITS, 10)) == 88 + 1184 + 3680 + 170 == 5122


@pytest.mark.parametrize("width", [8, 16, 32])
def test_vit_shapes_and_params(width):
    net = vit(DIGITS, 10, width=width, depth=2, heads=2, patch=2, mlp_ratio=2)
    assert tuple(net(torch.randn(5, *DIGITS)).shape) == (5, 10)
    assert tuple(net.pos_embed.shape) == (1, 16, width)
    want = (4 * width + width) + 16 * width + 2 * _block_params(width, 2) + 2 * width + (width * 10 + 10)
    assert n_params(net) == want
    assert tuple(vit(DIGITS, 10, width=width, patch=4)(torch.randn(2, *DIGITS)).shape) == (2, 10)


@pytest.mark.parametrize("width", [8, 16, 32])
def test_gpt_shapes_and_params(width):
    net = gpt((T,), V, width=width, depth=2, heads=4, mlp_ratio=4)
    assert tuple(net(torch.randint(0, V, (5, T))).shape) == (5, T, V)
    want = V * width + T * width + 2 * _block_params(width, 4) + 2 * width + (width * V + V)
    assert n_params(net) == want


@pytest.mark.parametrize("width", [4, 16, 32])
@pytest.mark.parametrize("depth", [1, 3])
def test_pinn_shapes_and_params(width, depth):
    net = pinn((2,), 1, width=width, depth=depth)
    assert tuple(net(torch.randn(5, 2)).shape) == (5, 1)
    assert n_params(net) == (2 * width + width) + (depth - 1) * (width * width + width) + (width + 1)
    assert [k for k, _ in net.named_children()][-2:] == [f"act{depth - 1}", "head"]
    assert all(isinstance(m, nn.Tanh) for k, m in net.named_children() if k.startswith("act"))


@pytest.mark.parametrize("family", list(CASES))
def test_head_is_last_linear_and_buffers(family):
    make, inp = CASES[family]
    net = make()
    assert isinstance(net.head, nn.Linear)
    assert [m for m in net.modules() if isinstance(m, nn.Linear)][-1] is net.head
    feats = []
    net.head.register_forward_hook(lambda m, a, out: feats.append(a[0]))
    net(inp(3))
    assert feats[0].shape[-1] == net.head.in_features
    buffers = {k for k, _ in net.named_buffers()}
    if family.startswith("resnet"):
        assert {"bn.running_mean", "bn.running_var", "bn.num_batches_tracked"} <= buffers
    else:
        assert not buffers and set(net.state_dict()) == {k for k, _ in net.named_parameters()}


# ---- causality ------------------------------------------------------------------------------
def test_gpt_is_causal():
    torch.manual_seed(0)
    net = gpt((T,), V, width=16, depth=2)
    x = torch.randint(0, V, (4, T))
    base = net(x)
    for t in (0, 5, T - 2):
        y = x.clone()
        y[:, t + 1:] = (y[:, t + 1:] + 1 + torch.randint(0, V - 1, y[:, t + 1:].shape)) % V  # change every later token
        out = net(y)
        assert torch.allclose(out[:, : t + 1], base[:, : t + 1], atol=1e-6)
        assert not torch.allclose(out[:, t + 1:], base[:, t + 1:], atol=1e-4)  # the future does change


# ---- fx, vmap, double backward ----------------------------------------------------------------
@pytest.mark.parametrize("family", list(CASES))
def test_fx_symbolic_trace(family):
    make, inp = CASES[family]
    net = make().eval()
    gm = torch.fx.symbolic_trace(net)
    x = inp(3)
    assert torch.allclose(gm(x), net(x), atol=1e-6)
    assert any(n.op == "call_module" and n.target == "head" for n in gm.graph.nodes)


def _members(make, k: int = 3, inp=None) -> list[nn.Module]:
    nets = []
    for seed in range(k):
        torch.manual_seed(seed)
        net = make()
        if inp is not None:  # give BatchNorm different running statistics per member
            with torch.no_grad():
                net.train()(inp(16) * (1 + seed))
        nets.append(net.eval())
    return nets


@pytest.mark.parametrize("family", list(CASES))
def test_vmap_functional_call_matches_members(family):
    make, inp = CASES[family]
    nets = _members(make, inp=inp if family.startswith("resnet") else None)
    params, buffers = stack_module_state(nets)
    x = torch.stack([inp(5) for _ in nets])  # (M, B, *input): each member its own batch

    def one(p, b, xb):
        return functional_call(nets[0], {**p, **b}, (xb,))

    out = vmap(one, in_dims=(0, 0, 0))(params, buffers, x)
    for i, net in enumerate(nets):
        assert torch.allclose(out[i], net(x[i]), atol=1e-5)


def test_resnet_vmap_in_train_mode_updates_each_members_statistics():
    make, inp = CASES["resnet"]
    nets = [net.train() for net in _members(make)]
    params, buffers = stack_module_state(nets)
    x = torch.stack([inp(8) * (1 + i) for i in range(len(nets))])
    out = vmap(lambda p, b, xb: functional_call(nets[0], {**p, **b}, (xb,)))(params, buffers, x)
    for i, net in enumerate(nets):
        assert torch.allclose(out[i], net(x[i]), atol=1e-5)  # also updates net's own statistics
        assert torch.allclose(buffers["bn.running_var"][i], net.bn.running_var, atol=1e-6)


def _hvp(net: nn.Module, loss_fn) -> list[torch.Tensor]:
    params = [p for p in net.parameters()]
    grads = torch.autograd.grad(loss_fn(), params, create_graph=True)
    vs = [torch.randn_like(p) for p in params]
    gv = sum((g * v).sum() for g, v in zip(grads, vs))
    return torch.autograd.grad(gv, params, create_graph=True)


@pytest.mark.parametrize("family", ["vit", "gpt"])
def test_double_backward_hvp_is_finite(family):
    torch.manual_seed(0)
    make, inp = CASES[family]
    net, x = make(), inp(6)
    if family == "vit":
        y = torch.randint(0, 10, (6,))
        hv = _hvp(net, lambda: F.cross_entropy(net(x), y))
    else:
        hv = _hvp(net, lambda: F.cross_entropy(net(x)[:, :-1].flatten(0, 1), x[:, 1:].flatten()))  # next token
    assert all(torch.isfinite(h).all() for h in hv)
    assert sum(h.abs().sum() for h in hv) > 0


def test_pinn_input_second_derivative():
    """The PDE loss differentiates u twice in x and then once more in the parameters."""
    torch.manual_seed(0)
    net = pinn((2,), 1, width=16, depth=3)
    tx = torch.randn(7, 2, requires_grad=True)
    u = net(tx)
    du = torch.autograd.grad(u.sum(), tx, create_graph=True)[0]  # (N, 2): u_t, u_x
    u_xx = torch.autograd.grad(du[:, 1].sum(), tx, create_graph=True)[0][:, 1]
    assert torch.isfinite(u_xx).all() and u_xx.abs().sum() > 0
    g = torch.autograd.grad((u_xx**2).mean(), list(net.parameters()), allow_unused=True)
    assert g[-1] is None  # the head's bias drops out of u_xx
    assert all(torch.isfinite(t).all() for t in g[:-1])


# ---- knob errors ------------------------------------------------------------------------------
@pytest.mark.parametrize("build,knob", [
    (lambda: resnet(DIGITS, 10, width=0), "width"),
    (lambda: resnet(DIGITS, 10, depth=0), "depth"),
    (lambda: resnet(DIGITS, 10, stages=0), "stages"),
    (lambda: vit(DIGITS, 10, patch=3), "patch"),
    (lambda: vit(DIGITS, 10, width=32, heads=3), "heads"),
    (lambda: vit(DIGITS, 10, width=0), "width"),
    (lambda: vit(DIGITS, 10, depth=0), "depth"),
    (lambda: gpt((T,), V, width=30, heads=4), "heads"),
    (lambda: gpt((T,), V, mlp_ratio=0), "mlp_ratio"),
    (lambda: pinn((2,), 1, width=0), "width"),
    (lambda: pinn((2,), 1, depth=0), "depth"),
])
def test_knob_errors_name_the_knob(build, knob):
    with pytest.raises(ValueError, match=knob):
        build()


def test_wrong_input_ranks_are_rejected():
    for build in (lambda: resnet((40,), 10), lambda: vit(MNIST1D, 10), lambda: gpt((1, 8), V), lambda: pinn((1, 2), 1)):
        with pytest.raises(ValueError, match="shape"):
            build()
