"""Decoders of a graph hypernetwork: node embedding -> a parameter tensor of an exact shape.

Two decoders with one interface, picked by name from DECODERS:

    dec = build_decoder("tiled", DecoderConfig(d_in=64))     # or "lowrank"
    w = dec(h, (16, 8, 3))         # h (d_in,)    -> (16, 8, 3)
    ws = dec(hs, (16, 8, 3))       # hs (n, d_in) -> (n, 16, 8, 3): n nodes of the same shape at once

A shape is read as (out, in, *kernel) with 0, 1 or 2 kernel dims (Linear / Embedding, Conv1d,
Conv2d); 1-D shapes (biases, norm weights) and 0-D ones go to a separate vector head. Both share a
trunk z = MLP(h) and a "tap" layer that gives one feature vector per kernel position, with separate
slots for linear (1 slot), conv1d (max_kernel) and conv2d (max_kernel²) so that a Linear layer never
shares a slot with the corner tap of a Conv. They differ in how a tap feature becomes an
(out, in) block:

- tiled (GHN-3, Knyazev et al. 2023): one linear map from the tap feature to a fixed maximum chunk
  (max_out x max_in); a larger shape repeats (tiles) the chunk, a smaller one slices it. The map
  holds max_out · max_in · hidden weights.
- lowrank (LoGAH, Zhou et al. 2024): A (out x r) from z and B (r x in) per tap, W = A·B / sqrt(r).
  The heads hold (max_out + max_in) · r · hidden weights: far fewer at large widths.

Dims beyond the maxima are tiled (index i reads position i mod max) when `tile` is on, else they
raise DecoderError. A tiled copy beyond the first is multiplied by a fixed ±1 pattern (seeded by the
shape, so the same shape always gets the same pattern): plain repeats would make hidden units exact
duplicates, and duplicates with duplicated outgoing weights stay identical under gradient descent.
Kernel taps beyond max_kernel are repeated without signs (taps are not interchangeable units).

The raw output has no particular scale: the GHN normalizes it (hypernet.ghn, fan-in scaling).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn as nn

from zoo.errors import ZooError
from zoo.registry import Registry


class DecoderError(ZooError, ValueError):
    """A shape the decoder cannot produce (too many dims, or beyond the maxima with tiling off)."""


@dataclass
class DecoderConfig:
    d_in: int = 64  # node embedding size
    hidden: int = 64  # trunk / tap feature size
    max_out: int = 256  # largest out dim (rows) produced without tiling; also the vector head's size
    max_in: int = 256  # largest in dim (columns) produced without tiling
    max_kernel: int = 3  # largest kernel side produced without tiling (conv1d k, conv2d k x k)
    rank: int = 16  # r of the lowrank decoder (ignored by tiled)
    tile: bool = True  # False: shapes beyond the maxima raise DecoderError

    def __post_init__(self):
        for k in ("d_in", "hidden", "max_out", "max_in", "max_kernel", "rank"):
            if getattr(self, k) < 1:
                raise DecoderError(f"DecoderConfig.{k} must be >= 1; got {getattr(self, k)}")


DECODERS: Registry = Registry("decoder")


def build_decoder(name: str, config: DecoderConfig | None = None) -> "Decoder":
    """The decoder registered as `name`; an unknown name raises ZooError listing the valid ones."""
    return DECODERS.get(name)(config or DecoderConfig())


def n_params(name: str, config: DecoderConfig | None = None) -> int:
    """Parameter count of decoder `name` under `config` (e.g. to compare decoders at a large width)."""
    return build_decoder(name, config).n_params()


# ---- tiling ----------------------------------------------------------------------------------
@lru_cache(maxsize=256)
def _signs(shape: tuple[int, ...], dim: int, m: int) -> torch.Tensor:
    """±1 of `shape`, +1 on the first copy (index < m along `dim`), fixed by (shape, dim, m)."""
    seed = 0
    for v in (*shape, dim, m):
        seed = (seed * 1_000_003 + v) % 2**31
    g = torch.Generator().manual_seed(seed)
    s = torch.randint(0, 2, shape, generator=g).mul_(2).sub_(1).float()
    s.narrow(dim, 0, m).fill_(1.0)
    return s


def _fit(x: torch.Tensor, dim: int, n: int, ndim: int, signs: bool = True) -> torch.Tensor:
    """x with size n along `dim` (negative, counted in the last `ndim` dims): slice, or tile if n > size."""
    m = x.size(dim)
    if n <= m:
        return x.narrow(dim, 0, n)
    x = x.index_select(dim, torch.arange(n, device=x.device) % m)
    if signs:
        x = x * _signs(tuple(x.shape[-ndim:]), dim, m).to(x)
    return x


# ---- decoders --------------------------------------------------------------------------------
class Decoder(nn.Module):
    """Shared part: trunk, vector head, kernel taps, shape checks. Subclasses implement _matrix."""

    def __init__(self, config: DecoderConfig):
        super().__init__()
        c = self.config = config
        self.trunk = nn.Sequential(nn.Linear(c.d_in, c.hidden), nn.GELU(), nn.Linear(c.hidden, c.hidden), nn.GELU())
        self.vector = nn.Linear(c.hidden, c.max_out)  # 1-D tensors: biases, norm weights
        self.n_slots = 1 + c.max_kernel + c.max_kernel**2  # linear | conv1d taps | conv2d taps
        self.taps = nn.Sequential(nn.Linear(c.hidden, c.hidden * self.n_slots), nn.GELU())

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, h: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        """h (d_in,) or (..., d_in) -> a tensor of `shape` (with h's leading dims in front)."""
        shape = tuple(int(s) for s in shape)
        if len(shape) > 4:
            raise DecoderError(f"cannot decode a {len(shape)}-D shape {shape}; decoders produce 0- to 4-D "
                               f"tensors (out, in, *kernel) with at most 2 kernel dims")
        self._check(shape)
        z = self.trunk(h)  # (..., hidden)
        if len(shape) <= 1:
            n = shape[0] if shape else 1
            v = _fit(self.vector(z), -1, n, 1)  # (..., n)
            return v.reshape(tuple(h.shape[:-1]) + shape)
        out, inp, kernel = shape[0], shape[1], shape[2:]
        t = self._tap_features(z, kernel)  # (..., T, hidden), T = prod(kernel) (1 for linear)
        w = self._matrix(z, t, out, inp)  # (..., out, in, T)
        return w.reshape(tuple(h.shape[:-1]) + shape)

    def _check(self, shape: tuple[int, ...]) -> None:
        if self.config.tile:
            return
        c = self.config
        limits = [("out", c.max_out)] if len(shape) <= 1 else [("out", c.max_out), ("in", c.max_in)]
        limits += [(f"kernel[{i}]", c.max_kernel) for i in range(len(shape) - 2)]
        for (what, limit), n in zip(limits, shape):
            if n > limit:
                raise DecoderError(f"shape {shape}: {what} = {n} exceeds the decoder's maximum {limit} "
                                   f"(DecoderConfig.max_{what.split('[')[0]}); raise it or set tile=True")

    def _tap_features(self, z: torch.Tensor, kernel: tuple[int, ...]) -> torch.Tensor:
        k = self.config.max_kernel
        slots = self.taps(z).unflatten(-1, (self.n_slots, -1))  # (..., n_slots, hidden)
        if len(kernel) == 0:
            idx = torch.zeros(1, dtype=torch.long)
        elif len(kernel) == 1:
            idx = 1 + torch.arange(kernel[0]) % k
        else:
            rows, cols = torch.arange(kernel[0]) % k, torch.arange(kernel[1]) % k
            idx = (1 + k + rows[:, None] * k + cols[None, :]).flatten()
        return slots.index_select(-2, idx.to(z.device))  # (..., T, hidden)

    def _matrix(self, z: torch.Tensor, taps: torch.Tensor, out: int, inp: int) -> torch.Tensor:
        raise NotImplementedError


@DECODERS.register("tiled")
class TiledDecoder(Decoder):
    """GHN-3 style: a fixed max_out x max_in chunk per kernel tap, tiled/sliced to the shape.

    Only the needed corner of the chunk map is evaluated (its weight is sliced before the product),
    so small layers cost little even when the maxima are large; the parameter count does not shrink.
    """

    def __init__(self, config: DecoderConfig):
        super().__init__(config)
        c = config
        self.chunk = nn.Linear(c.hidden, c.max_out * c.max_in)  # tap feature -> (max_out, max_in) block

    def _matrix(self, z, taps, out, inp):
        c = self.config
        o, i = min(out, c.max_out), min(inp, c.max_in)
        weight = self.chunk.weight.view(c.max_out, c.max_in, c.hidden)[:o, :i]  # (o, i, hidden)
        bias = self.chunk.bias.view(c.max_out, c.max_in)[:o, :i, None]  # (o, i, 1)
        w = torch.einsum("...th,oih->...oit", taps, weight) + bias  # (..., o, i, T)
        w = _fit(w, -3, out, 3)  # (..., out, i, T)
        return _fit(w, -2, inp, 3)  # (..., out, in, T)


@DECODERS.register("lowrank")
class LowRankDecoder(Decoder):
    """LoGAH style: W = A·B / sqrt(r), A (out x r) from the trunk, B (r x in) per kernel tap.

    A and B are sliced to the needed out / in from heads sized for max_out / max_in. Beyond them
    the product is tiled like the tiled decoder's chunk (= tiling A's rows and B's columns), with
    the ±1 pattern on W rather than on A and B: a pattern over only r entries of a row of A would
    leave some copies exact duplicates (all r signs +1) with probability 2^-r per row.
    """

    def __init__(self, config: DecoderConfig):
        super().__init__(config)
        c = config
        self.a = nn.Linear(c.hidden, c.max_out * c.rank)  # z -> A (max_out, r)
        self.b = nn.Linear(c.hidden, c.rank * c.max_in)  # tap feature -> B (r, max_in)

    def _matrix(self, z, taps, out, inp):
        c = self.config
        o, i = min(out, c.max_out), min(inp, c.max_in)
        wa = self.a.weight.view(c.max_out, c.rank, c.hidden)[:o]  # (o, r, hidden)
        a = torch.einsum("...h,orh->...or", z, wa) + self.a.bias.view(c.max_out, c.rank)[:o]  # (..., o, r)
        wb = self.b.weight.view(c.rank, c.max_in, c.hidden)[:, :i]  # (r, i, hidden)
        b = torch.einsum("...th,rih->...rit", taps, wb) + self.b.bias.view(c.rank, c.max_in)[:, :i, None]
        w = a @ b.flatten(-2) / math.sqrt(c.rank)  # (..., o, i * T)
        w = w.unflatten(-1, (i, -1))  # (..., o, i, T)
        w = _fit(w, -3, out, 3)  # (..., out, i, T): tiling A's rows and B's columns = tiling A·B
        return _fit(w, -2, inp, 3)  # (..., out, in, T)


__all__ = ["DECODERS", "Decoder", "DecoderConfig", "DecoderError", "LowRankDecoder", "TiledDecoder",
           "build_decoder", "n_params"]
