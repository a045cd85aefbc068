"""Diffusion weight generator: a transformer that denoises weight tokens, conditioned on the phase plane.

    layout = TokenLayout.of(model, token_size)               # hypernet.tokenizer: where every token comes from
    x0 = tokenizer.encode(state, layout)                      # (N, token_size) standardized weights
    gen = WeightDiffusion(DiffusionConfig(...))
    loss = gen.loss(x0[None], layout.ids()[None], mask[None], condition[None])   # DDPM training step
    tokens = gen.sample(layout.ids(), mask, condition, n=4)   # DDIM sampling: (4, N, token_size)
    state = tokenizer.decode(tokens[0], layout)               # exact shapes

Noise schedules and samplers are diffusers' (DDPMScheduler for training, DDIMScheduler for sampling,
built from one config so both see the same betas), not written here.

The denoiser sees every token of one network at once. A token's embedding is the sum of
    W_in · noisy values                                     (token_size -> d)
  + E_layer[layer] + E_kind[kind]                           (learned: which tensor of which module)
  + sinusoid(row) + sinusoid(chunk)                         (which output unit, which part of its row)
  + MLP(sinusoid(timestep)) + W_c · condition               (shared by every token of the network)
then `layers` pre-LN transformer blocks (torch.nn.TransformerEncoderLayer, norm_first) and a linear
head predict the noise ε of every token (prediction_type "epsilon"). Padding positions (mask False)
carry no loss and are zeroed in samples. Row ids come from weight rows, so permuting hidden units
permutes rows: the generator is trained on canonicalized weights (hypernet.symmetry) plus random
permutations, and the row embedding is a sinusoid rather than a learned table so any width works.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin

from zoo.errors import ZooError

SCHEDULES = ("squaredcos_cap_v2", "linear", "scaled_linear")


@dataclass
class DiffusionConfig:
    token_size: int = 32
    d_model: int = 128
    layers: int = 4
    heads: int = 4
    ff_mult: int = 4
    dropout: float = 0.0
    max_layers: int = 64  # distinct module indices (E_layer)
    n_kinds: int = 8  # distinct parameter kinds (E_kind), >= len(hypernet.tokenizer.KINDS)
    timesteps: int = 1000
    schedule: str = "squaredcos_cap_v2"
    sample_steps: int = 50  # DDIM steps at sampling time
    n_conditions: int = 0
    conditions: dict | None = None  # hypernet.conditions.ConditionSpec.to_dict(): sets n_conditions
    tokenizer: dict | None = None  # hypernet.tokenizer.WeightTokenizer.to_dict(): statistics to decode samples
    family: str | None = None  # the model family the generator serves

    def __post_init__(self):
        if self.conditions is not None:
            from hypernet.conditions import ConditionSpec

            self.n_conditions = ConditionSpec.from_dict(self.conditions).n
        if self.schedule not in SCHEDULES:
            raise ZooError(f"DiffusionConfig.schedule {self.schedule!r} is not valid; valid: {', '.join(SCHEDULES)}")
        for k in ("token_size", "d_model", "layers", "heads", "ff_mult", "max_layers", "n_kinds", "timesteps",
                  "sample_steps"):
            if getattr(self, k) < 1:
                raise ZooError(f"DiffusionConfig.{k} must be >= 1; got {getattr(self, k)}")
        if self.d_model % self.heads or self.d_model % 4:
            raise ZooError(f"DiffusionConfig.d_model ({self.d_model}) must be divisible by heads ({self.heads}) and 4")
        if self.sample_steps > self.timesteps:
            raise ZooError(f"DiffusionConfig.sample_steps ({self.sample_steps}) exceeds timesteps ({self.timesteps})")

    def to_dict(self) -> dict:
        return asdict(self)


def sinusoid(x: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Transformer position features of integer/float positions: x (...,) -> (..., dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=x.device) / half)
    a = x.float().unsqueeze(-1) * freqs  # (..., half)
    return torch.cat([a.sin(), a.cos()], dim=-1)


class WeightDiffusion(nn.Module, PyTorchModelHubMixin, library_name="weight-zoo",
                      tags=["weight-generation", "diffusion", "weight-space-learning"]):
    """ε-prediction transformer over weight tokens, with diffusers' DDPM / DDIM schedulers."""

    def __init__(self, config: DiffusionConfig | dict | None = None):
        super().__init__()
        if isinstance(config, dict):
            config = DiffusionConfig(**config)
        c = self.config = config or DiffusionConfig()
        if c.conditions:
            from hypernet.conditions import ConditionSpec

            self.conditions = ConditionSpec.from_dict(c.conditions)
        else:
            self.conditions = None
        d = c.d_model
        self.inp = nn.Linear(c.token_size, d)
        self.layer_emb = nn.Embedding(c.max_layers, d)
        self.kind_emb = nn.Embedding(c.n_kinds, d)
        self.pos_proj = nn.Linear(d, d)  # mixes the row and chunk sinusoids
        self.time = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        self.cond = nn.Linear(c.n_conditions, d) if c.n_conditions else None
        block = nn.TransformerEncoderLayer(d, c.heads, c.ff_mult * d, c.dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(block, c.layers, enable_nested_tensor=False)
        self.ln = nn.LayerNorm(d)
        self.out = nn.Linear(d, c.token_size)
        nn.init.zeros_(self.out.weight)  # start by predicting ε = 0: a stable first step
        nn.init.zeros_(self.out.bias)

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # -- schedules (diffusers)
    def train_scheduler(self):
        from diffusers import DDPMScheduler

        c = self.config
        return DDPMScheduler(num_train_timesteps=c.timesteps, beta_schedule=c.schedule, prediction_type="epsilon",
                             clip_sample=False)

    def sample_scheduler(self):
        from diffusers import DDIMScheduler

        return DDIMScheduler.from_config(self.train_scheduler().config)

    # -- the denoiser
    def _check(self, ids: torch.Tensor) -> None:
        c = self.config
        if ids.shape[-1] != 4:
            raise ZooError(f"token ids must be (..., N, 4) [layer, kind, row, chunk]; got {tuple(ids.shape)}")
        if int(ids[..., 0].max()) >= c.max_layers:
            raise ZooError(f"the network has {int(ids[..., 0].max()) + 1} parameterized modules; this generator "
                           f"takes at most {c.max_layers} (DiffusionConfig.max_layers)")
        if int(ids[..., 1].max()) >= c.n_kinds:
            raise ZooError(f"parameter kind {int(ids[..., 1].max())} beyond DiffusionConfig.n_kinds={c.n_kinds}")

    def forward(self, x: torch.Tensor, t: torch.Tensor, ids: torch.Tensor,
                condition: torch.Tensor | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Predicted noise. x (B, N, token_size) noisy tokens, t (B,) timesteps, ids (B, N, 4) or (N, 4),
        condition (B, n_conditions) or None, mask (B, N, token_size) or None -> (B, N, token_size)."""
        c = self.config
        B, N, _ = x.shape
        if ids.dim() == 2:
            ids = ids.unsqueeze(0).expand(B, N, 4)
        self._check(ids)
        d = c.d_model
        pos = torch.cat([sinusoid(ids[..., 2], d // 2), sinusoid(ids[..., 3], d // 2)], dim=-1)  # (B, N, d)
        h = (self.inp(x) + self.layer_emb(ids[..., 0]) + self.kind_emb(ids[..., 1]) + self.pos_proj(pos))
        g = self.time(sinusoid(t, d))  # (B, d)
        if self.cond is not None:
            if condition is None:
                raise ZooError(f"this generator is conditioned: pass a (B, {c.n_conditions}) condition")
            g = g + self.cond(condition.to(h.dtype))
        h = h + g.unsqueeze(1)  # (B, N, d)
        pad = None
        if mask is not None:
            pad = ~mask.any(-1)  # (B, N): a token with no real value (never happens with the tokenizer's layout)
        h = self.blocks(h, src_key_padding_mask=pad if pad is not None and bool(pad.any()) else None)
        return self.out(self.ln(h))

    def loss(self, x0: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor, condition: torch.Tensor | None = None,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """DDPM ε-loss: mean squared error of the predicted noise over real (unpadded) values.
        x0 (B, N, token_size) clean standardized tokens, mask (B, N, token_size) bool."""
        sched = self.train_scheduler()
        B = x0.shape[0]
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype) * mask
        t = torch.randint(0, self.config.timesteps, (B,), generator=generator)
        xt = sched.add_noise(x0 * mask, noise, t)
        eps = self(xt, t, ids, condition, mask)
        m = mask.to(eps.dtype)
        return ((eps - noise) ** 2 * m).sum() / m.sum().clamp_min(1.0)

    @torch.no_grad()
    def sample(self, ids: torch.Tensor, mask: torch.Tensor, condition: torch.Tensor | None = None, n: int = 1,
               steps: int | None = None, generator: torch.Generator | None = None, eta: float = 0.0) -> torch.Tensor:
        """n samples of one layout: ids (N, 4), mask (N, token_size) -> (n, N, token_size), padding zero."""
        sched = self.sample_scheduler()
        sched.set_timesteps(steps or self.config.sample_steps)
        N, k = mask.shape
        m = mask.unsqueeze(0).expand(n, N, k).to(torch.float32)
        x = torch.randn((n, N, k), generator=generator) * m
        cond = None if condition is None else condition.reshape(1, -1).expand(n, -1)
        for t in sched.timesteps:
            eps = self(x, t.expand(n), ids, cond, m.bool()) * m
            x = sched.step(eps, t, x, eta=eta, generator=generator).prev_sample * m
        return x


__all__ = ["DiffusionConfig", "SCHEDULES", "WeightDiffusion", "sinusoid"]
