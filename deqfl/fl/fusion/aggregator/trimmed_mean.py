"""`trimmed-mean`: coordinate-wise trimmed mean (Yin et al., ICML 2018).

Per coordinate, drop the t = floor(trim_fraction * K) smallest and t largest of the K
values (t is reduced so that at least one value remains) and average the rest with their
weights, renormalised per coordinate; where the survivors' weights sum to 0, their plain
mean. Trimming counts values, not weight.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from deqfl.fl.fusion.aggregator.ops import weight_vector
from deqfl.fl.fusion.base import Aggregate
from deqfl.fl.fusion.config import FusionConfig
from deqfl.fl.fusion.registry import register_aggregator
from deqfl.fl.validation import ValidatedUpdate


def trimmed_mean(values: torch.Tensor, weights: torch.Tensor, trim: int) -> torch.Tensor:
    """Weighted mean along dim 0 of `values` (K, ...) after dropping `trim` at each end."""
    ordered, index = values.sort(dim=0, stable=True)
    k = values.shape[0]
    kept = ordered[trim : k - trim]
    w = weights[index][trim : k - trim]
    total = w.sum(dim=0)
    weighted = (w * kept).sum(dim=0) / torch.where(total > 0, total, 1.0)
    return torch.where(total > 0, weighted, kept.mean(dim=0))


@register_aggregator("trimmed-mean", local_dp=True)
def trimmed(
    updates: Sequence[ValidatedUpdate], weights: Sequence[float], config: FusionConfig
) -> Aggregate:
    k = len(updates)
    trim = min(math.floor(config.trim_fraction * k), (k - 1) // 2)
    w = weight_vector(weights, updates)
    delta = {
        key: trimmed_mean(torch.stack([u.delta[key] for u in updates]), w, trim)
        for key in updates[0].delta
    }
    return Aggregate(delta=delta)
