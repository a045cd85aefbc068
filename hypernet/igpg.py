"""IGPG-style autoregressive weight generator: finite-scalar-quantized weight tokens and a
decoder-only prior over them, conditioned on an instruction prefix (task, architecture, cell).

    layout = TokenLayout.of(model, token_size)               # hypernet.tokenizer: where every token comes from
    x = tokenizer.encode(state, layout)                       # (N, token_size) standardized weights
    gen = WeightIGPG(IGPGConfig(...))
    z, codes = gen.quantize(x[None], layout.ids()[None])      # (1, N, D) quantized latents, (1, N, D) codes
    x_hat = gen.reconstruct(codes, layout.ids()[None])        # (1, N, token_size)
    nll = gen.prior_loss(codes, layout, condition[None])      # next-code cross-entropy
    tokens = gen.sample_tokens(layout, mask, condition, n=4)  # (4, N, token_size), seeded

The quantizer (after "Instruction-Guided Autoregressive Neural Network Parameter Generation",
IGPG, which uses a VQ-VAE): an MLP encoder maps a weight token and its position (which tensor of
which layer, which row and chunk) to D latent dimensions, each bounded and rounded to one of
`levels[i]` values: finite scalar quantization (FSQ; Mentzer et al. 2023, "Finite Scalar
Quantization: VQ-VAE Made Simple"). An MLP decoder maps the quantized latent and the same
position back to the token. Why FSQ instead of a learned codebook: it has no codebook to collapse
(every code is reachable from the first step, no commitment loss, no EMA updates, no dead-code
restarts), the rounding is deterministic, and the straight-through estimator is the whole of its
training trick. A token's code is the vector of its D digits (prod(levels) codes in all); the
prior predicts the D digits of a token with D categorical heads, independent given the prefix
(the factorized prediction FSQ's paper uses for large codebooks), so one sequence position is one
weight token, and the sequence of a net is as long as its token layout.

The prior: a pre-LN causal transformer over

    [condition] [segment 1] ... [segment S] [token 1] ... [token N]

- condition: W_c · the cell's condition vector (hypernet.conditions: which zoo, hence which task,
  and the normalized temperature and load of the phase plane);
- segment s (the architecture, one position per parameter tensor): kind embedding + role
  embedding (first / hidden / last layer) + projections of sinusoids of the layer index, the
  tensor's row count and row length. An unseen depth is a longer prefix, not an unknown id;
- token j: the position embedding of token j (kind, role, sinusoids of layer, row and chunk) +
  W_z · the quantized latent of token j-1 (zero for the first). Its output predicts token j's
  digits. So the model always knows which tensor, row and chunk it is writing.

The digit head (`head`). "logistic" (default): each digit is a discretized logistic over its
levels (PixelCNN++'s output), located and scaled by a per-position base table (indexed like the
diffusion generator's base net: role, kind, row mod base_rows, chunk mod base_chunks; set to the
training codes' per-entry mean and spread when the prior stage starts, `init_base`) plus the
transformer's shift of both. Why: the digits are ordinal (neighbouring levels are neighbouring
weight values), and a categorical head of Lmax unrelated classes per digit, with one d_model-wide
hidden state behind 128 x 32 logits, did not even learn the per-position marginals on the default
zoo: its teacher-forced argmax nets were at chance, below nets drawn from a diagonal Gaussian
of the members' per-position mean and spread (README). "categorical": that head, for comparison.

Sampling draws the digits token by token (temperature, top-k per digit, a torch.Generator: the
same seed gives the same net), with a key/value cache, then decodes all tokens at once. With the
logistic head the temperature scales each digit's logistic (`temperature_on: scale`; see _logits).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin

from hypernet.diffusion import sinusoid
from hypernet.tokenizer import KINDS, TokenLayout, layer_role, tile_index
from zoo.errors import ZooError


HEADS = ("logistic", "categorical")
TEMPERATURE_ON = ("scale", "logits")


@dataclass
class IGPGConfig:
    token_size: int = 128
    token_scale: str = "fan_in"  # hypernet.tokenizer scale
    token_pool: str = "role"  # hypernet.tokenizer pool
    levels: list[int] = field(default_factory=lambda: [32])  # FSQ levels, one per latent dim (or one for all)
    latent_dims: int = 0  # with one entry in levels: that many latent dims of those levels (0: token_size)
    ae_hidden: int = 512  # width of the quantizer's encoder / decoder MLPs
    ae_layers: int = 2  # hidden layers of each
    d_model: int = 128
    layers: int = 4
    heads: int = 4
    ff_mult: int = 4
    dropout: float = 0.0
    max_len: int = 2048  # the prior's context: 1 + parameter tensors + weight tokens
    head: str = "logistic"  # the prior's digit distribution: "logistic" (discretized logistic, a location and
    #                         scale per digit over a per-position base) or "categorical" (Lmax logits per digit)
    base_rows: int = 256  # logistic head: the base table's rows per (role, kind); wider tensors tile it
    base_chunks: int = 2  # ... and chunks per row (longer rows tile it)
    base_layouts: list | None = None  # logistic head: [[layout signature, tokens], ...] of the trained architectures,
    #                                   which get a base entry per token (set by the recipe); others use the tiled table
    n_kinds: int = 8  # distinct parameter kinds, >= len(hypernet.tokenizer.KINDS)
    temperature: float = 1.0  # sampling defaults (predict_init)
    top_k: int = 0  # 0 = no top-k
    temperature_on: str = "scale"  # logistic head: the temperature multiplies each digit's logistic scale ("scale")
    #                                or divides its discretized log-masses ("logits", as the categorical head's)
    trained_kinds: list[str] | None = None  # parameter kinds seen in training (set by the recipe)
    n_conditions: int = 0
    conditions: dict | None = None  # hypernet.conditions.ConditionSpec.to_dict(): sets n_conditions
    tokenizer: dict | None = None  # hypernet.tokenizer.WeightTokenizer.to_dict()
    family: str | None = None

    def __post_init__(self):
        if self.conditions is not None:
            from hypernet.conditions import ConditionSpec

            self.n_conditions = ConditionSpec.from_dict(self.conditions).n
        from hypernet.tokenizer import POOLS, SCALES

        if self.token_scale not in SCALES:
            raise ZooError(f"IGPGConfig.token_scale {self.token_scale!r} is not valid; valid: {', '.join(SCALES)}")
        if self.token_pool not in POOLS:
            raise ZooError(f"IGPGConfig.token_pool {self.token_pool!r} is not valid; valid: {', '.join(POOLS)}")
        self.levels = list(self.levels)
        if self.latent_dims < 0:
            raise ZooError(f"IGPGConfig.latent_dims must be >= 0; got {self.latent_dims}")
        if len(self.levels) == 1 and not self.latent_dims:
            self.latent_dims = self.token_size
        if self.latent_dims:
            if len(self.levels) == 1:
                self.levels = self.levels * self.latent_dims
            elif len(self.levels) != self.latent_dims:
                raise ZooError(f"IGPGConfig.levels has {len(self.levels)} entries but latent_dims is "
                               f"{self.latent_dims}: give one level (repeated) or one per dim")
        if not self.levels or any(not isinstance(v, int) or isinstance(v, bool) or v < 2 for v in self.levels):
            raise ZooError(f"IGPGConfig.levels must be a non-empty list of integers >= 2; got {self.levels}")
        for k in ("token_size", "ae_hidden", "ae_layers", "d_model", "layers", "heads", "ff_mult", "max_len",
                  "n_kinds"):
            if getattr(self, k) < 1:
                raise ZooError(f"IGPGConfig.{k} must be >= 1; got {getattr(self, k)}")
        if self.d_model % self.heads or self.d_model % 4:
            raise ZooError(f"IGPGConfig.d_model ({self.d_model}) must be divisible by heads ({self.heads}) and 4")
        if self.ae_hidden % 4:
            raise ZooError(f"IGPGConfig.ae_hidden ({self.ae_hidden}) must be divisible by 4")
        if self.head not in HEADS:
            raise ZooError(f"IGPGConfig.head {self.head!r} is not valid; valid: {', '.join(HEADS)}")
        if self.temperature_on not in TEMPERATURE_ON:
            raise ZooError(f"IGPGConfig.temperature_on {self.temperature_on!r} is not valid; "
                           f"valid: {', '.join(TEMPERATURE_ON)}")
        for k in ("base_rows", "base_chunks"):
            if getattr(self, k) < 1:
                raise ZooError(f"IGPGConfig.{k} must be >= 1; got {getattr(self, k)}")
        if self.temperature <= 0:
            raise ZooError(f"IGPGConfig.temperature must be > 0; got {self.temperature}")
        if self.top_k < 0:
            raise ZooError(f"IGPGConfig.top_k must be >= 0; got {self.top_k}")

    def to_dict(self) -> dict:
        return asdict(self)


# ---- finite scalar quantization ------------------------------------------------------------------
class FSQ(nn.Module):
    """Bound each of D dims to (-L/2, L/2) (tanh, shifted by half a step for even L so that L
    integers fit), round with a straight-through gradient. Digits in [0, L); latents in [-1, 1]."""

    def __init__(self, levels: list[int]):
        super().__init__()
        L = torch.tensor(levels, dtype=torch.float32)
        self.register_buffer("L", L, persistent=False)
        half_l = (L - 1) * (1 + 1e-3) / 2
        offset = torch.where(L % 2 == 0, 0.5, 0.0)
        self.register_buffer("half_l", half_l, persistent=False)
        self.register_buffer("offset", offset, persistent=False)
        self.register_buffer("shift", torch.atanh(offset / half_l), persistent=False)
        self.register_buffer("half_w", torch.div(L, 2, rounding_mode="floor"), persistent=False)

    def bound(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(z + self.shift) * self.half_l - self.offset

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z (..., D) -> (quantized latent in [-1, 1] with straight-through gradient, digits long)."""
        b = self.bound(z)
        r = b + (torch.round(b) - b).detach()
        digits = (torch.round(b) + self.half_w).long()
        return r / self.half_w, digits

    def unbound(self, q: torch.Tensor) -> torch.Tensor:
        """The inverse of the bound on the grid: a quantized latent (..., D) -> the z it stands for
        (what a linear decoding path reads, so the companding does not bend it)."""
        # the end levels' bins reach the tanh's asymptote: read them at the middle of their inner half
        b = (q * self.half_w).clamp(-self.half_l - self.offset + 0.25, self.half_l - self.offset - 0.25)
        return torch.atanh((b + self.offset) / self.half_l) - self.shift

    def latent(self, digits: torch.Tensor) -> torch.Tensor:
        """digits (..., D) long -> quantized latent (..., D) in [-1, 1]."""
        return (digits.to(torch.float32) - self.half_w) / self.half_w


def discretized_logistic(loc: torch.Tensor, log_scale: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Log-masses (..., D, Lmax) of a logistic(loc, scale) per digit, discretized to the integers
    0 .. L-1 of each digit (valid: (D, Lmax), True below L; the end levels take the tails), as
    PixelCNN++ discretizes pixel values: neighbouring levels share probability, so the prior learns
    a digit's value rather than Lmax unrelated classes. log(sigmoid(b) - sigmoid(a)) is computed
    from log-sigmoids (on the side of zero where they do not saturate), so no level's mass
    underflows to a zero gradient."""
    L = valid.sum(-1)  # (D,)
    Lmax, big = valid.shape[-1], 1e4
    edges = torch.arange(1, Lmax, dtype=loc.dtype) - 0.5  # the upper edges of levels 0 .. Lmax-2
    z = (edges - loc.unsqueeze(-1)) * torch.exp(-log_scale).unsqueeze(-1)  # (..., D, Lmax-1)
    z = z.masked_fill(edges >= (L[:, None] - 1), big)  # at and past the top level: all the mass below
    lo, hi = F.pad(z, (1, 0), value=-big), F.pad(z, (0, 1), value=big)
    flip = lo > 0  # sigmoid(hi) - sigmoid(lo) = sigmoid(-lo) - sigmoid(-hi)
    lo, hi = torch.where(flip, -hi, lo), torch.where(flip, -lo, hi)
    l_hi, l_lo = F.logsigmoid(hi), F.logsigmoid(lo)
    out = l_hi + torch.log1p(-torch.exp((l_lo - l_hi).clamp(max=-1e-6)))
    return out.masked_fill(~valid, float("-inf"))


def _mlp(d_in: int, hidden: int, layers: int, d_out: int) -> nn.Sequential:
    mods, d = [], d_in
    for _ in range(layers):
        mods += [nn.Linear(d, hidden), nn.GELU()]
        d = hidden
    mods.append(nn.Linear(d, d_out))
    return nn.Sequential(*mods)


class _Position(nn.Module):
    """Where a token sits (kind, role, layer, row, chunk) as a d-vector: what the quantizer and
    the prior know about every token besides its values."""

    def __init__(self, d: int, n_kinds: int):
        super().__init__()
        self.d = d
        self.kind = nn.Embedding(n_kinds, d)
        self.role = nn.Embedding(3, d)
        self.proj = nn.Linear(3 * (d // 2), d)

    def forward(self, ids: torch.Tensor, last: int | None = None) -> torch.Tensor:
        """ids (..., N, 4) [layer, kind, row, chunk] -> (..., N, d). last: the net's last layer
        index (default: the largest in ids, which are then a whole net's)."""
        layer = ids[..., 0]
        if last is None:
            last = layer.amax(dim=-1, keepdim=True)
        role = layer_role(layer, last)
        h = self.d // 2
        s = torch.cat([sinusoid(layer, h), sinusoid(ids[..., 2], h), sinusoid(ids[..., 3], h)], dim=-1)
        return self.kind(ids[..., 1]) + self.role(role) + self.proj(s)


class _Block(nn.Module):
    """Pre-LN causal self-attention + MLP, with a key/value cache for sampling."""

    def __init__(self, d: int, heads: int, ff: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, ff), nn.GELU(), nn.Linear(ff, d), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, cache: list | None = None) -> torch.Tensor:
        """x (B, T, d). cache: None (training: causal over x) or a list that holds [k, v] of the
        positions before x (x then attends to them and to its own causal prefix)."""
        B, T, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        past = 0
        if cache is not None:
            if cache:
                past = cache[0].shape[2]
                k, v = torch.cat([cache[0], k], 2), torch.cat([cache[1], v], 2)
            cache[:] = [k, v]
        if past == 0:
            a = F.scaled_dot_product_attention(q, k, v, is_causal=T > 1,
                                               dropout_p=self.dropout if self.training else 0.0)
        else:  # T new queries after `past` cached positions: query i sees keys 0 .. past + i
            mask = torch.ones(T, past + T, dtype=torch.bool).tril(past)
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + self.proj(a.transpose(1, 2).reshape(B, T, d))
        return x + self.mlp(self.ln2(x))


def segment_ids(layout: TokenLayout) -> torch.Tensor:
    """(S, 4) per parameter tensor: [layer, kind, n_rows, row_len] (the architecture prefix)."""
    return torch.tensor([[s.layer, s.kind, s.n_rows, s.row_len] for s in layout.segments if s.n_tokens],
                        dtype=torch.long).reshape(-1, 4)


def layout_signature(layout: TokenLayout) -> str:
    """An architecture as the prior's prefix sees it: every parameter tensor's layer, kind and
    shape ("layer:kind:rows x row length", comma-joined). Architectures that differ only in what
    has no parameters (an activation, a residual connection) share it."""
    return ",".join(f"{a}:{KINDS[b]}:{r}x{n}" for a, b, r, n in segment_ids(layout).tolist())


class WeightIGPG(nn.Module, PyTorchModelHubMixin, library_name="weight-zoo",
                 tags=["weight-generation", "autoregressive", "weight-space-learning"]):
    """FSQ weight-token autoencoder + instruction-conditioned autoregressive prior over its codes."""

    def __init__(self, config: IGPGConfig | dict | None = None):
        super().__init__()
        if isinstance(config, dict):  # a saved config.json: those written before `head` existed were categorical,
            # and those before `temperature_on` sampled with the temperature on the log-masses
            config = IGPGConfig(**{"head": "categorical", "temperature_on": "logits", **config})
        c = self.config = config or IGPGConfig()
        if c.conditions:
            from hypernet.conditions import ConditionSpec

            self.conditions = ConditionSpec.from_dict(c.conditions)
        else:
            self.conditions = None
        D, d, k = len(c.levels), c.d_model, c.token_size
        # the quantizer (an autoencoder of single tokens, positions known to both sides)
        self.ae_pos = _Position(c.ae_hidden, c.n_kinds)
        self.enc_in = nn.Linear(k, c.ae_hidden)
        self.enc = _mlp(c.ae_hidden, c.ae_hidden, c.ae_layers, D)
        self.fsq = FSQ(c.levels)
        self.dec_in = nn.Linear(D, c.ae_hidden)
        self.dec = _mlp(c.ae_hidden, c.ae_hidden, c.ae_layers, k)
        # linear paths beside the MLPs, which start at zero: at step 0 the quantizer is a scalar
        # quantizer of a projection (D = token_size: of every value, tanh-companded), and the MLPs
        # learn the corrections; an MLP alone starts from a dead code (everything rounds to 0)
        self.enc_skip = nn.Linear(k, D, bias=False)
        self.dec_skip = nn.Linear(D, k, bias=False)
        a = 0.5  # z = a·x: N(0, 1) values quantize at 16 levels with a mean squared error of 0.012 (Lloyd-Max: 0.0095)
        with torch.no_grad():  # the decoder's linear path reads FSQ.unbound(q) ~ z
            if D == k:
                self.enc_skip.weight.copy_(torch.eye(k) * a)
                self.dec_skip.weight.copy_(torch.eye(k) / a)
            else:
                nn.init.orthogonal_(self.enc_skip.weight, gain=a)
                nn.init.orthogonal_(self.dec_skip.weight, gain=1 / a)
            for mlp in (self.enc, self.dec):
                nn.init.zeros_(mlp[-1].weight), nn.init.zeros_(mlp[-1].bias)
        # the prior
        self.pos = _Position(d, c.n_kinds)
        self.kind_seg = nn.Embedding(c.n_kinds, d)
        self.role_seg = nn.Embedding(3, d)
        self.seg_proj = nn.Linear(3 * (d // 2), d)
        self.slot = nn.Embedding(3, d)  # condition, segment, token
        self.cond = nn.Linear(c.n_conditions, d) if c.n_conditions else None
        self.code_in = nn.Linear(D, d)
        self.blocks = nn.ModuleList(_Block(d, c.heads, c.ff_mult * d, c.dropout) for _ in range(c.layers))
        self.ln = nn.LayerNorm(d)
        if c.head == "logistic":  # a location and a log-scale per digit, relative to the per-position base
            self.head = nn.Linear(d, 2 * D)
            nn.init.zeros_(self.head.weight), nn.init.zeros_(self.head.bias)
            n_base = 3 * c.n_kinds * c.base_rows * c.base_chunks
            self.base_loc = nn.Embedding(n_base, D)
            self.base_log_scale = nn.Embedding(n_base, D)
            # the trained architectures' own entries, one per token (their canonical units have a meaning
            # only within the architecture, so the tiled table pools unrelated rows of different widths)
            self.layout_offset, n_arch = {}, 0
            for sig, n_tok in c.base_layouts or []:
                self.layout_offset[sig] = n_arch
                n_arch += int(n_tok)
            self.arch_loc = nn.Embedding(max(n_arch, 1), D)
            self.arch_log_scale = nn.Embedding(max(n_arch, 1), D)
            with torch.no_grad():  # uniform-ish over the levels until init_base sets the data's statistics
                levels = torch.tensor(c.levels, dtype=torch.float32)
                for loc, log_s in ((self.base_loc, self.base_log_scale), (self.arch_loc, self.arch_log_scale)):
                    loc.weight.copy_(((levels - 1) / 2).expand_as(loc.weight))
                    log_s.weight.copy_(torch.log(levels / 4).expand_as(log_s.weight))
        else:
            self.head = nn.Linear(d, D * max(c.levels))
        valid = torch.arange(max(c.levels))[None, :] < torch.tensor(c.levels)[:, None]  # (D, Lmax)
        self.register_buffer("valid", valid, persistent=False)

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def quantizer_parameters(self):
        return [p for n, p in self.named_parameters() if n.split(".")[0] in ("ae_pos", "enc_in", "enc", "dec_in", "dec", "enc_skip",
                                                                      "dec_skip")]

    def prior_parameters(self):
        ids = {id(p) for p in self.quantizer_parameters()}
        return [p for p in self.parameters() if id(p) not in ids]

    # -- checks: what this generator can write
    def check_layout(self, layout: TokenLayout, what: str = "the model") -> None:
        c = self.config
        if layout.token_size != c.token_size:
            raise ZooError(f"layout token_size {layout.token_size}; this generator writes tokens of {c.token_size}")
        trained = set(c.trained_kinds or KINDS)
        for s in layout.segments:
            if s.kind >= c.n_kinds or KINDS[s.kind] not in trained:
                module = s.name.rpartition(".")[0] or s.name
                raise ZooError(f"{what}: parameter {s.name!r} (module {module!r}) is a {KINDS[s.kind]}, which this "
                               f"generator never saw in training; it writes {', '.join(sorted(trained))}")
        n = self.context_length(layout)
        if n > c.max_len:
            raise ZooError(f"{what}: needs a context of {n} positions (1 condition + {len(segment_ids(layout))} "
                           f"tensors + {layout.n_tokens} weight tokens); this prior's context is "
                           f"IGPGConfig.max_len = {c.max_len}: a shallower or narrower net, or a larger token_size")

    @staticmethod
    def context_length(layout: TokenLayout) -> int:
        return 1 + len(segment_ids(layout)) + layout.n_tokens

    # -- the quantizer
    def encode(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Tokens (B, N, k) and ids (B, N, 4) or (N, 4) -> unbounded latents (B, N, D)."""
        if ids.dim() == 2:
            ids = ids.expand(x.shape[0], *ids.shape)
        x = x.to(self.enc_in.weight.dtype)
        return self.enc_skip(x) + self.enc(F.gelu(self.enc_in(x) + self.ae_pos(ids)))

    def quantize(self, x: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(quantized latents (B, N, D) with straight-through gradients, digits (B, N, D))."""
        return self.fsq(self.encode(x, ids))

    def decode_latent(self, z: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Quantized latents (B, N, D) -> tokens (B, N, k)."""
        if ids.dim() == 2:
            ids = ids.expand(z.shape[0], *ids.shape)
        return self.dec_skip(self.fsq.unbound(z)) + self.dec(F.gelu(self.dec_in(z) + self.ae_pos(ids)))

    def reconstruct(self, digits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Digits (B, N, D) -> tokens (B, N, k)."""
        return self.decode_latent(self.fsq.latent(digits), ids)

    def autoencode(self, x: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(reconstructed tokens (B, N, k), digits (B, N, D)): the quantizer's training pass."""
        z, digits = self.quantize(x, ids)
        return self.decode_latent(z, ids), digits

    # -- the prior
    def _prefix(self, layout: TokenLayout, condition: torch.Tensor | None, B: int) -> torch.Tensor:
        """(B, 1 + S, d): the condition position and one position per parameter tensor."""
        c, d = self.config, self.config.d_model
        seg = segment_ids(layout)
        last = int(seg[:, 0].max())
        role = layer_role(seg[:, 0], last)
        h = d // 2
        s = torch.cat([sinusoid(seg[:, 0], h), sinusoid(seg[:, 2], h), sinusoid(seg[:, 3], h)], dim=-1)
        segs = self.kind_seg(seg[:, 1]) + self.role_seg(role) + self.seg_proj(s) + self.slot.weight[1]
        if self.cond is not None:
            if condition is None:
                raise ZooError(f"this generator is conditioned: pass a (B, {c.n_conditions}) condition")
            head = self.cond(condition.to(segs.dtype).reshape(B, -1)) + self.slot.weight[0]
        else:
            head = self.slot.weight[0].expand(B, d)
        return torch.cat([head.unsqueeze(1), segs.unsqueeze(0).expand(B, *segs.shape)], dim=1)

    def _token_inputs(self, ids: torch.Tensor, prev: torch.Tensor, last: int) -> torch.Tensor:
        """Inputs of token positions: position embedding of token j + W_z · latent of token j-1."""
        return self.pos(ids, last) + self.code_in(prev) + self.slot.weight[2]

    def _logits(self, h: torch.Tensor, base: tuple[torch.Tensor, torch.Tensor] | None,
                temperature: float = 1.0) -> torch.Tensor:
        """Hidden states (..., d) of token positions -> log-probabilities (..., D, Lmax) of each
        digit: the categorical head's logits, or the discretized logistic's log-masses over the
        levels around `base` (the positions' base location and log-scale, (..., D) each, from
        `base_of`). Invalid levels are -inf. A sampling temperature other than 1 divides the
        logits (categorical head, or temperature_on "logits"), or multiplies each logistic's scale
        (temperature_on "scale"): a lower temperature then draws each digit nearer its location.
        Dividing a discretized logistic's log-masses instead sharpens it towards its most probable
        level, which is an end level whenever the scale is wide (the end levels hold the tails):
        on the 10,000-model zoo that doubled the norm of nets drawn at 0.1 (README)."""
        c = self.config
        out = self.head(self.ln(h))
        if c.head == "categorical":
            out = out.view(*h.shape[:-1], len(c.levels), max(c.levels))
            return out.masked_fill(~self.valid, float("-inf")) / temperature
        loc, log_scale = base[0] + out[..., 0::2], base[1] + out[..., 1::2]
        if c.temperature_on == "logits":
            return self._logistic(loc, log_scale) / temperature
        return self._logistic(loc, log_scale, math.log(temperature))

    def _logistic(self, loc: torch.Tensor, log_scale: torch.Tensor, log_temperature: float = 0.0) -> torch.Tensor:
        """Log-masses of digits with these locations and log-scales (..., D); the scale stays
        within [0.05, Lmax] levels, then is multiplied by exp(log_temperature)."""
        log_s = log_scale.clamp(min=math.log(0.05), max=math.log(max(self.config.levels))) + log_temperature
        return discretized_logistic(loc, log_s, self.valid)

    def base_of(self, layout: TokenLayout) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The logistic head's base for a layout: (location, log-scale), (N, D) each: a trained
        architecture's own entries, else the tiled table's (None for the categorical head)."""
        c = self.config
        if c.head != "logistic":
            return None
        tiled, own = self._base_index(layout)
        if own is not None:
            return self.arch_loc(own), self.arch_log_scale(own)
        return self.base_loc(tiled), self.base_log_scale(tiled)

    def _base_index(self, layout: TokenLayout) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A layout's (N,) entries in the tiled base table, and in the trained architectures' own
        table (None for an architecture the recipe did not train on)."""
        c = self.config
        off = self.layout_offset.get(layout_signature(layout))
        return (tile_index(layout.ids(), c.n_kinds, c.base_rows, c.base_chunks),
                None if off is None else torch.arange(off, off + layout.n_tokens))

    def base_logits(self, layout: TokenLayout) -> torch.Tensor:
        """The logistic head's base alone for a layout: (N, D, Lmax) log-masses (the per-position
        marginals the prior starts from)."""
        return self._logistic(*self.base_of(layout))

    @torch.no_grad()
    def init_base(self, nets: list[tuple[torch.Tensor, TokenLayout]]) -> None:
        """Set the logistic head's base to the data's digit statistics per entry: nets is a list
        of (digits (M, N, D) of M nets of one layout, that TokenLayout); the tiled table pools every
        net, a trained architecture's own entries its nets; entries no net reaches keep their
        values. The prior then starts from the per-position marginals and learns the conditionals
        on top of them."""
        c = self.config
        if c.head != "logistic":
            return
        D = len(c.levels)
        tables = ((self.base_loc, self.base_log_scale), (self.arch_loc, self.arch_log_scale))  # as _base_index
        stats = [(torch.zeros(m, dtype=torch.float64), torch.zeros(m, D, dtype=torch.float64),
                  torch.zeros(m, D, dtype=torch.float64)) for m in (loc.num_embeddings for loc, _ in tables)]
        for digits, layout in nets:
            x = digits.reshape(-1, D).to(torch.float64)
            M = digits.shape[0]
            for (n, s1, s2), idx in zip(stats, self._base_index(layout)):
                if idx is None:
                    continue
                idx = idx.expand(M, -1).reshape(-1)
                n.index_add_(0, idx, torch.ones_like(idx, dtype=torch.float64))
                s1.index_add_(0, idx, x), s2.index_add_(0, idx, x * x)
        for (loc, log_s), (n, s1, s2) in zip(tables, stats):
            seen = n > 0
            mean = s1[seen] / n[seen, None]
            std = (s2[seen] / n[seen, None] - mean ** 2).clamp_min(0).sqrt().clamp_min(0.3)
            loc.weight[seen] = mean.float()
            log_s.weight[seen] = torch.log(std * math.sqrt(3) / math.pi).float()  # a logistic of that std

    def prior_logits(self, digits: torch.Tensor, layout: TokenLayout,
                     condition: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced digits (B, N, D) -> logits (B, N, D, Lmax) of each token's digits."""
        self.check_layout(layout)
        B, N, D = digits.shape
        ids = layout.ids().unsqueeze(0).expand(B, N, 4)
        z = self.fsq.latent(digits)
        prev = torch.cat([torch.zeros_like(z[:, :1]), z[:, :-1]], dim=1)
        prefix = self._prefix(layout, condition, B)
        x = torch.cat([prefix, self._token_inputs(ids, prev, layout.n_layers - 1)], dim=1)
        for b in self.blocks:
            x = b(x)
        return self._logits(x[:, prefix.shape[1]:], self.base_of(layout))

    def prior_loss(self, digits: torch.Tensor, layout: TokenLayout, condition: torch.Tensor | None = None,
                   return_logits: bool = False):
        """Mean next-token cross-entropy per digit (nats); with return_logits also the logits."""
        logits = self.prior_logits(digits, layout, condition)
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), digits.reshape(-1))
        return (nll, logits) if return_logits else nll

    def sampled_latent(self, logits: torch.Tensor, generator: torch.Generator | None = None,
                       tau: float = 1.0) -> torch.Tensor:
        """A draw of each token's latent from the prior's logits (..., D, Lmax) -> (..., D), with a
        straight-through Gumbel-softmax gradient (what a task loss on the prior's samples trains
        through; the mean latent of a spread distribution is ~0, which decodes to a dead net)."""
        u = torch.rand(logits.shape, generator=generator).clamp(1e-9, 1 - 1e-9)
        soft = ((logits - torch.log(-torch.log(u))) / tau).softmax(-1)
        hard = F.one_hot(soft.argmax(-1), logits.shape[-1]).to(soft.dtype)
        D, Lmax = len(self.config.levels), logits.shape[-1]
        values = self.fsq.latent(torch.arange(Lmax)[:, None].expand(Lmax, D)).T  # (D, Lmax): level -> latent
        return ((hard + soft - soft.detach()) * values.masked_fill(~self.valid, 0.0)).sum(-1)

    @torch.no_grad()
    def sample_digits(self, layout: TokenLayout, condition: torch.Tensor | None = None, n: int = 1,
                      generator: torch.Generator | None = None, temperature: float | None = None,
                      top_k: int | None = None) -> torch.Tensor:
        """n digit sequences (n, N, D) for `layout`, drawn token by token."""
        c = self.config
        self.check_layout(layout)
        temperature = c.temperature if temperature is None else temperature
        top_k = c.top_k if top_k is None else top_k
        if temperature <= 0:
            raise ZooError(f"temperature must be > 0; got {temperature}")
        ids = layout.ids()
        N, D = ids.shape[0], len(c.levels)
        cond = None if condition is None else condition.reshape(1, -1).expand(n, -1)
        caches = [[] for _ in self.blocks]
        base = self.base_of(layout)
        x = self._prefix(layout, cond, n)
        prev = torch.zeros(n, 1, D)
        out = torch.zeros(n, N, D, dtype=torch.long)
        for j in range(N):
            tok = self._token_inputs(ids[j].expand(n, 1, 4), prev, layout.n_layers - 1)
            x = torch.cat([x, tok], dim=1) if j == 0 else tok
            for b, cache in zip(self.blocks, caches):
                x = b(x, cache)
            logits = self._logits(x[:, -1], base and (base[0][j], base[1][j]), temperature)  # (n, D, Lmax)
            if top_k:
                kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            probs = logits.softmax(-1).reshape(n * D, -1)
            d = torch.multinomial(probs, 1, generator=generator).view(n, D)
            out[:, j] = d
            prev = self.fsq.latent(d).unsqueeze(1)
        return out

    @torch.no_grad()
    def sample_tokens(self, layout: TokenLayout, mask: torch.Tensor, condition: torch.Tensor | None = None,
                      n: int = 1, generator: torch.Generator | None = None, **kw) -> torch.Tensor:
        """n samples of one layout: (n, N, token_size) tokens, padding zero (hypernet.api.predict_params)."""
        digits = self.sample_digits(layout, condition, n, generator, **kw)
        return self.reconstruct(digits, layout.ids()) * mask.to(torch.float32)

    def bits_per_value(self, layout: TokenLayout) -> float:
        """The code rate: bits of the digits per real weight value of `layout`."""
        values = sum(s.numel for s in layout.segments)
        return layout.n_tokens * sum(math.log2(v) for v in self.config.levels) / max(values, 1)


__all__ = ["FSQ", "HEADS", "IGPGConfig", "TEMPERATURE_ON", "WeightIGPG", "discretized_logistic", "layout_signature", "segment_ids"]
