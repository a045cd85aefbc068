"""Population training: equal to one model at a time, divergence frozen, reproducible."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from zoo import nets, tasks
from zoo.train import MemberConfig, Population, derived_seed, lr_multiplier, noisy_labels, train_subset

ARCH = {"family": "mlp", "width": 16, "depth": 2}


def plain_train(task, arch, init, common, m: MemberConfig) -> dict:
    """The reference: one nn.Module, torch.optim, a plain loop; the same data subset/labels/order."""
    knobs = {k: v for k, v in arch.items() if k != "family"}
    net = nets.init_(nets.build(arch["family"], task, **knobs), m.seed, init)
    sub = train_subset(task.n_train, common.get("data_fraction", 1.0))
    x, y = task.x_train[sub], noisy_labels(task.y_train[sub], m.label_noise, task.n_classes)
    opt_name = common["optimizer"]
    if opt_name == "sgd":
        opt = torch.optim.SGD(net.parameters(), lr=m.lr, momentum=common.get("momentum", 0.0),
                              nesterov=common.get("nesterov", False), weight_decay=m.weight_decay)
    elif opt_name == "adam":
        opt = torch.optim.Adam(net.parameters(), lr=m.lr, weight_decay=m.weight_decay)
    else:
        opt = torch.optim.AdamW(net.parameters(), lr=m.lr, weight_decay=m.weight_decay)
    B, n, E = common["batch_size"], x.shape[0], common["epochs"]
    total = -(-n // B) * E
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_multiplier(common.get("schedule", "constant"), s, total))
    g = torch.Generator().manual_seed(derived_seed("order", m.seed))
    for _ in range(E):
        perm = torch.randperm(n, generator=g)
        for s in range(0, n, B):
            idx = perm[s : s + B]
            opt.zero_grad()
            F.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
            sched.step()
    return net.state_dict()


@pytest.fixture(scope="module")
def task():
    return tasks.load("mnist1d")


@pytest.mark.parametrize(
    "common",
    [
        {"optimizer": "sgd", "momentum": 0.9, "schedule": "cosine"},
        {"optimizer": "sgd", "momentum": 0.9, "nesterov": True, "schedule": "onecycle"},
        {"optimizer": "adam", "schedule": "constant"},
        {"optimizer": "adamw", "schedule": "cosine"},
    ],
    ids=["sgd-cosine", "nesterov-onecycle", "adam", "adamw"],
)
@pytest.mark.parametrize("vectorize", ["auto", "vmap"])
def test_population_equals_one_at_a_time(task, common, vectorize):
    common = {**common, "batch_size": 128, "epochs": 2, "data_fraction": 0.5}
    lr = 0.05 if common["optimizer"] == "sgd" else 0.003
    members = [
        MemberConfig("a", seed=0, lr=lr, weight_decay=0.0),
        MemberConfig("b", seed=1, lr=lr * 2, weight_decay=1e-3, label_noise=0.2),
        MemberConfig("c", seed=2, lr=lr / 2, weight_decay=5e-4),
    ]
    pop = Population(task, ARCH, "kaiming_uniform", common, members, vectorize=vectorize)
    for epoch in (1, 2):
        pop.train_epoch(epoch)
    for i, m in enumerate(members):
        ref = plain_train(task, ARCH, "kaiming_uniform", common, m)
        got = pop.member_state(i)
        assert ref.keys() == got.keys()
        for k in ref:
            diff = (ref[k] - got[k]).abs().max().item()
            assert diff < 1e-5, f"member {m.model_id} {k}: max diff {diff}"
    # and training moved the weights (the comparison is not trivially between two inits)
    init = nets.init_(nets.build("mlp", task, width=16, depth=2), 0).state_dict()
    assert (init["fc0.weight"] - pop.member_state(0)["fc0.weight"]).abs().max() > 1e-3


@pytest.mark.parametrize("vectorize", ["auto", "vmap"])
@pytest.mark.parametrize("task_name", ["digits", "mnist1d"])
def test_cnn_population_equals_one_at_a_time(task_name, vectorize):
    task = tasks.load(task_name)
    arch = {"family": "cnn", "width": 8, "depth": 2}
    common = {"optimizer": "sgd", "momentum": 0.9, "batch_size": 64, "epochs": 2, "schedule": "constant",
              "data_fraction": 0.5 if task_name == "mnist1d" else 1.0}
    members = [MemberConfig("a", 0, 0.05, weight_decay=1e-3), MemberConfig("b", 1, 0.1)]
    pop = Population(task, arch, "kaiming_uniform", common, members, vectorize=vectorize)
    assert pop.vectorized_by == ("stacked" if vectorize == "auto" else "vmap")
    pop.train_epoch(1)
    pop.train_epoch(2)
    for i, m in enumerate(members):
        ref = plain_train(task, arch, "kaiming_uniform", common, m)
        for k, v in ref.items():
            assert (v - pop.member_state(i)[k]).abs().max().item() < 1e-5, k


def test_divergence_is_frozen_and_recorded(task):
    common = {"optimizer": "sgd", "momentum": 0.9, "batch_size": 64, "epochs": 2, "data_fraction": 0.25}
    members = [MemberConfig("ok", 0, 0.05), MemberConfig("boom", 0, 1e30)]
    res = Population(task, ARCH, "kaiming_uniform", common, members).fit([0, 2])
    ok, boom = res
    assert ok.status == "ok" and ok.diverged_epoch is None
    assert boom.status == "diverged" and boom.diverged_epoch == 1
    # the healthy member trained normally next to it: same as training it alone
    alone = Population(task, ARCH, "kaiming_uniform", common, [MemberConfig("ok", 0, 0.05)]).fit([0, 2])[0]
    assert ok.curves["test_acc"] == pytest.approx(alone.curves["test_acc"], abs=1e-6)
    assert ok.checkpoints[2]["metrics"]["test_acc"] > ok.checkpoints[0]["metrics"]["test_acc"] + 0.05
    # the diverged member's rows are still written (with its frozen weights), curves complete
    assert set(boom.checkpoints) == {0, 2} and len(boom.curves["train_loss"]) == 3


def test_fit_is_bitwise_reproducible(task):
    common = {"optimizer": "sgd", "momentum": 0.9, "batch_size": 128, "epochs": 1, "data_fraction": 0.25}
    mk = lambda: Population(task, ARCH, "kaiming_uniform", common, [MemberConfig("a", 3, 0.1)]).fit([0, 1])[0]
    a, b = mk(), mk()
    assert a.curves == b.curves
    for k, v in a.checkpoints[1]["state"].items():
        assert (v == b.checkpoints[1]["state"][k]).all()


def test_checkpoint_metrics_match_the_curve_and_single_model_evaluation(task):
    import zoo
    from zoo.train import evaluate_module

    common = {"optimizer": "sgd", "momentum": 0.9, "batch_size": 128, "epochs": 2, "data_fraction": 0.25}
    pop = Population(task, ARCH, "kaiming_uniform", common, [MemberConfig("a", 0, 0.05), MemberConfig("b", 1, 0.1)])
    res = pop.fit([0, 2])
    for i, r in enumerate(res):
        m = r.checkpoints[2]["metrics"]
        assert r.curves["test_acc"][2] == m["test_acc"]
        assert len(r.curves["train_loss"]) == 3
        ev = zoo.evaluate(pop.member_module(i), task)
        assert ev == {"test_loss": m["test_loss"], "test_acc": m["test_acc"]}
    # the vectorized per-epoch evaluation agrees with the single-model one at the other epochs
    net = pop.member_module(0)
    direct = evaluate_module(net, task.x_test, task.y_test)
    assert res[0].curves["test_loss"][2] == pytest.approx(direct["loss"], rel=1e-5)


def test_schedules():
    assert lr_multiplier("constant", 5, 10) == 1.0
    assert lr_multiplier("cosine", 0, 10) == 1.0
    assert lr_multiplier("cosine", 10, 10) == pytest.approx(0.0, abs=1e-12)
    assert lr_multiplier("cosine", 5, 10) == pytest.approx(0.5)
    vals = [lr_multiplier("onecycle", s, 100) for s in range(101)]
    assert vals[0] == pytest.approx(1 / 25) and max(vals) == pytest.approx(1.0)
    assert vals.index(max(vals)) == 30 and vals[-1] == pytest.approx(1 / 25e4)
    with pytest.raises(ValueError, match="valid: constant, cosine, onecycle"):
        lr_multiplier("step", 0, 10)


def test_data_subset_and_label_noise_are_fixed_per_cell():
    a, b = train_subset(4000, 0.25), train_subset(4000, 0.25)
    assert a.equal(b) and a.numel() == 1000 and a.unique().numel() == 1000
    y = torch.arange(1000) % 10
    n1, n2 = noisy_labels(y, 0.3, 10), noisy_labels(y, 0.3, 10)
    assert n1.equal(n2)
    assert (n1 != y).float().mean().item() == pytest.approx(0.3)
    assert noisy_labels(y, 0.0, 10).equal(y)
