"""Stems and heads shared by the DEQ classifier and its unrolled twin."""

from __future__ import annotations

from torch import nn


def groups_for(channels: int, preferred: int = 4) -> int:
    """Largest group count <= preferred dividing channels (GroupNorm needs a divisor)."""
    return next(g for g in range(min(preferred, channels), 0, -1) if channels % g == 0)


def stem(in_channels: int, channels: int, height: int, width: int) -> nn.Sequential:
    """conv3x3(in -> channels) + GroupNorm, then 2x2 max-pool when the image is at least
    16x16 (28x28 -> 14x14, 32x32 -> 16x16; solving at full resolution costs 4x more).
    No activation: the injection keeps its sign, and the cell's relu thresholds u + W2 h."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, channels, 3, padding=1),
        nn.GroupNorm(groups_for(channels), channels),
    ]
    if min(height, width) >= 16:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


def pooled_head(channels: int, num_classes: int, pool: int = 4) -> nn.Sequential:
    """GroupNorm + adaptive avg-pool to pool x pool + linear."""
    return nn.Sequential(
        nn.GroupNorm(groups_for(channels), channels),
        nn.AdaptiveAvgPool2d(pool),
        nn.Flatten(),
        nn.Linear(channels * pool * pool, num_classes),
    )
