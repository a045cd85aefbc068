"""Small residual net with BatchNorm (He et al. 2015 style, post-activation BasicBlocks).

stem conv3(`width`, no bias) -> BN -> ReLU; then `stages` stages, stage s with width * 2**s
channels and `depth` BasicBlocks (the first block of every stage after the first halves the
resolution with stride 2); then global average pooling -> Linear `head`. 1D convolutions for
inputs (C, L) such as MNIST-1D, 2D for images (C, H, W). Convs carry no bias: BN supplies it.
"""
from __future__ import annotations

from collections import OrderedDict

import torch.nn as nn

_LAYERS = {1: (nn.Conv1d, nn.BatchNorm1d, nn.AdaptiveAvgPool1d), 2: (nn.Conv2d, nn.BatchNorm2d, nn.AdaptiveAvgPool2d)}


class BasicBlock(nn.Module):
    """relu(bn(conv3(relu(bn(conv3(x))))) + shortcut(x)); shortcut = 1x1 conv + BN when shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int, spatial: int):
        super().__init__()
        conv, bn, _ = _LAYERS[spatial]
        self.conv1 = conv(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = bn(c_out)
        self.act1 = nn.ReLU(inplace=False)
        self.conv2 = conv(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = bn(c_out)
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(conv(c_in, c_out, 1, stride=stride, bias=False), bn(c_out))
        else:
            self.shortcut = nn.Identity()
        self.act2 = nn.ReLU(inplace=False)

    def forward(self, x):  # (N, c_in, *S) -> (N, c_out, *S / stride)
        y = self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x)))))
        return self.act2(y + self.shortcut(x))


def resnet(input_shape: tuple[int, ...], n_classes: int, width: int = 8, depth: int = 1, stages: int = 2) -> nn.Module:
    """width = stem channels (the load knob); depth = blocks per stage; stages = resolution levels."""
    for name, val in (("width", width), ("depth", depth), ("stages", stages)):
        if val < 1:
            raise ValueError(f"resnet needs {name} >= 1 (got {name}={val})")
    spatial = len(input_shape) - 1
    if spatial not in (1, 2):
        raise ValueError(f"resnet takes inputs (C, L) or (C, H, W); got shape {tuple(input_shape)}")
    conv, bn, pool = _LAYERS[spatial]
    layers: OrderedDict[str, nn.Module] = OrderedDict(
        stem=conv(input_shape[0], width, 3, stride=1, padding=1, bias=False), bn=bn(width), act=nn.ReLU(inplace=False)
    )
    c = width
    for s in range(stages):
        c_out = width * 2**s
        blocks = []
        for b in range(depth):
            blocks.append(BasicBlock(c, c_out, stride=2 if (s > 0 and b == 0) else 1, spatial=spatial))
            c = c_out
        layers[f"stage{s}"] = nn.Sequential(*blocks)
    layers["pool"] = pool(1)
    layers["flatten"] = nn.Flatten()
    layers["head"] = nn.Linear(c, n_classes)
    return nn.Sequential(layers)
