"""Transformer pieces shared by `vit` and `gpt`: hand-written multi-head self-attention and a pre-LN block.

The attention is plain matmul + softmax (not F.scaled_dot_product_attention) so that populations
run under `torch.func.vmap(functional_call(...))`, the Hessian's double backward goes through, and
`torch.fx.symbolic_trace` sees every op. No dropout, no buffers: the causal mask is built in
forward from the token count known at build time, so the state_dict holds parameters only.
Every reshape uses negative dims, so any leading batch shape works (e.g. vmap over samples).
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn


class SelfAttention(nn.Module):
    """Multi-head self-attention over (..., T, width) tokens; causal: token t sees tokens <= t only."""

    def __init__(self, width: int, heads: int, n_tokens: int, causal: bool = False):
        super().__init__()
        self.heads, self.head_dim, self.n_tokens, self.causal = heads, width // heads, n_tokens, causal
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x):
        qkv = self.qkv(x).unflatten(-1, (3, self.heads, self.head_dim))  # (..., T, 3, h, dh)
        q, k, v = (qkv.select(-3, i).transpose(-3, -2) for i in range(3))  # each (..., h, T, dh)
        att = (q @ k.transpose(-2, -1)) * self.scale  # (..., h, T, T)
        if self.causal:
            T = self.n_tokens
            mask = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()  # (T, T), True = visible
            att = att.masked_fill(~mask, float("-inf"))
        y = att.softmax(dim=-1) @ v  # (..., h, T, dh)
        return self.proj(y.transpose(-3, -2).flatten(-2))  # (..., T, width)


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln1(x)), then x + mlp(ln2(x)); MLP is Linear-GELU-Linear."""

    def __init__(self, width: int, heads: int, n_tokens: int, mlp_ratio: int, causal: bool = False):
        super().__init__()
        hidden = width * mlp_ratio
        self.ln1 = nn.LayerNorm(width)
        self.attn = SelfAttention(width, heads, n_tokens, causal)
        self.ln2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            OrderedDict(fc=nn.Linear(width, hidden), act=nn.GELU(), proj=nn.Linear(hidden, width))
        )

    def forward(self, x):  # (..., T, width) -> (..., T, width)
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


def check_transformer_knobs(family: str, width: int, depth: int, heads: int, mlp_ratio: int) -> None:
    for name, val in (("width", width), ("depth", depth), ("heads", heads), ("mlp_ratio", mlp_ratio)):
        if val < 1:
            raise ValueError(f"{family} needs {name} >= 1 (got {name}={val})")
    if width % heads:
        divisors = [h for h in range(1, width + 1) if width % h == 0]
        raise ValueError(f"{family} needs width divisible by heads (got width={width}, heads={heads}; "
                         f"valid heads for this width: {divisors})")
