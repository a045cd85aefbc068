"""Architecture registry: mlp and cnn shapes and parameter counts, seeded init, registry errors."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

import zoo.nets
from zoo.errors import ZooError
from zoo.nets import build, init_, knobs, n_params

MNIST1D = (1, 40)  # (C, L)
DIGITS = (1, 8, 8)  # (C, H, W)


def _net(family, shape, **kw):
    return build(family, input_shape=shape, n_classes=10, **kw)


def _mlp_params(fan_in: int, width: int, depth: int, n_classes: int = 10) -> int:
    if depth == 0:
        return fan_in * n_classes + n_classes
    return (fan_in * width + width) + (depth - 1) * (width * width + width) + (width * n_classes + n_classes)


def _cnn_params(c_in: int, width: int, depth: int, k: int, spatial: int, n_classes: int = 10) -> int:
    kk = k**spatial
    return (c_in * width * kk + width) + (depth - 1) * (width * width * kk + width) + (width * n_classes + n_classes)


# ---- shapes and sizes ------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [MNIST1D, DIGITS], ids=["mnist1d", "digits"])
@pytest.mark.parametrize("width", [4, 16, 48])
@pytest.mark.parametrize("depth", [1, 2, 3])
def test_mlp_output_and_param_count(shape, width, depth):
    net = _net("mlp", shape, width=width, depth=depth)
    out = net(torch.randn(5, *shape))
    assert tuple(out.shape) == (5, 10)
    assert n_params(net) == _mlp_params(math.prod(shape), width, depth)


def test_mlp_depth2_hand_formula():
    for w in (4, 16, 48):
        net = _net("mlp", MNIST1D, width=w, depth=2)
        assert n_params(net) == 40 * w + w + w * w + w + w * 10 + 10
        linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
        assert len(linears) == 3  # depth 2 hidden layers + head


def test_mlp_depth0_is_linear():
    net = _net("mlp", MNIST1D, width=8, depth=0)
    assert n_params(net) == 40 * 10 + 10


@pytest.mark.parametrize("width", [4, 16, 48])
@pytest.mark.parametrize("depth", [1, 2, 3])
def test_cnn_mnist1d_uses_conv1d(width, depth):
    net = _net("cnn", MNIST1D, width=width, depth=depth)
    convs = [m for m in net.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d))]
    assert len(convs) == depth and all(isinstance(m, nn.Conv1d) for m in convs)
    assert tuple(net(torch.randn(3, *MNIST1D)).shape) == (3, 10)
    assert n_params(net) == _cnn_params(1, width, depth, 3, spatial=1)


@pytest.mark.parametrize("width", [4, 16, 48])
@pytest.mark.parametrize("depth", [1, 2, 3])
def test_cnn_digits_uses_conv2d(width, depth):
    net = _net("cnn", DIGITS, width=width, depth=depth)
    convs = [m for m in net.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d))]
    assert len(convs) == depth and all(isinstance(m, nn.Conv2d) for m in convs)
    assert tuple(net(torch.randn(3, *DIGITS)).shape) == (3, 10)
    assert n_params(net) == _cnn_params(1, width, depth, 3, spatial=2)


def test_cnn_rgb_input_channels():
    net = _net("cnn", (3, 6, 6), width=8, depth=2)
    assert tuple(net(torch.randn(2, 3, 6, 6)).shape) == (2, 10)
    assert n_params(net) == _cnn_params(3, 8, 2, 3, spatial=2)


def test_build_from_a_task_object():
    from zoo import tasks

    net = build("cnn", tasks.load("digits"), width=4, depth=2)
    assert isinstance(net.conv0, nn.Conv2d)
    assert tuple(net(torch.randn(2, 1, 8, 8)).shape) == (2, 10)


def test_build_needs_task_or_shapes():
    with pytest.raises(ValueError):
        build("mlp", width=4)


def test_width_larger_means_more_params():
    counts = [n_params(_net(f, MNIST1D, width=w)) for f in ("mlp", "cnn") for w in (4, 16, 48)]
    assert counts[0] < counts[1] < counts[2] and counts[3] < counts[4] < counts[5]


# ---- init ------------------------------------------------------------------------------------
def _state(net):
    return {k: v.clone() for k, v in net.state_dict().items()}


def _equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("family,shape", [("mlp", MNIST1D), ("cnn", MNIST1D), ("cnn", DIGITS)])
@pytest.mark.parametrize("scheme", ["kaiming_uniform", "torch_default"])
def test_init_is_deterministic_per_seed(family, shape, scheme):
    a = init_(_net(family, shape, width=16), seed=3, scheme=scheme)
    torch.manual_seed(12345)  # the global RNG must not matter
    b = init_(_net(family, shape, width=16), seed=3, scheme=scheme)
    c = init_(_net(family, shape, width=16), seed=4, scheme=scheme)
    assert _equal(_state(a), _state(b))
    sa, sc = _state(a), _state(c)
    for k in sa:  # every weight tensor differs between seeds
        if k.endswith("weight"):
            assert not torch.equal(sa[k], sc[k]), k


def test_init_returns_the_net_in_place():
    net = _net("mlp", MNIST1D, width=8)
    assert init_(net, seed=0) is net


@pytest.mark.parametrize("family,shape", [("mlp", MNIST1D), ("cnn", MNIST1D), ("cnn", DIGITS)])
def test_kaiming_uniform_bounds_and_zero_bias(family, shape):
    net = init_(_net(family, shape, width=48, depth=2), seed=0, scheme="kaiming_uniform")
    layers = [m for m in net.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))]
    assert layers
    for m in layers:
        fan_in = m.weight[0].numel()
        bound = math.sqrt(6.0 / fan_in)
        w = m.weight.detach()
        assert float(w.abs().max()) <= bound + 1e-6
        if w.numel() >= 400:  # a uniform sample fills its range: the bound is not much too loose
            assert float(w.abs().max()) > 0.9 * bound
            assert abs(float(w.std()) - bound / math.sqrt(3)) < 0.15 * bound / math.sqrt(3)
        assert m.bias is not None and torch.count_nonzero(m.bias) == 0


def test_torch_default_differs_from_kaiming_uniform():
    a = init_(_net("mlp", MNIST1D, width=32), seed=0, scheme="kaiming_uniform")
    b = init_(_net("mlp", MNIST1D, width=32), seed=0, scheme="torch_default")
    sa, sb = _state(a), _state(b)
    assert not _equal(sa, sb)
    biases = [v for k, v in sb.items() if k.endswith("bias")]
    assert biases and all(torch.count_nonzero(v) > 0 for v in biases)
    # torch's default (a = sqrt 5) gives bound 1/sqrt(fan_in): smaller than Kaiming's sqrt(6/fan_in)
    w = b.fc0.weight.detach()
    assert float(w.abs().max()) <= 1 / math.sqrt(40) + 1e-6


def test_unknown_init_scheme():
    with pytest.raises(ZooError) as ei:
        init_(_net("mlp", MNIST1D, width=4), seed=0, scheme="xavier")
    assert "xavier" in str(ei.value) and "kaiming_uniform" in str(ei.value)


# ---- registry --------------------------------------------------------------------------------
def test_unknown_family_lists_valid():
    with pytest.raises(ZooError) as ei:
        build("resnet9", input_shape=MNIST1D, n_classes=10)
    msg = str(ei.value)
    assert "resnet9" in msg and "cnn" in msg and "mlp" in msg


def test_unknown_knob_is_named():
    with pytest.raises(ZooError) as ei:
        build("mlp", input_shape=MNIST1D, n_classes=10, dropout=0.5)
    msg = str(ei.value)
    assert "dropout" in msg and "width" in msg and "depth" in msg


def test_knobs():
    k = knobs("mlp")
    assert {"width", "depth"} <= set(k) and "input_shape" not in k and "n_classes" not in k
    assert {"width", "depth", "kernel_size"} <= set(knobs("cnn"))
    assert zoo.nets.names() == ["cnn", "gpt", "mlp", "pinn", "resnet", "vit"]
    with pytest.raises(ZooError, match="mlp"):
        knobs("transformer")
