"""Architecture registry: mlp, cnn, resnet, vit, gpt, pinn; each with a `width` knob (the load
axis: units, channels or model dim) and `depth`.

    net = zoo.nets.build("mlp", task="mnist1d", width=48, depth=3)
    zoo.nets.init_(net, seed=0)                  # Kaiming-uniform, seeded per member
"""
from __future__ import annotations

import inspect

import torch
import torch.nn as nn

from zoo.errors import ZooError
from zoo.nets.cnn import cnn
from zoo.nets.gpt import gpt
from zoo.nets.mlp import mlp
from zoo.nets.pinn import pinn
from zoo.nets.resnet import resnet
from zoo.nets.vit import vit
from zoo.registry import Registry

NETS: Registry = Registry("model family")
for _name, _builder in (("mlp", mlp), ("cnn", cnn), ("resnet", resnet), ("vit", vit), ("gpt", gpt), ("pinn", pinn)):
    NETS.register(_name)(_builder)

INITS = ("kaiming_uniform", "torch_default")


def knobs(family: str) -> dict[str, object]:
    """The knobs a family takes, with their defaults."""
    sig = inspect.signature(NETS.get(family))
    return {k: p.default for k, p in sig.parameters.items() if k not in ("input_shape", "n_classes")}


# Knobs added after zoos had been built with the family: a member's `arch` records them only when
# they are not at their default, so every architecture that existed before keeps its arch JSON
# (and with it its model ids).
LATE_KNOBS = ("activation", "residual", "norm")


def recorded_knobs(family: str, given: dict) -> dict[str, object]:
    """The knobs of a member's `arch`: the family's defaults overridden by `given`, minus late knobs
    at their default (see LATE_KNOBS). Building from it gives the same net as building from `given`."""
    defaults = knobs(family)
    out = {**defaults, **given}
    return {k: v for k, v in out.items() if not (k in LATE_KNOBS and k in defaults and v == defaults[k])}


def check_knobs(family: str, given: dict) -> None:
    valid = knobs(family)
    unknown = sorted(set(given) - set(valid))
    if unknown:
        raise ZooError(f"model family {family!r} has no knob(s) {unknown}; valid: {sorted(valid)}")


def build(family: str, task=None, *, input_shape=None, n_classes=None, **kw) -> nn.Module:
    """Build a net for a task (a name, a Task, or explicit input_shape + n_classes)."""
    if task is not None:
        if isinstance(task, str):
            from zoo import tasks

            task = tasks.load(task)
        input_shape, n_classes = task.input_shape, task.n_classes
    if input_shape is None or n_classes is None:
        raise ValueError("build() needs a task or both input_shape and n_classes")
    check_knobs(family, kw)
    net = NETS.get(family)(tuple(input_shape), int(n_classes), **kw)
    # what the net is, for hypernet.predict_init (which zoo it belongs to, its width as the load)
    net.zoo_family, net.zoo_arch = family, {"family": family, **kw}
    return net


NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm)


@torch.no_grad()
def reset_norm(m: nn.Module) -> None:
    """A BatchNorm / LayerNorm at its init: weight 1, bias 0, running statistics reset."""
    if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        m.reset_running_stats()
    if m.weight is not None:
        m.weight.fill_(1.0)
    if m.bias is not None:
        m.bias.zero_()


def reset_batchnorm(model: nn.Module, calibrate: torch.Tensor | None = None, batch_size: int = 256) -> None:
    """Reset BatchNorm running statistics (mean 0, var 1); with `calibrate` (training inputs),
    re-estimate them as the plain average over those batches (momentum None), then restore modes."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.reset_running_stats()
    if calibrate is None or not bns:
        return
    old = [(m, m.momentum) for m in bns]
    was_training = model.training
    for m in bns:
        m.momentum = None
    model.train()
    try:
        for s in range(0, calibrate.shape[0], batch_size):
            model(calibrate[s : s + batch_size])
    finally:
        for m, mom in old:
            m.momentum = mom
        model.train(was_training)


@torch.no_grad()
def init_(net: nn.Module, seed: int, scheme: str = "kaiming_uniform") -> nn.Module:
    """Initialize every parameter in place from `seed` alone, so a member's init is the same in
    any population and any process.

    Linear / Conv, by `scheme`: kaiming_uniform: weights ~ U(-b, b), b = sqrt(6 / fan_in) (ReLU
    gain), biases 0; torch_default: PyTorch's reset_parameters(), drawn from the seeded generator.
    Embeddings and free parameters (position embeddings): N(0, 0.02²) (GPT-2).
    BatchNorm / LayerNorm: weight 1, bias 0, running statistics reset.
    """
    if scheme not in INITS:
        raise ZooError(f"unknown init {scheme!r}; valid: {', '.join(INITS)}")
    g = torch.Generator().manual_seed(int(seed))
    for m in net.modules():
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            if scheme == "kaiming_uniform":
                nn.init.kaiming_uniform_(m.weight, nonlinearity="relu", generator=g)
                if m.bias is not None:
                    m.bias.zero_()
            else:
                nn.init.kaiming_uniform_(m.weight, a=5**0.5, generator=g)
                if m.bias is not None:
                    bound = 1 / m.weight[0].numel() ** 0.5
                    nn.init.uniform_(m.bias, -bound, bound, generator=g)
        elif isinstance(m, NORMS):
            reset_norm(m)
        else:  # embeddings and parameters held directly by a module (e.g. pos_embed)
            for p in m.parameters(recurse=False):
                nn.init.normal_(p, std=0.02, generator=g)
    return net


def n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


__all__ = ["build", "init_", "knobs", "names", "n_params", "NETS", "NORMS", "reset_batchnorm", "reset_norm"]


def names() -> list[str]:
    return NETS.names()
