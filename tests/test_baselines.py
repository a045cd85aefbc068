"""The initialization baselines (hypernet.baselines): each against its known answer."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hypernet.baselines import hadamard, lsuv, orthogonal, selection_indices, weight_selection, zero
from zoo import nets, tasks
from zoo.errors import ZooError


def mlp(width=32, depth=2, seed=0):
    return nets.init_(nets.build("mlp", tasks.load("mnist1d"), width=width, depth=depth), seed)


def linears(net):
    return [m for m in net.modules() if isinstance(m, torch.nn.Linear)]


def test_lsuv_gives_every_layer_unit_output_variance_on_its_batch():
    task = tasks.load("mnist1d")
    x = task.x_train[:512]
    net = lsuv(mlp(), x, seed=3)
    outs = []
    hooks = [m.register_forward_hook(lambda mod, i, o: outs.append(o)) for m in linears(net)]
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    assert len(outs) == 3
    for o in outs:
        assert abs(float(o.var()) - 1) < 0.01
    # on other data the variances are near 1, not exactly 1: it is the batch's statistic
    with torch.no_grad():
        assert abs(float(net(task.x_train[512:1024]).var()) - 1) < 0.3


def test_orthogonal_rows_are_orthonormal_times_the_gain():
    net = orthogonal(mlp(width=16), seed=1, gain=2.0)
    for m in linears(net):
        w = m.weight
        gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
        assert torch.allclose(gram, 4.0 * torch.eye(gram.shape[0]), atol=1e-5)
        assert (m.bias == 0).all()
    a, b = orthogonal(mlp(width=16), seed=1), orthogonal(mlp(width=16), seed=1)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_hadamard():
    h = hadamard(8)
    assert torch.equal(h @ h.T, 8 * torch.eye(8)) and set(h.unique().tolist()) == {-1.0, 1.0}
    with pytest.raises(ValueError, match="power of 2"):
        hadamard(6)


def test_zero_is_deterministic_structured_and_trains():
    a, b = zero(mlp(width=32, seed=0)), zero(mlp(width=32, seed=7))  # the seed of the net does not matter
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    first, hidden, last = linears(a)
    assert first.weight.shape == (32, 40)  # narrowing: the partial identity
    assert torch.equal(first.weight, torch.eye(32, 40))
    assert torch.equal(hidden.weight, torch.eye(32)) and (last.weight == 0).all()
    wide = zero(nets.build("mlp", tasks.load("mnist1d"), width=64, depth=1))
    w = linears(wide)[0].weight  # widening 40 -> 64: c H I*, m = 6, c = 2^(-5/2)
    assert torch.allclose(w, 2 ** -2.5 * hadamard(64)[:, :40])
    task = tasks.load("mnist1d")
    x, y = task.x_train[:512], task.y_train[:512]
    opt = torch.optim.SGD(a.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for _ in range(30):
        loss = F.cross_entropy(a(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.9 * losses[0]
    with pytest.raises(ZooError, match="ZerO initializes Linear / Conv layers; ReLU has none"):
        zero(torch.nn.ReLU())


def test_weight_selection_of_a_net_from_itself_is_the_identity_and_selects_consistently():
    big = mlp(width=64, seed=2)
    same = weight_selection(mlp(width=64, seed=9), big.state_dict())
    assert all(torch.equal(big.state_dict()[k], v) for k, v in same.state_dict().items())
    small = weight_selection(mlp(width=16, seed=9), big.state_dict())
    idx = selection_indices(16, 64)
    assert idx.tolist()[0] == 0 and idx.tolist()[-1] == 63 and len(set(idx.tolist())) == 16
    b, s = linears(big), linears(small)
    assert torch.equal(s[0].weight, b[0].weight[idx])
    assert torch.equal(s[1].weight, b[1].weight[idx][:, idx])  # the same units on both sides
    assert torch.equal(s[2].weight, b[2].weight[:, idx]) and torch.equal(s[2].bias, b[2].bias)
    with pytest.raises(ZooError, match="every dimension must be at least as large"):
        weight_selection(mlp(width=64), mlp(width=16).state_dict())
    with pytest.raises(ZooError, match="the larger net has no tensor"):
        weight_selection(mlp(width=16, depth=3), big.state_dict())
