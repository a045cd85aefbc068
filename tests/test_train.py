"""Population training: equal to one model at a time, divergence frozen, reproducible."""
from __future__ import annotations

import pytest
import torch

from tests.reference import ORACLE_RTOL, assert_oracle_equal, oracle_diff, plain_train, step_errors
from zoo import nets, tasks
from zoo.train import MemberConfig, Population, lr_multiplier, noisy_labels, train_subset

ARCH = {"family": "mlp", "width": 16, "depth": 2}
CNN = {"family": "cnn", "width": 8, "depth": 2}
OPTIMIZERS = [
    {"optimizer": "sgd", "momentum": 0.9, "schedule": "cosine"},
    {"optimizer": "sgd", "momentum": 0.9, "nesterov": True, "schedule": "onecycle"},
    {"optimizer": "adam", "schedule": "constant"},
    {"optimizer": "adamw", "schedule": "cosine"},
]
OPTIMIZER_IDS = ["sgd-cosine", "nesterov-onecycle", "adam", "adamw"]


@pytest.fixture(scope="module")
def task():
    return tasks.load("mnist1d")


def _mlp_case(common: dict, data_fraction: float = 0.5):
    common = {**common, "batch_size": 128, "epochs": 2, "data_fraction": data_fraction}
    lr = 0.05 if common["optimizer"] == "sgd" else 0.003
    members = [
        MemberConfig("a", seed=0, lr=lr, weight_decay=0.0),
        MemberConfig("b", seed=1, lr=lr * 2, weight_decay=1e-3, label_noise=0.2),
        MemberConfig("c", seed=2, lr=lr / 2, weight_decay=5e-4),
    ]
    return common, members


def _cnn_case(task_name: str, data_fraction: float | None = None):
    default = 0.5 if task_name == "mnist1d" else 1.0
    common = {"optimizer": "sgd", "momentum": 0.9, "batch_size": 64, "epochs": 2, "schedule": "constant",
              "data_fraction": data_fraction or default}
    return common, [MemberConfig("a", 0, 0.05, weight_decay=1e-3), MemberConfig("b", 1, 0.1)]


@pytest.mark.parametrize("common", OPTIMIZERS, ids=OPTIMIZER_IDS)
@pytest.mark.parametrize("vectorize", ["auto", "vmap"])
def test_population_equals_one_at_a_time(task, common, vectorize):
    """float64 oracle: every member of the population equals that member trained alone."""
    common, members = _mlp_case(common)
    pop = Population(task, ARCH, "kaiming_uniform", common, members, vectorize=vectorize, dtype=torch.float64)
    for epoch in (1, 2):
        pop.train_epoch(epoch)
    for i, m in enumerate(members):
        ref = plain_train(task, ARCH, "kaiming_uniform", common, m).state_dict()
        assert_oracle_equal(ref, pop.member_state(i), f"member {m.model_id}")
    # and training moved the weights (the comparison is not trivially between two inits)
    init = nets.init_(nets.build("mlp", task, width=16, depth=2), 0).state_dict()
    assert (init["fc0.weight"].double() - pop.member_state(0)["fc0.weight"]).abs().max() > 1e-3


@pytest.mark.parametrize("vectorize", ["auto", "vmap"])
@pytest.mark.parametrize("task_name", ["digits", "mnist1d"])
def test_cnn_population_equals_one_at_a_time(task_name, vectorize):
    task = tasks.load(task_name)
    common, members = _cnn_case(task_name, 0.1 if task_name == "mnist1d" else 0.3)  # float64 convs are slow; 2 x 7 steps
    pop = Population(task, CNN, "kaiming_uniform", common, members, vectorize=vectorize, dtype=torch.float64)
    assert pop.vectorized_by == ("stacked" if vectorize == "auto" else "vmap")
    pop.train_epoch(1)
    pop.train_epoch(2)
    for i, m in enumerate(members):
        ref = plain_train(task, CNN, "kaiming_uniform", common, m).state_dict()
        assert_oracle_equal(ref, pop.member_state(i), f"member {m.model_id}")


@pytest.mark.parametrize("case", OPTIMIZER_IDS + ["cnn-digits", "cnn-mnist1d"])
@pytest.mark.parametrize("vectorize", ["auto", "vmap"])
def test_float32_step_follows_the_error_model(task, case, vectorize):
    """The float32 trainer the build uses: 8 steps, each from the same state as a plain
    torch.optim step, within the per-step error model of tests/reference.py."""
    if case.startswith("cnn"):
        name = case.split("-")[1]
        common, members = _cnn_case(name)
        t, arch = tasks.load(name), CNN
    else:
        common, members = _mlp_case(OPTIMIZERS[OPTIMIZER_IDS.index(case)])
        t, arch = task, ARCH
    pop = Population(t, arch, "kaiming_uniform", common, members, vectorize=vectorize)
    assert pop.dtype == torch.float32 and pop.params["fc0.weight" if arch is ARCH else "conv0.weight"].dtype == torch.float32
    ratios = step_errors(pop, steps=8)
    assert len(ratios) == 8 and max(ratios) <= 1.0
    assert pop.step_count == 8


def _break(pop: Population, bug: str) -> None:
    """Plant one bug in a member's update (member 1 unless said otherwise)."""
    if bug == "lr":  # member 1's learning rate off by one part in 10^6
        pop.lr[1] *= 1 + 1e-6
    elif bug == "swapped_lr":
        pop.lr[[1, 2]] = pop.lr[[2, 1]]
    elif bug == "data_order":  # member 1 draws member 0's batches
        pop.order_gens[1] = torch.Generator().manual_seed(pop.order_gens[0].initial_seed())
    elif bug == "weight_decay":
        pop.wd[1] = 0.0
    elif bug == "label_noise":  # member 1 trains on the clean labels
        pop.y[1] = pop.y[0]


@pytest.mark.parametrize("bug", ["lr", "swapped_lr", "data_order", "weight_decay", "label_noise"])
def test_the_oracle_catches_a_broken_member_update(task, bug):
    """Each planted bug changes one member's training; the float64 oracle must see it, so a pass
    of the tests above means something."""
    common, members = _mlp_case(OPTIMIZERS[0], data_fraction=0.25)  # 2 epochs x 8 steps
    pop = Population(task, ARCH, "kaiming_uniform", common, members, dtype=torch.float64)
    _break(pop, bug)
    diff = oracle_diff(task, ARCH, "kaiming_uniform", common, members, pop)
    assert diff > 100 * ORACLE_RTOL, f"bug {bug!r} went unnoticed (worst relative difference {diff:.3g})"


def test_the_oracle_passes_the_unbroken_population(task):
    common, members = _mlp_case(OPTIMIZERS[0], data_fraction=0.25)
    pop = Population(task, ARCH, "kaiming_uniform", common, members, dtype=torch.float64)
    assert oracle_diff(task, ARCH, "kaiming_uniform", common, members, pop) <= ORACLE_RTOL


@pytest.mark.parametrize("bug", ["swapped_lr", "weight_decay", "label_noise"])
def test_the_float32_step_check_catches_a_broken_member_update(task, bug):
    common, members = _mlp_case(OPTIMIZERS[0])
    pop = Population(task, ARCH, "kaiming_uniform", common, members)
    _break(pop, bug)
    with pytest.raises(AssertionError, match="error model"):
        step_errors(pop, steps=8)


def test_divergence_is_frozen_and_recorded(task):
    common = {"optimizer": "sgd", "momentum": 0.9, "batch_size": 64, "epochs": 2, "data_fraction": 0.25}
    members = [MemberConfig("ok", 0, 0.05), MemberConfig("boom", 0, 1e30)]
    res = Population(task, ARCH, "kaiming_uniform", common, members).fit([0, 2])
    ok, boom = res
    assert ok.status == "ok" and ok.diverged_epoch is None
    assert boom.status == "diverged" and boom.diverged_epoch == 1
    # the healthy member trained normally next to it: the float64 oracle of the same pair (lr 1e300
    # overflows float64 as 1e30 overflows float32) equals the healthy member trained alone
    pair = Population(task, ARCH, "kaiming_uniform", common, [members[0], MemberConfig("boom", 0, 1e300)],
                      dtype=torch.float64)
    assert [r.status for r in pair.fit([0, 2])] == ["ok", "diverged"]
    ref = plain_train(task, ARCH, "kaiming_uniform", common, members[0]).state_dict()
    assert_oracle_equal(ref, pair.member_state(0), "healthy member beside a diverged one")
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
