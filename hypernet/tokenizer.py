"""Weight tokenizer: a net's parameters <-> a sequence of equal-sized, standardized weight tokens.

The input and output of a diffusion weight generator in the line of p-diff (Wang et al. 2024) and
"Efficient Training with Denoised Neural Weights" (Gong et al. 2024): every parameter tensor is cut
into blocks of `token_size` values, and each token carries ids (layer, kind, row, chunk) saying
where it comes from, so that one generator serves every width (and depth) of an architecture family.

    layout = TokenLayout.of(net, token_size=32)        # or TokenLayout.of({name: shape}, 32)
    tok = WeightTokenizer(32).fit(states, layouts)      # pooled mean / std per (layer, kind)
    x = tok.encode(net.state_dict(), layout)            # (layout.n_tokens, 32) float64, zero padding
    state = tok.decode(x, layout)                       # every parameter, exact shapes, float32
    layout.ids()                                        # (n_tokens, 4) long: layer, kind, row, chunk
    tok.mask(layout)                                    # (n_tokens, 32) bool: True on real values

Cutting rule. Only parameters are tokenized (named_parameters, tied weights once), never buffers
(BatchNorm running statistics). A tensor is viewed as a matrix of rows:
- Linear / Conv weights and any other >= 2-D tensor that is not an embedding or free parameter:
  reshape(shape[0], -1): a row is one output unit's incoming weights (Linear: in_features values,
  Conv: in_channels/groups x kernel values);
- embeddings and free parameters (held directly by a module, e.g. pos_embed (1, T, d)) with >= 2
  dims: reshape(prod(shape[:-1]), shape[-1]): one row per token / position vector of size d
  (an Embedding (V, d) gives the same rows as the rule above; pos_embed gives T rows of d);
- 1-D tensors (biases, norm weights) and 0-D ones: a single row of all their values.
Each row is cut into ceil(row_len / token_size) tokens, the last one zero-padded: a token never
spans two rows or two tensors. Tensors follow named_parameters order, rows in order, chunks in order.

Symmetry. Permuting the hidden units of a layer (rows of its weight, entries of its bias, columns
of the next layer's weight) permutes whole groups of tokens of its weight segment: the
ceil(row_len / token_size) tokens of row i move, unchanged, to the position of row perm(i), and
their (row, chunk) ids stay where they were. The layer's bias (a single row) has its values
permuted inside its tokens, and the next layer's weight has every row's values permuted across
that row's chunks: neither is a token permutation (unless token_size == 1 for the bias).

Kinds (KINDS): from a module, by the type of the module holding the parameter: Linear -> linear_weight
/ bias, Conv -> conv_weight / bias, BatchNorm / LayerNorm / GroupNorm / InstanceNorm / RMSNorm ->
norm_weight / norm_bias, Embedding -> embedding, anything else (parameters held by a container
module, e.g. pos_embed, or by an unknown layer) -> free. From a dict name -> shape (inference, so
pass parameters only): with P the name without its last component,
- "P.weight": >= 3-D conv_weight; 2-D embedding if P's last component contains "emb" and there is
  no "P.bias", else linear_weight; 1-D norm_weight; 0-D free;
- "P.bias": norm_bias if "P.weight" is 1-D, bias if "P.weight" is >= 2-D, free if there is none;
- any other name: free.
This agrees with the module rule on the zoo's six families (mlp, cnn, resnet, vit, gpt, pinn).
Layer = index of P among the distinct module names in order of first appearance (0..L-1).

Statistics (pool="layer", the default). One (mean, std) per stat key f"{layer}:{kind name}", e.g. "1:linear_weight", pooled over
every value of every fitted state: the same position in different widths of a family pools together
(fc1 of widths 4 and 8 share "1:linear_weight"), so one tokenizer serves the whole width axis. Nets
of different depths share keys by position, so the head of a depth-2 MLP pools with fc2 of a depth-3
one: fit one tokenizer per depth if that matters. Population std (ddof 0) in float64, floored:
std < 1e-8 (a constant kind, e.g. zero biases at init) -> 1.0.

Width-aware options (what the diffusion generator uses):
- scale="fan_in": a weight is multiplied by sqrt(fan_in) (its row length: in_features, or
  in_channels/groups x kernel) and a bias by the sqrt(fan_in) of its module's weight before the
  statistics; norm parameters, embeddings and free parameters are not scaled. Inits and trained
  nets scale as 1/sqrt(fan_in), so every width then has tokens of about the same spread, where the
  pooled statistics alone leave a width-4 and a width-256 layer 8x apart.
- pool="role": stat keys f"{role}:{kind}" with role first (the first parameterized module), last
  (the last one) or hidden (every other): nets deeper than any fitted one reuse the hidden
  statistics instead of failing on an unknown layer index.

Exactness. encode computes y = x/s - m/s in float64 and decode x = (y + m/s)·s, then casts: for a
float32 x this returns x bitwise (torch.equal) whenever x == 0 or |x| >= ~2^-27·|m| (the float64
rounding error is then below half a float32 ulp). Writing (x - m)/s the other way round would turn
x = 0 into ±1e-20-ish garbage when m != 0 (e.g. zero biases of an init encoded with statistics of
trained nets). With scale="fan_in" the factor c = sqrt(fan_in) folds into the same two steps,
y = x·(c/s) − m/s and x = (y + m/s)·(s/c). Encode to float64 (the default) for exactness: float32
tokens lose it.
"""
from __future__ import annotations

import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn

from zoo.errors import ZooError

KINDS: tuple[str, ...] = ("linear_weight", "conv_weight", "bias", "norm_weight", "norm_bias", "embedding", "free")
_K = {k: i for i, k in enumerate(KINDS)}
STD_FLOOR = 1e-8
SCALES = ("none", "fan_in")
POOLS = ("layer", "role")

_NORMS: tuple[type, ...] = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)
if hasattr(nn, "RMSNorm"):
    _NORMS = (*_NORMS, nn.RMSNorm)


@dataclass(frozen=True)
class Segment:
    """One parameter tensor in the token sequence: tokens [start, start + n_tokens)."""

    name: str  # parameter name, e.g. "fc1.weight"
    shape: tuple[int, ...]
    kind: int  # index into KINDS
    layer: int  # index of the tensor's module among the net's parameterized modules (0..L-1)
    start: int  # first token index
    n_tokens: int  # n_rows * chunks
    row_len: int  # values per row; n_rows = numel // row_len

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def n_rows(self) -> int:
        return self.numel // self.row_len if self.row_len else 0

    @property
    def chunks(self) -> int:
        """Tokens per row."""
        return self.n_tokens // self.n_rows if self.n_rows else 0


def _row_len(shape: tuple[int, ...], kind: int) -> int:
    """Values per row by the cutting rule (module docstring)."""
    if len(shape) <= 1:
        return math.prod(shape)  # a single row (0-D: 1 value)
    if KINDS[kind] in ("embedding", "free"):
        return shape[-1]  # (prod(shape[:-1]), d)
    return math.prod(shape[1:])  # (shape[0], -1)


def _module_kind(module: nn.Module, local: str) -> int:
    if isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)):
        conv = isinstance(module, nn.modules.conv._ConvNd)
        if local == "weight":
            return _K["conv_weight" if conv else "linear_weight"]
        if local == "bias":
            return _K["bias"]
    elif isinstance(module, _NORMS):
        if local in ("weight", "bias"):
            return _K["norm_" + local]
    elif isinstance(module, (nn.Embedding, nn.EmbeddingBag)) and local == "weight":
        return _K["embedding"]
    return _K["free"]


def _inferred_kind(name: str, shapes: Mapping[str, tuple[int, ...]]) -> int:
    """Kind from the name and ndim alone (rule in the module docstring)."""
    prefix, _, local = name.rpartition(".")
    shape = shapes[name]
    dot = prefix + "." if prefix else ""
    if local == "weight":
        if len(shape) >= 3:
            return _K["conv_weight"]
        if len(shape) == 2:
            owner = prefix.rpartition(".")[2].lower()
            return _K["embedding" if "emb" in owner and dot + "bias" not in shapes else "linear_weight"]
        return _K["norm_weight"] if len(shape) == 1 else _K["free"]
    if local == "bias":
        w = shapes.get(dot + "weight")
        if w is None:
            return _K["free"]
        return _K["norm_bias"] if len(w) == 1 else _K["bias"] if len(w) >= 2 else _K["free"]
    return _K["free"]


def _check_token_size(token_size) -> int:
    try:
        ts = operator.index(token_size)  # int, numpy int; not 2.0 or "2"
    except TypeError:
        ts = None
    if ts is None or isinstance(token_size, bool) or ts < 1:
        raise ZooError(f"token_size must be an integer >= 1; got {token_size!r}")
    return ts


@dataclass(frozen=True)
class TokenLayout:
    """Where every token of a net comes from: segments in parameter order, contiguous."""

    segments: tuple[Segment, ...]
    token_size: int
    n_tokens: int

    def ids(self) -> torch.Tensor:
        """(n_tokens, 4) long: [layer, kind, row, chunk] of every token."""
        parts = []
        for s in self.segments:
            if not s.n_tokens:
                continue
            row = torch.arange(s.n_rows).repeat_interleave(s.chunks)  # (n_tokens,)
            chunk = torch.arange(s.chunks).repeat(s.n_rows)
            parts.append(torch.stack([torch.full_like(row, s.layer), torch.full_like(row, s.kind), row, chunk], 1))
        return torch.cat(parts) if parts else torch.zeros(0, 4, dtype=torch.long)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.segments]

    @property
    def n_layers(self) -> int:
        return 1 + max((s.layer for s in self.segments), default=-1)

    @classmethod
    def of(cls, module_or_shapes: nn.Module | Mapping[str, Sequence[int] | torch.Tensor], token_size: int) -> TokenLayout:
        """From an nn.Module (named_parameters order, kinds by module type) or an ordered dict
        name -> shape (or tensor; kinds inferred from names and ndim, see the module docstring)."""
        token_size = _check_token_size(token_size)
        if isinstance(module_or_shapes, nn.Module):
            net = module_or_shapes
            params = list(net.named_parameters())
            shapes = {n: tuple(p.shape) for n, p in params}
            kinds = {}
            for n, _ in params:
                prefix, _, local = n.rpartition(".")
                kinds[n] = _module_kind(net.get_submodule(prefix), local)
        elif isinstance(module_or_shapes, Mapping):
            shapes = {}
            for n, s in module_or_shapes.items():
                s = s.shape if isinstance(s, torch.Tensor) else s
                try:
                    shapes[str(n)] = tuple(int(d) for d in s)
                except TypeError:
                    raise ZooError(f"TokenLayout.of: shape of {n!r} must be a sequence of ints; got {s!r}") from None
            kinds = {n: _inferred_kind(n, shapes) for n in shapes}
        else:
            raise ZooError(f"TokenLayout.of takes an nn.Module or a dict name -> shape; got {type(module_or_shapes).__name__}")
        layers: dict[str, int] = {}
        segments, start = [], 0
        for n, shape in shapes.items():
            if any(d < 0 for d in shape):
                raise ZooError(f"TokenLayout.of: shape of {n!r} has a negative dim: {shape}")
            layer = layers.setdefault(n.rpartition(".")[0], len(layers))
            row_len = _row_len(shape, kinds[n])
            n_rows = math.prod(shape) // row_len if row_len else 0
            n_tok = n_rows * -(-row_len // token_size)
            segments.append(Segment(n, shape, kinds[n], layer, start, n_tok, row_len))
            start += n_tok
        return cls(tuple(segments), token_size, start)


class WeightTokenizer:
    """Standardize + cut parameters into tokens and back; statistics pooled per stat key."""

    def __init__(self, token_size: int = 32, stats: dict[str, tuple[float, float]] | None = None,
                 scale: str = "none", pool: str = "layer"):
        self.token_size = _check_token_size(token_size)
        if scale not in SCALES:
            raise ZooError(f"tokenizer scale {scale!r} is not valid; valid: {', '.join(SCALES)}")
        if pool not in POOLS:
            raise ZooError(f"tokenizer pool {pool!r} is not valid; valid: {', '.join(POOLS)}")
        self.scale, self.pool = scale, pool
        self.stats: dict[str, tuple[float, float]] = {}
        for k, v in (stats or {}).items():
            try:
                m, s = (float(x) for x in v)
            except (TypeError, ValueError):
                raise ZooError(f"tokenizer statistics of {k!r} must be (mean, std); got {v!r}") from None
            if not (math.isfinite(m) and math.isfinite(s) and s > 0):
                raise ZooError(f"tokenizer statistics of {k!r} must be finite with std > 0; got ({m}, {s})")
            self.stats[str(k)] = (m, s)

    def __repr__(self) -> str:
        return (f"WeightTokenizer(token_size={self.token_size}, scale={self.scale!r}, pool={self.pool!r}, "
                f"stats={len(self.stats)} keys)")

    def layout(self, module_or_shapes) -> TokenLayout:
        """TokenLayout.of with this tokenizer's token_size."""
        return TokenLayout.of(module_or_shapes, self.token_size)

    def stat_key(self, seg: Segment, layout: TokenLayout | None = None) -> str:
        """pool="layer": f"{layer}:{kind name}", one layer position of a family pools over widths.
        pool="role": f"{first|hidden|last}:{kind name}" (needs the layout to know the last layer)."""
        if self.pool == "layer":
            return f"{seg.layer}:{KINDS[seg.kind]}"
        if layout is None:
            raise ZooError("stat_key with pool='role' needs the segment's layout")
        role = "first" if seg.layer == 0 else "last" if seg.layer == layout.n_layers - 1 else "hidden"
        return f"{role}:{KINDS[seg.kind]}"

    def factor(self, seg: Segment, layout: TokenLayout) -> float:
        """The scale factor c applied before standardization: sqrt(fan_in) or 1 (module docstring)."""
        if self.scale == "none":
            return 1.0
        kind = KINDS[seg.kind]
        if kind in ("linear_weight", "conv_weight"):
            return math.sqrt(max(seg.row_len, 1))
        if kind == "bias":
            prefix = seg.name.rpartition(".")[0]
            for w in layout.segments:
                if w.layer == seg.layer and w.name.rpartition(".")[0] == prefix and \
                        KINDS[w.kind] in ("linear_weight", "conv_weight"):
                    return math.sqrt(max(w.row_len, 1))
        return 1.0

    # -- checks
    def _check_layout(self, layout: TokenLayout) -> None:
        if layout.token_size != self.token_size:
            raise ZooError(f"layout has token_size {layout.token_size} but the tokenizer {self.token_size}; "
                           f"build it with TokenLayout.of(net, {self.token_size})")

    @staticmethod
    def _tensor(state: Mapping[str, torch.Tensor], seg: Segment) -> torch.Tensor:
        if seg.name not in state:
            raise ZooError(f"state has no tensor {seg.name!r} (layout shape {seg.shape}, state shape: missing); "
                           f"the state has {len(state)} tensors")
        t = state[seg.name]
        if tuple(t.shape) != seg.shape:
            raise ZooError(f"state tensor {seg.name!r} has shape {tuple(t.shape)} but the layout expects {seg.shape}")
        return t.detach()

    def _stat(self, seg: Segment, layout: TokenLayout) -> tuple[float, float]:
        key = self.stat_key(seg, layout)
        if key not in self.stats:
            known = ", ".join(sorted(self.stats, key=_key_order)) or "none (call fit() first)"
            raise ZooError(f"tokenizer has no statistics for stat key {key!r} (tensor {seg.name!r}); known keys: {known}")
        return self.stats[key]

    # -- statistics
    def fit(self, states: list[dict[str, torch.Tensor]], layouts: list[TokenLayout]) -> WeightTokenizer:
        """Pooled float64 mean and population std per stat key over every value of every state
        (replaces any earlier statistics). layouts[i] describes states[i]."""
        if len(states) != len(layouts):
            raise ZooError(f"fit: {len(states)} states but {len(layouts)} layouts; give one layout per state")
        if not states:
            raise ZooError("fit: no states given")
        groups: dict[str, list[torch.Tensor]] = {}
        for i, (state, layout) in enumerate(zip(states, layouts)):
            self._check_layout(layout)
            for seg in layout.segments:
                x = self._tensor(state, seg).to(torch.float64).reshape(-1) * self.factor(seg, layout)
                if not bool(torch.isfinite(x).all()):
                    raise ZooError(f"fit: tensor {seg.name!r} of state {i} has non-finite values")
                groups.setdefault(self.stat_key(seg, layout), []).append(x)
        stats = {}
        for key in sorted(groups, key=_key_order):
            xs = groups[key]
            n = sum(x.numel() for x in xs)
            if n == 0:
                stats[key] = (0.0, 1.0)
                continue
            mean = sum(float(x.sum()) for x in xs) / n
            var = sum(float(((x - mean) ** 2).sum()) for x in xs) / n  # two passes: no cancellation
            std = math.sqrt(var)
            stats[key] = (mean, std if std >= STD_FLOOR else 1.0)
        self.stats = stats
        return self

    # -- tokens
    def encode(self, state: Mapping[str, torch.Tensor], layout: TokenLayout, dtype=torch.float64) -> torch.Tensor:
        """state (parameters by name; extra entries such as buffers are ignored) ->
        (n_tokens, token_size) standardized tokens, padding exactly 0."""
        self._check_layout(layout)
        ts = self.token_size
        tensors = [self._tensor(state, seg) for seg in layout.segments]
        stats = [self._stat(seg, layout) for seg in layout.segments]
        device = tensors[0].device if tensors else None
        out = torch.zeros(layout.n_tokens, ts, dtype=torch.float64, device=device)
        for seg, t, (m, s) in zip(layout.segments, tensors, stats):
            if not seg.n_tokens:
                continue
            c = self.factor(seg, layout)
            x = t.to(device=device, dtype=torch.float64).reshape(seg.n_rows, seg.row_len)
            y = x / s - m / s if c == 1.0 else x * (c / s) - m / s
            rows = out[seg.start:seg.start + seg.n_tokens].view(seg.n_rows, seg.chunks * ts)  # (n_rows, padded row)
            rows[:, :seg.row_len] = y
        return out.to(dtype)

    def decode(self, tokens: torch.Tensor, layout: TokenLayout, dtype=torch.float32) -> dict[str, torch.Tensor]:
        """(n_tokens, token_size) -> {name: tensor of its exact shape} for every parameter of the
        layout (padding values are ignored)."""
        self._check_layout(layout)
        ts = self.token_size
        if tuple(tokens.shape) != (layout.n_tokens, ts):
            raise ZooError(f"decode: tokens have shape {tuple(tokens.shape)} but the layout needs ({layout.n_tokens}, {ts})")
        tokens = tokens.detach().to(torch.float64)
        out = {}
        for seg in layout.segments:
            m, s = self._stat(seg, layout)
            c = self.factor(seg, layout)
            rows = tokens[seg.start:seg.start + seg.n_tokens].reshape(seg.n_rows, seg.chunks * ts)[:, :seg.row_len]
            x = (rows + m / s) * s if c == 1.0 else (rows + m / s) * (s / c)
            out[seg.name] = x.to(dtype).reshape(seg.shape)
        return out

    def decode_batch(self, tokens: torch.Tensor, layout: TokenLayout) -> dict[str, torch.Tensor]:
        """Differentiable decode of a batch: (B, n_tokens, token_size) -> {name: (B, *shape)} in the
        tokens' dtype, with gradients flowing back to the tokens (what a task loss on generated
        weights trains through). Same arithmetic as decode; not bitwise exact in float32."""
        self._check_layout(layout)
        ts = self.token_size
        if tokens.dim() != 3 or tuple(tokens.shape[1:]) != (layout.n_tokens, ts):
            raise ZooError(f"decode_batch: tokens have shape {tuple(tokens.shape)} but the layout needs "
                           f"(B, {layout.n_tokens}, {ts})")
        B, out = tokens.shape[0], {}
        for seg in layout.segments:
            m, s = self._stat(seg, layout)
            c = self.factor(seg, layout)
            rows = tokens[:, seg.start:seg.start + seg.n_tokens].reshape(B, seg.n_rows, seg.chunks * ts)[..., :seg.row_len]
            out[seg.name] = ((rows + m / s) * (s / c)).reshape(B, *seg.shape)
        return out

    def mask(self, layout: TokenLayout) -> torch.Tensor:
        """(n_tokens, token_size) bool: True where a real value sits, False on padding."""
        ts = self.token_size
        self._check_layout(layout)
        out = torch.zeros(layout.n_tokens, ts, dtype=torch.bool)
        for seg in layout.segments:
            if seg.n_tokens:
                out[seg.start:seg.start + seg.n_tokens].view(seg.n_rows, seg.chunks * ts)[:, :seg.row_len] = True
        return out

    # -- serialization
    def to_dict(self) -> dict:
        """JSON-serializable: token_size, kinds, stats {key: [mean, std]} (floats round-trip exactly)."""
        return {"token_size": self.token_size, "kinds": list(KINDS), "scale": self.scale, "pool": self.pool,
                "stats": {k: [m, s] for k, (m, s) in self.stats.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> WeightTokenizer:
        if not isinstance(d, Mapping) or "token_size" not in d:
            raise ZooError("WeightTokenizer.from_dict needs a dict with 'token_size' (and 'stats'), as written by to_dict()")
        kinds = d.get("kinds")
        if kinds is not None and tuple(kinds) != KINDS:
            raise ZooError(f"tokenizer was saved with kinds {list(kinds)}; this version has {list(KINDS)}")
        return cls(d["token_size"], {k: tuple(v) for k, v in (d.get("stats") or {}).items()},
                   scale=d.get("scale", "none"), pool=d.get("pool", "layer"))


def layer_role(layer: torch.Tensor, last) -> torch.Tensor:
    """Role ids of layer indices, as pool="role" names them: 0 first (layer 0, also when it is the
    only one), 2 last (layer == last), 1 hidden. last: an int or a tensor broadcasting with layer."""
    return torch.where(layer == 0, 0, torch.where(layer == last, 2, 1))


def tile_index(ids: torch.Tensor, n_kinds: int, rows: int, chunks: int, last=None) -> torch.Tensor:
    """(..., N, 4) token ids -> the index of a per-position table that is shared by every net:
    role (first / hidden / last layer), kind, row mod rows, chunk mod chunks (wider tensors and
    longer rows tile it). last: the net's last layer index (default: the largest in ids, which
    are then a whole net's). What the diffusion generator's base net and the IGPG prior's base
    distribution are indexed by; 3 * n_kinds * rows * chunks entries."""
    layer = ids[..., 0]
    if last is None:
        last = layer.amax(dim=-1, keepdim=True)
    role = layer_role(layer, last)
    return ((role * n_kinds + ids[..., 1]) * rows + ids[..., 2] % rows) * chunks + ids[..., 3] % chunks


def _key_order(key: str) -> tuple:
    layer, _, kind = key.partition(":")
    roles = {"first": 0, "hidden": 1, "last": 2}
    if layer in roles:
        return (roles[layer], _K.get(kind, len(KINDS)))
    return (int(layer), _K.get(kind, len(KINDS))) if layer.isdigit() else (1 << 30, key)
