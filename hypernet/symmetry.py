"""Permutation symmetry of hidden units: canonical forms by weight matching, and augmentation.

Permuting the hidden units of a net (rows of the layer that makes them, columns of the layer that
reads them, and every BatchNorm vector in between) leaves its function unchanged. A weight
generator that should respect this symmetry either sees every net in one canonical form (the
weights permuted to best match a fixed reference net) or sees random permutations of them.

    groups = perm_groups(net)                         # one PermGroup per permutable hidden dimension
    perms = random_permutation(groups, torch.Generator().manual_seed(0))
    state2 = permute(net.state_dict(), groups, perms)  # same function, other weights
    canon = canonicalize(state2, reference_state, net)  # Git Re-Basin weight matching

Families: mlp, pinn (hidden units fc0..fc{depth-1}), cnn (channels of conv0..), resnet (one group
per stage's residual stream, one per block's inner channels). Only permutations are handled, not
the sign flips that tanh (pinn) also allows, nor the per-channel rescalings that ReLU allows.

Weight matching (Ainsworth et al. 2023, "Git Re-Basin", Algorithm 1): maximize
sum_k <reference[k], permuted state[k]> over the parameters (BatchNorm running statistics are
permuted with their channels but take no part in the cost) by coordinate descent over the
groups: each step fixes the other groups' permutations and solves one linear assignment problem.
Before the descent, one pass in forward order (the order of `perm_groups`) matches every group on
the tensors whose other axes are already matched (or not permutable: inputs, kernel, classes);
this start depends on the net only up to permutation, so a net and any permutation of it reach
the same canonical form (barring exact ties), which an identity start would not guarantee.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import torch
import torch.nn as nn
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from zoo.errors import ZooError

SUPPORTED = ("mlp", "pinn", "cnn", "resnet")
# buffers that permute with their channels but are not matched on (statistics of the data, not weights)
_BUFFER_SUFFIXES = ("running_mean", "running_var")
_CONV = (nn.Conv1d, nn.Conv2d)
_BN = (nn.BatchNorm1d, nn.BatchNorm2d)


@dataclass(frozen=True)
class PermGroup:
    """One permutable dimension: `size` units, acting on every (state_dict key, axis) in `axes`."""

    name: str
    size: int
    axes: tuple[tuple[str, int], ...]


# --------------------------------------------------------------------------- groups per family


def perm_groups(module: nn.Module) -> list[PermGroup]:
    """The permutation groups of a zoo net, in forward order (input side first).

    mlp / pinn: "fc{i}" for each hidden layer; cnn: "conv{i}" for each conv; resnet:
    "stage{s}.stream" (residual stream of stage s, stage 0's includes the stem and its BN) and
    "stage{s}.{b}.inner" (channels between conv1 and conv2 of block b). Raises ZooError for other
    families.
    """
    family = getattr(module, "zoo_family", None) or _infer_family(module)
    if family in ("mlp", "pinn"):
        if any(n.startswith("res") for n, _ in module.named_children()):
            return _residual_mlp_groups(module)
        return _chain_groups(module, nn.Linear, "fc")
    if family == "cnn":
        return _chain_groups(module, _CONV, "conv")
    if family == "resnet":
        return _resnet_groups(module)
    raise ZooError(f"canonicalization supports {', '.join(SUPPORTED)}; got {family}")


def _infer_family(module: nn.Module) -> str:
    """Family of a net not built by zoo.nets.build (no `zoo_family`), from its layer names."""
    names = {n for n, _ in module.named_children()}
    if "stem" in names:
        return "resnet"
    if "conv0" in names:
        return "cnn"
    if "fc0" in names or names <= {"flatten", "head"}:
        return "pinn" if any(isinstance(m, nn.Tanh) for m in module.modules()) else "mlp"
    return type(module).__name__


def _chain_groups(module: nn.Module, kinds, prefix: str) -> list[PermGroup]:
    """Plain chains (mlp, pinn, cnn): layer i's outputs are read by layer i + 1 (or the head).

    Between them sit only elementwise activations (and, for cnn, global pooling + flatten, which
    keep one feature per channel), so the group of layer i is its weight rows (axis 0), its bias,
    and the input axis (1) of the next layer's weight.
    """
    layers = [(n, m) for n, m in module.named_children() if n.startswith(prefix) and isinstance(m, kinds)]
    head = getattr(module, "head", None)
    if not isinstance(head, nn.Linear):
        raise ZooError(f"expected a Linear `head` in a {prefix}-chain net; got {type(head).__name__}")
    chain = layers + [("head", head)]
    groups = []
    for (name, m), (nxt, m_next) in pairwise(chain):
        size = m.weight.shape[0]
        if m_next.weight.shape[1] != size:
            raise ZooError(f"{nxt} reads {m_next.weight.shape[1]} features, {name} makes {size}")
        axes = [(f"{name}.weight", 0)] + ([(f"{name}.bias", 0)] if m.bias is not None else [])
        axes += _norm_axes(module, f"norm{name[len(prefix):]}")
        groups.append(PermGroup(name, size, tuple(axes + [(f"{nxt}.weight", 1)])))
    return groups


def _norm_axes(module: nn.Module, name: str) -> list[tuple[str, int]]:
    """A LayerNorm after a layer (mlp `norm`) permutes with that layer's units: its statistics
    are over all of them, so a permutation only reorders its gain and bias."""
    norm = dict(module.named_modules()).get(name)
    if not isinstance(norm, nn.LayerNorm):
        return []
    return [(f"{name}.{k}", 0) for k in ("weight", "bias") if getattr(norm, k, None) is not None]


def _residual_mlp_groups(module: nn.Module) -> list[PermGroup]:
    """An mlp with residual blocks (h + act(norm(fc(h)))): the sum ties every block's input and
    output units to the first layer's, so the whole residual stream is one group: fc0's rows (and
    norm0), each block's fc rows and columns (and its norm), and the head's columns."""
    fc0 = module.fc0
    axes = [("fc0.weight", 0), ("fc0.bias", 0), *_norm_axes(module, "norm0")]
    for name, block in module.named_children():
        if name.startswith("res"):
            axes += [(f"{name}.fc.weight", 0), (f"{name}.fc.weight", 1), (f"{name}.fc.bias", 0),
                     *_norm_axes(module, f"{name}.norm")]
    return [PermGroup("stream", fc0.weight.shape[0], tuple(axes + [("head.weight", 1)]))]


def _bn_axes(prefix: str, bn: nn.Module) -> list[tuple[str, int]]:
    """BatchNorm vectors that follow its channels (num_batches_tracked does not)."""
    keys = [k for k in ("weight", "bias") if getattr(bn, k, None) is not None]
    if bn.track_running_stats:
        keys += ["running_mean", "running_var"]
    return [(f"{prefix}.{k}", 0) for k in keys]


def _conv_axes(prefix: str, conv: nn.Module, axis: int) -> list[tuple[str, int]]:
    """A conv's weight along `axis` (0 out, 1 in), and its bias with the outputs."""
    axes = [(f"{prefix}.weight", axis)]
    if axis == 0 and conv.bias is not None:
        axes.append((f"{prefix}.bias", 0))
    return axes


def _resnet_groups(module: nn.Module) -> list[PermGroup]:
    """Residual nets: the stream is shared by every block of a stage (identity shortcuts add it
    channel for channel); a projection shortcut (1x1 conv + BN) reads the old stream and starts a
    new one. Forward order: stage0.stream, its blocks' inner groups, stage1.stream, ..."""
    stem, bn, head = (getattr(module, n, None) for n in ("stem", "bn", "head"))
    if not (isinstance(stem, _CONV) and isinstance(bn, _BN) and isinstance(head, nn.Linear)):
        raise ZooError("resnet canonicalization expects stem (conv), bn (BatchNorm) and head (Linear)")
    # name -> [size, axes]; dicts keep insertion (= forward) order
    groups: dict[str, list] = {
        "stage0.stream": [stem.weight.shape[0], _conv_axes("stem", stem, 0) + _bn_axes("bn", bn)]
    }
    cur = "stage0.stream"
    for s_name, stage in module.named_children():
        if not s_name.startswith("stage"):
            continue
        for b_name, block in stage.named_children():
            p = f"{s_name}.{b_name}"
            sc = block.shortcut
            out = cur
            if not isinstance(sc, nn.Identity):  # Sequential(conv 1x1, BN)
                out = f"{s_name}.stream" if f"{s_name}.stream" not in groups else f"{p}.stream"
                groups[out] = [block.conv2.weight.shape[0],
                               _conv_axes(f"{p}.shortcut.0", sc[0], 0) + _bn_axes(f"{p}.shortcut.1", sc[1])]
                groups[cur][1] += _conv_axes(f"{p}.shortcut.0", sc[0], 1)
            groups[cur][1] += _conv_axes(f"{p}.conv1", block.conv1, 1)
            groups[out][1] += _conv_axes(f"{p}.conv2", block.conv2, 0) + _bn_axes(f"{p}.bn2", block.bn2)
            groups[f"{p}.inner"] = [block.conv1.weight.shape[0],
                                    _conv_axes(f"{p}.conv1", block.conv1, 0) + _bn_axes(f"{p}.bn1", block.bn1)
                                    + _conv_axes(f"{p}.conv2", block.conv2, 1)]
            cur = out
    groups[cur][1].append(("head.weight", 1))
    return [PermGroup(name, int(n), tuple(axes)) for name, (n, axes) in groups.items()]


# --------------------------------------------------------------------------- applying permutations


def _check_perm(p: Tensor, group: PermGroup) -> Tensor:
    p = torch.as_tensor(p)
    if p.shape != (group.size,) or p.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"permutation of {group.name} must be an integer tensor ({group.size},); got "
                         f"{p.dtype} {tuple(p.shape)}")
    p = p.long()
    if not torch.equal(torch.sort(p).values, torch.arange(group.size)):
        raise ValueError(f"perms[{group.name!r}] is not a permutation of 0..{group.size - 1}")
    return p


def permute(state: dict[str, Tensor], groups: list[PermGroup], perms: dict[str, Tensor]) -> dict[str, Tensor]:
    """A new state dict with unit i of each group taken from unit perms[name][i] of `state`
    (index_select along every axis of the group: values copied, never computed).

    Groups missing from `perms` are left as they are; `state` is not modified.
    """
    by_name = {g.name: g for g in groups}
    unknown = sorted(set(perms) - set(by_name))
    if unknown:
        raise ValueError(f"perms name no group {unknown}; groups: {sorted(by_name)}")
    out = {k: v.clone() for k, v in state.items()}
    for name, p in perms.items():
        g = by_name[name]
        p = _check_perm(p, g)
        for key, axis in g.axes:
            if key not in out:
                raise KeyError(f"group {name} acts on {key!r}, which the state dict lacks")
            if out[key].shape[axis] != g.size:
                raise ValueError(f"{key} has {out[key].shape[axis]} entries on axis {axis}; group {name} has {g.size}")
            out[key] = out[key].index_select(axis, p.to(out[key].device))
    return out


def random_permutation(groups: list[PermGroup], generator: torch.Generator) -> dict[str, Tensor]:
    """One uniformly random permutation per group (augmentation): {name: (size,) long}."""
    return {g.name: torch.randperm(g.size, generator=generator) for g in groups}


# --------------------------------------------------------------------------- weight matching


def _is_param(key: str) -> bool:
    return not key.endswith(_BUFFER_SUFFIXES)


def _as_rows(t: np.ndarray, axis: int) -> np.ndarray:
    """(..., n on `axis`, ...) -> (n, rest)."""
    return np.moveaxis(t, axis, 0).reshape(t.shape[axis], -1)


def weight_matching(
    state: dict[str, Tensor], reference: dict[str, Tensor], groups: list[PermGroup], max_iter: int = 100, seed: int = 0
) -> dict[str, Tensor]:
    """Permutations {name: (size,) long} such that permute(state, groups, perms) best matches
    `reference`: the summed inner products of all parameters a group touches (buffers excluded).

    Forward-order initial pass (see module docstring), then coordinate descent over the groups in
    an order drawn from `seed` each sweep, each step a linear assignment (maximize) with the other
    groups' permutations applied; a group's permutation changes only if that strictly raises the
    objective, and the descent stops after a sweep where none changed (or `max_iter` sweeps).
    """
    touch: dict[str, list[tuple[str, int]]] = {}  # key -> [(group, axis)]
    for g in groups:
        for key, axis in g.axes:
            if _is_param(key):
                if key not in state or key not in reference:
                    raise KeyError(f"group {g.name} acts on {key!r}, missing from state or reference")
                if state[key].shape != reference[key].shape or state[key].shape[axis] != g.size:
                    raise ValueError(f"{key}: state {tuple(state[key].shape)} vs reference "
                                     f"{tuple(reference[key].shape)}, group {g.name} of size {g.size} on axis {axis}")
                touch.setdefault(key, []).append((g.name, axis))
    w = {k: state[k].detach().cpu().double().numpy() for k in touch}  # float64 for the costs
    ref = {k: reference[k].detach().cpu().double().numpy() for k in touch}
    perm = {g.name: np.arange(g.size) for g in groups}

    def cost(g: PermGroup, known: set[str] | None) -> np.ndarray:
        """(size, size): [i, j] = similarity of reference unit i and state unit j, the other groups
        permuted as now; with `known`, only tensors whose other groups are all in it."""
        c = np.zeros((g.size, g.size))
        for key, axis in g.axes:
            if not _is_param(key):
                continue
            others = [(n, a) for n, a in touch[key] if not (n == g.name and a == axis)]
            if known is not None and any(n not in known for n, _ in others):
                continue
            t = w[key]
            for n, a in others:
                t = np.take(t, perm[n], axis=a)
            c += _as_rows(ref[key], axis) @ _as_rows(t, axis).T
        return c

    def solve(c: np.ndarray) -> np.ndarray:
        rows, cols = linear_sum_assignment(c, maximize=True)
        return cols[np.argsort(rows)]

    known: set[str] = set()
    for g in groups:  # start: forward order, matched on what is already determined
        perm[g.name] = solve(cost(g, known))
        known.add(g.name)

    rng = np.random.default_rng(seed)
    for _ in range(max_iter):
        changed = False
        for i in rng.permutation(len(groups)):
            g = groups[i]
            c = cost(g, None)
            new = solve(c)
            old = perm[g.name]
            gain_new, gain_old = c[np.arange(g.size), new].sum(), c[np.arange(g.size), old].sum()
            if gain_new > gain_old + 1e-12 * max(1.0, abs(gain_old)):
                perm[g.name], changed = new, True
        if not changed:
            break
    return {n: torch.from_numpy(p.astype(np.int64)) for n, p in perm.items()}


def canonicalize(
    state: dict[str, Tensor], reference: dict[str, Tensor], module: nn.Module, max_iter: int = 100
) -> dict[str, Tensor]:
    """`state` (a state dict of `module`'s architecture) with its hidden units permuted to match
    `reference`: a permutation only, values copied exactly, buffers moved with their channels."""
    groups = perm_groups(module)
    return permute(state, groups, weight_matching(state, reference, groups, max_iter=max_iter))


__all__ = ["SUPPORTED", "PermGroup", "canonicalize", "perm_groups", "permute", "random_permutation", "weight_matching"]
