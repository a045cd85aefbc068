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
head predict, per DiffusionConfig.prediction (diffusers' prediction_type), the noise ε ("epsilon"),
the clean tokens ("sample") or v = sqrt(ᾱ)·ε − sqrt(1−ᾱ)·x0 ("v_prediction"). Padding positions
(mask False) carry no loss and are zeroed in samples. Row ids come from weight rows, so permuting
hidden units permutes rows: the generator is trained on canonicalized weights (hypernet.symmetry)
plus random permutations, and the row embedding is a sinusoid rather than a learned table so any
width works.

The base net (base_rows > 0; "sample" or "v_prediction"). A learned table of clean tokens, one
per (role: first / hidden / last layer, kind, row mod base_rows, chunk mod base_chunks), initialized
N(0, 1) like a random net's standardized tokens; the head's output is a correction to it, so the
clean estimate at full noise is the base net (sample: x0 = base + head; v: v = head − base, and
x0 = sqrt(ᾱ)·x_t − sqrt(1−ᾱ)·v). Why: with a zero-initialized head the estimate at high noise
is the zoo's mean, which decodes to a dead ReLU net (the mean biases are negative), so a task loss
on it has no gradient; and the transformer alone learns per-row weights slowly from sinusoids. Wider
tensors tile the table, as the GHN's tiled decoder tiles its chunk.

`loss(..., return_x0=True)` also returns the clean estimate, which pipelines.fit_diffusion decodes
into a network and trains with the task loss as well (the denoising loss alone does not reach
working nets on a zoo of a few members per architecture; see the README).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
from huggingface_hub import PyTorchModelHubMixin

from hypernet.tokenizer import tile_index
from zoo.errors import ZooError

SCHEDULES = ("squaredcos_cap_v2", "linear", "scaled_linear")
PREDICTIONS = ("epsilon", "sample", "v_prediction")  # diffusers' prediction_type


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
    prediction: str = "epsilon"  # what the denoiser outputs: the noise, the clean tokens, or v
    token_scale: str = "fan_in"  # hypernet.tokenizer scale: "fan_in" or "none"
    token_pool: str = "role"  # hypernet.tokenizer pool: "role" or "layer"
    base_rows: int = 0  # > 0: a learned base net of this many rows per (role, kind), tiled over wider tensors
    base_chunks: int = 2  # chunks per row of the base net (tiled over longer rows)
    n_conditions: int = 0
    conditions: dict | None = None  # hypernet.conditions.ConditionSpec.to_dict(): sets n_conditions
    tokenizer: dict | None = None  # hypernet.tokenizer.WeightTokenizer.to_dict(): statistics to decode samples
    family: str | None = None  # the model family the generator serves

    def __post_init__(self):
        if self.conditions is not None:
            from hypernet.conditions import ConditionSpec

            self.n_conditions = ConditionSpec.from_dict(self.conditions).n
        if self.prediction not in PREDICTIONS:
            raise ZooError(f"DiffusionConfig.prediction {self.prediction!r} is not valid; valid: {', '.join(PREDICTIONS)}")
        from hypernet.tokenizer import POOLS, SCALES

        if self.token_scale not in SCALES:
            raise ZooError(f"DiffusionConfig.token_scale {self.token_scale!r} is not valid; valid: {', '.join(SCALES)}")
        if self.token_pool not in POOLS:
            raise ZooError(f"DiffusionConfig.token_pool {self.token_pool!r} is not valid; valid: {', '.join(POOLS)}")
        if self.base_rows and self.prediction == "epsilon":
            raise ZooError("DiffusionConfig.base_rows needs prediction 'sample' or 'v_prediction': a base net is "
                           "a clean-weight estimate, which an ε-prediction cannot carry")
        if self.base_rows < 0:
            raise ZooError(f"DiffusionConfig.base_rows must be >= 0; got {self.base_rows}")
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
    """Denoising transformer over weight tokens (ε, x0 or v prediction, an optional learned base net),
    with diffusers' DDPM / DDIM schedulers."""

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
        # the base net: one learned token per (role, kind, row mod base_rows, chunk mod base_chunks),
        # N(0, 1) like the standardized tokens of a random net, so its gradients are alive from step 0
        self.base = nn.Embedding(3 * c.n_kinds * c.base_rows * c.base_chunks, c.token_size) if c.base_rows else None
        if self.base is not None:
            nn.init.normal_(self.base.weight)
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
        return DDPMScheduler(num_train_timesteps=c.timesteps, beta_schedule=c.schedule, prediction_type=c.prediction,
                             clip_sample=False)

    def sample_scheduler(self):
        from diffusers import DDIMScheduler

        # "trailing" spacing: the first step is at t = T-1 (pure noise) for any number of steps; diffusers'
        # default "leading" spacing starts few-step sampling at t = T - T/steps, on noise it never saw there
        return DDIMScheduler.from_config(self.train_scheduler().config, timestep_spacing="trailing")

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
        out = self.out(self.ln(h))
        if self.base is not None:  # clean estimate = base + learned correction (v = −x0 share at high noise)
            base = self.base(self.base_index(ids))
            out = out + base if c.prediction == "sample" else out - base
        return out

    def base_index(self, ids: torch.Tensor) -> torch.Tensor:
        """(..., N, 4) token ids -> index of the base-net token (hypernet.tokenizer.tile_index)."""
        c = self.config
        return tile_index(ids, c.n_kinds, c.base_rows, c.base_chunks)

    def loss(self, x0: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor, condition: torch.Tensor | None = None,
             generator: torch.Generator | None = None, return_x0: bool = False, t: torch.Tensor | None = None):
        """DDPM loss: mean squared error of the prediction (the noise ε, the clean tokens x0, or
        v = sqrt(ᾱ)·ε − sqrt(1−ᾱ)·x0, per DiffusionConfig.prediction) over real (unpadded) values.
        x0 (B, N, token_size) clean standardized tokens, mask (B, N, token_size) bool.
        return_x0: also return the denoiser's estimate of the clean tokens (B, N, token_size), with
        gradients, for a loss on the weights it implies. t: (B,) timesteps (default: uniform draws)."""
        sched = self.train_scheduler()
        B = x0.shape[0]
        x0 = x0 * mask
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype) * mask
        if t is None:
            t = torch.randint(0, self.config.timesteps, (B,), generator=generator)
        xt = sched.add_noise(x0, noise, t)
        pred = self(xt, t, ids, condition, mask)
        p = self.config.prediction
        target = noise if p == "epsilon" else x0 if p == "sample" else sched.get_velocity(x0, noise, t)
        m = mask.to(pred.dtype)
        loss = ((pred - target) ** 2 * m).sum() / m.sum().clamp_min(1.0)
        if not return_x0:
            return loss
        a = sched.alphas_cumprod.to(pred.dtype)[t].reshape(B, 1, 1)
        if p == "sample":
            x0_hat = pred
        elif p == "epsilon":
            x0_hat = (xt - (1 - a).sqrt() * pred) / a.sqrt()
        else:
            x0_hat = a.sqrt() * xt - (1 - a).sqrt() * pred
        return loss, x0_hat * m

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
            out = self(x, t.expand(n), ids, cond, m.bool()) * m
            x = sched.step(out, t, x, eta=eta, generator=generator).prev_sample * m
        return x

    @torch.no_grad()
    def sample_tokens(self, layout, mask: torch.Tensor, condition: torch.Tensor | None = None, n: int = 1,
                      generator: torch.Generator | None = None) -> torch.Tensor:
        """n samples of a hypernet.tokenizer.TokenLayout (what hypernet.api.predict_params calls on
        every sampling generator): (n, N, token_size)."""
        return self.sample(layout.ids(), mask, condition, n=n, generator=generator)


__all__ = ["DiffusionConfig", "PREDICTIONS", "SCHEDULES", "WeightDiffusion", "sinusoid"]
