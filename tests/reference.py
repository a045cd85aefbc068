"""The reference every population test compares with: one nn.Module, torch.optim, a plain loop.

Two checks, both meant to hold on any CPU:

1. **float64 oracle** (`plain_train` + `assert_oracle_equal`): the population and the plain loop
   both train in float64 (inits drawn in float32 as in a real build, then cast). Two correct
   implementations differ only by the summation order of their kernels; in float64 (unit
   roundoff 1.1e-16) that is ~1e-15 relative after the tests' few epochs (measured: <= 9e-16),
   even after the growth that makes float32 runs drift to ~1e-4. ORACLE_RTOL = 1e-10 leaves five
   orders of magnitude for another CPU's kernels, while any real bug (a member's lr off by 1e-6,
   its data order, weight decay, a missed BatchNorm update) moves weights by far more.

2. **float32 per step** (`assert_float32_steps`): from the same float32 state, one step of each,
   compared with an error model of one step rather than after many (where chaotic growth makes any
   fixed tolerance a property of the machine). Each side computes p1 = p0 - lr * u(g); both round
   p1 (<= 2^-24 |p1| each) and compute the update u from gradients that are sums of products
   whose order differs. Standard floating-point summation bounds (Higham, gamma_n = n u) give a
   relative error of the update of at most ~n u per reduction of length n, and a forward-backward
   chains a few of them: with n <= 4096 here (batch x fan-in at most), n u = 2.4e-4. So:
       |p1_pop - p1_ref| <= 2 u |p1|_max + STEP_RTOL |p1_ref - p0|_max,   STEP_RTOL = 1e-3
   per tensor. Measured on the tests' nets: at most 4% of that bound (AdamW; SGD below 1%); a
   wrong lr, decay or label of a member gives O(1e-2..1) of the update.
"""
from __future__ import annotations

import math
import warnings
from contextlib import contextmanager, nullcontext

import torch

from zoo import nets
from zoo.objectives import single_forward
from zoo.train import MemberConfig, Population, derived_seed, lr_multiplier, noisy_labels, train_subset

ORACLE_RTOL = 1e-10
F32_ROUNDOFF = 2.0**-24
STEP_RTOL = 1e-3


@contextmanager
def no_onednn():
    """oneDNN off: in torch 2.13 (CPU) its conv2d weight gradient is wrong for a 1x1 stride-2
    convolution on a channels_last input, which a plain ResNet on 1-channel 8x8 digits gets
    (an (N, 1, 8, 8) batch counts as channels_last, and the stem's output keeps that layout):
    the reference must be right, so it runs on the native kernels."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # flags() warns about TF32 on Intel GPUs
        with torch.backends.mkldnn.flags(enabled=False):
            yield


def make_optimizer(params, common: dict, m: MemberConfig) -> torch.optim.Optimizer:
    opt = common.get("optimizer", "sgd")
    if opt == "sgd":
        return torch.optim.SGD(params, lr=m.lr, momentum=common.get("momentum", 0.0),
                               nesterov=common.get("nesterov", False), weight_decay=m.weight_decay)
    kw = {"lr": m.lr, "weight_decay": m.weight_decay, "eps": common.get("eps", 1e-8),
          "betas": tuple(common.get("betas", (0.9, 0.999)))}
    return (torch.optim.Adam if opt == "adam" else torch.optim.AdamW)(params, **kw)


def member_data(task, common: dict, m: MemberConfig):
    """The member's training subset and (possibly noisy) labels, as the population draws them."""
    sub = train_subset(task.n_train, common.get("data_fraction", 1.0))
    x, y = task.x_train[sub], task.y_train[sub]
    if task.objective.label_noise and y.dim() == 1:
        y = noisy_labels(y, m.label_noise, task.n_classes)
    return x, y


def build_net(task, arch: dict, init: str, m: MemberConfig, dtype=torch.float32) -> torch.nn.Module:
    knobs = {k: v for k, v in arch.items() if k != "family"}
    return nets.init_(nets.build(arch["family"], task, **knobs), m.seed, init).to(dtype)


def plain_train(task, arch: dict, init: str, common: dict, m: MemberConfig, dtype=torch.float64) -> torch.nn.Module:
    """Train one member alone: its init (drawn in float32, then cast), its data order, lr, weight
    decay and label noise, the task objective's loss on one model, torch.optim and LambdaLR."""
    task = task.to(dtype)
    net = build_net(task, arch, init, m, dtype)
    x, y = member_data(task, common, m)
    opt = make_optimizer(net.parameters(), common, m)
    B, n, E = common["batch_size"], x.shape[0], common["epochs"]
    total = -(-n // B) * E
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_multiplier(common.get("schedule", "constant"), s, total))
    g = torch.Generator().manual_seed(derived_seed("order", m.seed))
    fwd = single_forward(net)
    net.train()
    with no_onednn():
        for _ in range(E):
            perm = torch.randperm(n, generator=g)
            for s in range(0, n, B):
                idx = perm[s : s + B]
                opt.zero_grad()
                task.objective.losses(fwd, {}, {}, x[idx].unsqueeze(0), y[idx].unsqueeze(0))[0].backward()
                opt.step()
                sched.step()
    return net


def max_rel_diff(ref: dict, got: dict) -> tuple[float, str]:
    """The largest max|ref - got| / max|ref| over the floating-point tensors, and its name
    (inf for an integer tensor that differs)."""
    assert list(ref) == list(got)
    worst, name = 0.0, ""
    for k, v in ref.items():
        assert v.shape == got[k].shape, k
        if not v.is_floating_point():  # counters (BatchNorm's num_batches_tracked) agree exactly
            if not torch.equal(v, got[k]):
                return math.inf, k
            continue
        d = ((v.double() - got[k].double()).abs().max() / v.double().abs().max().clamp_min(1e-30)).item()
        if d > worst:
            worst, name = d, k
    return worst, name


def assert_oracle_equal(ref: dict, got: dict, what: str) -> None:
    d, k = max_rel_diff(ref, got)
    assert d <= ORACLE_RTOL, f"{what} {k}: relative difference {d:.3g} > {ORACLE_RTOL:g} (float64 oracle)"


def oracle_diff(task, arch, init, common, members, pop: Population) -> float:
    """Train `pop` for common['epochs'] epochs and return the worst relative difference of any
    member's state from its float64 plain-loop reference."""
    for epoch in range(1, int(common["epochs"]) + 1):
        pop.train_epoch(epoch)
    return max(max_rel_diff(plain_train(task, arch, init, common, m).state_dict(), pop.member_state(i))[0]
               for i, m in enumerate(members))


def _load_optimizer_state(opt: torch.optim.Optimizer, net: torch.nn.Module, pop: Population, i: int) -> None:
    """Copy member i's optimizer state (momentum buffer / Adam moments and step) into torch.optim."""
    params = dict(net.named_parameters())
    for name, st in pop._opt_state.items():
        p = params[name]
        if "buf" in st:
            opt.state[p]["momentum_buffer"] = st["buf"][i].detach().clone()
        if "m" in st:
            opt.state[p].update(step=torch.tensor(float(pop.step_count)), exp_avg=st["m"][i].detach().clone(),
                                exp_avg_sq=st["v"][i].detach().clone())


def step_errors(pop: Population, steps: int, seed: int = 0, onednn: bool = True) -> list[float]:
    """Run `steps` float32 steps of `pop` and, before each, one plain step per member from the same
    state (weights, buffers, optimizer state, schedule multiplier, batch). Asserts the error model
    above for every tensor; returns the per-step worst ratio err / allowed (<= 1 passes).

    `onednn`: the kernels of the plain step. In torch 2.13 (CPU) each float32 conv path is wrong
    somewhere: oneDNN for a ResNet's 1x1 stride-2 convolution (see no_onednn), the native kernels
    for the digits CNN's bias gradients (17% off float64 on that net, while oneDNN and the
    population's grouped convolution agree with float64 to 1e-7); float64 is right on both."""
    task, common = pop.task, pop.common
    n, B, M = pop.x.shape[0], int(common["batch_size"]), len(pop.members)
    total = pop.n_steps_per_epoch * int(common["epochs"])
    g = torch.Generator().manual_seed(seed)
    ratios = []
    for _ in range(steps):
        idx = torch.stack([torch.randperm(n, generator=g)[:B] for _ in range(M)])  # (M, B)
        mult = lr_multiplier(common.get("schedule", "constant"), pop.step_count, total)
        refs = []
        for i, m in enumerate(pop.members):
            net = pop.member_module(i)
            before = {k: v.detach().clone() for k, v in net.state_dict().items()}
            opt = make_optimizer(net.parameters(), common, m)
            _load_optimizer_state(opt, net, pop, i)
            for group in opt.param_groups:
                group["lr"] = m.lr * mult
            net.train()
            with (nullcontext() if onednn else no_onednn()):
                opt.zero_grad()
                x, y = member_data(task, common, m)  # drawn independently of the population's
                task.objective.losses(single_forward(net), {}, {}, x[idx[i]].unsqueeze(0),
                                      y[idx[i]].unsqueeze(0))[0].backward()
                opt.step()
            refs.append((before, net.state_dict()))
        assert pop.train_step(idx, epoch=1)
        worst = 0.0
        for i, (before, after) in enumerate(refs):
            got = pop.member_state(i)
            for k, ref in after.items():
                if not ref.is_floating_point():
                    assert torch.equal(ref, got[k]), f"member {i} {k}"
                    continue
                ref, p0, out = ref.double(), before[k].double(), got[k].double()
                err = (out - ref).abs().max().item()
                allowed = 2 * F32_ROUNDOFF * ref.abs().max().item() + STEP_RTOL * (ref - p0).abs().max().item()
                assert err <= allowed, (f"member {pop.members[i].model_id} {k}: one float32 step differs by {err:.3g}, "
                                        f"more than the error model allows ({allowed:.3g})")
                worst = max(worst, err / allowed if allowed else 0.0)
        ratios.append(worst)
    return ratios
