"""Tiny causal character-level transformer in the nanoGPT style.

input_shape = (T,) is the context length and n_classes = V the vocabulary size: tokens (N, T)
int64 -> logits (N, T, V), position t predicting token t+1. Token embedding + learned position
embedding `pos_embed` -> `depth` pre-LN causal blocks (zoo.nets.attention) -> LayerNorm ->
Linear `head`. No weight tying (the head is an ordinary, separately trained layer), no dropout.
Inputs must have exactly T tokens: the position embedding and causal mask are sized at build time.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from zoo.nets.attention import Block, check_transformer_knobs


class GPT(nn.Module):
    def __init__(self, T, V, width, depth, heads, mlp_ratio):
        super().__init__()
        self.tok_embed = nn.Embedding(V, width)
        nn.init.normal_(self.tok_embed.weight, std=0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, T, width) * 0.02)
        self.blocks = nn.Sequential(*(Block(width, heads, T, mlp_ratio, causal=True) for _ in range(depth)))
        self.ln_f = nn.LayerNorm(width)
        self.head = nn.Linear(width, V)

    def forward(self, x):  # (N, T) int64
        x = self.tok_embed(x) + self.pos_embed  # (N, T, width)
        return self.head(self.ln_f(self.blocks(x)))  # (N, T, V)


def gpt(
    input_shape: tuple[int, ...], n_classes: int, width: int = 32, depth: int = 2, heads: int = 2, mlp_ratio: int = 4
) -> nn.Module:
    """width = model dim (the load knob); depth = blocks; n_classes = vocabulary size."""
    if len(input_shape) != 1 or input_shape[0] < 1:
        raise ValueError(f"gpt takes token sequences (T,); got shape {tuple(input_shape)}")
    check_transformer_knobs("gpt", width, depth, heads, mlp_ratio)
    return GPT(input_shape[0], n_classes, width, depth, heads, mlp_ratio)
