"""Tiny vision transformer for images (C, H, W), e.g. 1x8x8 digits.

Non-overlapping patch x patch patches -> Linear patch embedding to `width` -> + learned position
embedding `pos_embed` -> `depth` pre-LN blocks (zoo.nets.attention) -> LayerNorm -> mean over
tokens -> Linear `head`. Mean pooling instead of a class token keeps the token count = patch count.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from zoo.nets.attention import Block, check_transformer_knobs


class ViT(nn.Module):
    def __init__(self, input_shape, n_classes, width, depth, heads, patch, mlp_ratio):
        super().__init__()
        C, H, W = input_shape
        self.patch, self.grid = patch, (H // patch, W // patch)
        n_patches = self.grid[0] * self.grid[1]
        self.embed = nn.Linear(C * patch * patch, width)
        self.pos_embed = nn.Parameter(torch.randn(1, n_patches, width) * 0.02)
        self.blocks = nn.Sequential(*(Block(width, heads, n_patches, mlp_ratio) for _ in range(depth)))
        self.ln_f = nn.LayerNorm(width)
        self.head = nn.Linear(width, n_classes)

    def forward(self, x):  # (N, C, H, W)
        (gh, gw), p = self.grid, self.patch
        x = x.unflatten(-2, (gh, p)).unflatten(-1, (gw, p))  # (N, C, gh, p, gw, p)
        x = x.permute(0, 2, 4, 1, 3, 5).flatten(3).flatten(1, 2)  # (N, gh*gw, C*p*p), row-major patches
        x = self.embed(x) + self.pos_embed  # (N, P, width)
        x = self.ln_f(self.blocks(x)).mean(dim=1)  # (N, width)
        return self.head(x)  # (N, n_classes)


def vit(
    input_shape: tuple[int, ...], n_classes: int,
    width: int = 32, depth: int = 2, heads: int = 2, patch: int = 2, mlp_ratio: int = 2,
) -> nn.Module:
    """width = model dim (the load knob); depth = blocks; patch = side of a square patch."""
    if len(input_shape) != 3:
        raise ValueError(f"vit takes images (C, H, W); got shape {tuple(input_shape)}")
    check_transformer_knobs("vit", width, depth, heads, mlp_ratio)
    H, W = input_shape[1:]
    if patch < 1 or H % patch or W % patch:
        valid = [p for p in range(1, min(H, W) + 1) if H % p == 0 and W % p == 0]
        raise ValueError(f"vit needs patch dividing H={H} and W={W} (got patch={patch}; valid patch: {valid})")
    return ViT(tuple(input_shape), n_classes, width, depth, heads, patch, mlp_ratio)
