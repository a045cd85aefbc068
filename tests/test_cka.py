"""Linear CKA: known answers and invariances; penultimate features of a zoo MLP."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from zoo import nets
from zoo.landscape import linear_cka, mean_pairwise_cka, penultimate_and_logits


def features(n=500, p=20, seed=0):
    return torch.randn(n, p, generator=torch.Generator().manual_seed(seed))


def orthogonal(p=20, seed=1):
    Q, _ = torch.linalg.qr(torch.randn(p, p, generator=torch.Generator().manual_seed(seed)))
    return Q


def test_identical_features_give_one():
    X = features()
    assert linear_cka(X, X) == pytest.approx(1.0, abs=1e-10)


def test_invariant_to_orthogonal_transform_and_isotropic_scaling():
    X = features()
    Y = torch.relu(X[:, :10]) + 0.1 * features(p=10, seed=4)  # a related, different representation
    base = linear_cka(X, Y)
    assert 0.05 < base < 0.95
    assert linear_cka(X @ orthogonal(), Y) == pytest.approx(base, abs=1e-6)
    assert linear_cka(3.7 * X, Y) == pytest.approx(base, abs=1e-6)
    assert linear_cka(X @ orthogonal(), X) == pytest.approx(1.0, abs=1e-6)


def test_not_invariant_to_anisotropic_scaling():
    """The invariance is specific: scaling one feature changes CKA (guards a trivial implementation)."""
    X = features()
    S = torch.ones(20)
    S[0] = 10.0
    assert linear_cka(X * S, X) < 0.9


def test_independent_features_near_zero():
    assert linear_cka(features(2000, 20, 0), features(2000, 20, 1)) < 0.1


def test_symmetric_and_mean_shift_invariant():
    X = features()
    Y = features(p=7, seed=2) + X[:, :7]
    assert linear_cka(X, Y) == pytest.approx(linear_cka(Y, X), abs=1e-12)
    assert linear_cka(X + 5.0, Y) == pytest.approx(linear_cka(X, Y), abs=1e-6)  # columns are centered


def test_constant_features_give_nan():
    X = features()
    assert math.isnan(linear_cka(torch.ones(500, 3), X))
    assert math.isnan(mean_pairwise_cka([X, torch.zeros(500, 4)]))


def test_mismatched_rows_raise():
    with pytest.raises(ValueError, match="same rows"):
        linear_cka(features(100), features(99))


def test_mean_pairwise_cka():
    X = features()
    assert mean_pairwise_cka([X, X @ orthogonal(), 2 * X]) == pytest.approx(1.0, abs=1e-6)
    A, B, C = features(seed=0), features(seed=1), features(seed=2)
    expected = (linear_cka(A, B) + linear_cka(A, C) + linear_cka(B, C)) / 3
    assert mean_pairwise_cka([A, B, C]) == pytest.approx(expected, abs=1e-12)
    assert math.isnan(mean_pairwise_cka([X]))


def test_penultimate_and_logits_on_zoo_mlp():
    net = nets.init_(nets.build("mlp", "mnist1d", width=16, depth=2), seed=0)
    x = torch.randn(37, 1, 40, generator=torch.Generator().manual_seed(0))
    h, logits = penultimate_and_logits(net, x)
    assert h.shape == (37, 16) and logits.shape == (37, 10)
    assert torch.equal(logits, net(x))
    assert bool((h >= 0).all())  # the input of the head is the last ReLU's output
    assert torch.equal(h, net[:-1](x))
    assert net.training  # mode restored


def test_non_linear_last_layer_raises():
    net = nn.Sequential(nn.Linear(4, 3), nn.ReLU())
    with pytest.raises(ValueError, match="ReLU"):
        penultimate_and_logits(net, torch.randn(2, 4))
    with pytest.raises(ValueError, match="no"):
        penultimate_and_logits(nn.Sequential(nn.ReLU()), torch.randn(2, 4))


def test_penultimate_of_a_sequence_model_is_per_position():
    net = nets.init_(nets.build("gpt", input_shape=(8,), n_classes=11, width=16, depth=1), seed=0)
    x = torch.randint(0, 11, (5, 8), generator=torch.Generator().manual_seed(0))
    h, logits = penultimate_and_logits(net, x)
    assert h.shape == (40, 16) and logits.shape == (40, 11)  # every position is one prediction
    assert torch.equal(logits, net(x).reshape(40, 11))
    assert torch.allclose(net.head(h), logits)
