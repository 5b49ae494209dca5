"""`trimmed-mean`: coordinate-wise trimmed mean (Yin et al., ICML 2018).

Per coordinate, drop the t = floor(trim_fraction * K) smallest and t largest of the K
values (t is reduced so that at least one value remains) and average the rest with their
weights, renormalised per coordinate; where the survivors' weights sum to 0, their plain
mean. Trimming counts values, not weight. Option `trim_fraction`
(`fusion.aggregator_options.trim_fraction`; old flat key `fusion.trim_fraction`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import torch
from pydantic import Field

from deqfl.fl.fusion.base import Aggregate, RuleOptions
from deqfl.fl.fusion.registry import register_aggregator
from deqfl.fl.validation import ValidatedUpdate


class TrimmedMeanOptions(RuleOptions):
    legacy_keys: ClassVar[dict[str, str]] = {"trim_fraction": "trim_fraction"}

    trim_fraction: float = Field(
        0.1,
        ge=0,
        lt=0.5,
        description="Fraction of values dropped at each end, per coordinate "
        "(floor(trim_fraction * K) each side).",
    )


def trimmed_mean(values: torch.Tensor, weights: torch.Tensor, trim: int) -> torch.Tensor:
    """Weighted mean along dim 0 of `values` (K, ...) after dropping `trim` at each end."""
    ordered, index = values.sort(dim=0, stable=True)
    k = values.shape[0]
    kept = ordered[trim : k - trim]
    w = weights[index][trim : k - trim]
    total = w.sum(dim=0)
    weighted = (w * kept).sum(dim=0) / torch.where(total > 0, total, 1.0)
    return torch.where(total > 0, weighted, kept.mean(dim=0))


@register_aggregator("trimmed-mean", options=TrimmedMeanOptions, local_dp=True)
def trimmed(
    updates: Sequence[ValidatedUpdate], weights: Sequence[float], options: TrimmedMeanOptions
) -> Aggregate:
    k = len(updates)
    trim = min(math.floor(options.trim_fraction * k), (k - 1) // 2)
    w = torch.tensor(list(weights), dtype=torch.float64)
    delta = {
        key: trimmed_mean(torch.stack([u.delta[key] for u in updates]), w, trim)
        for key in updates[0].delta
    }
    return Aggregate(delta=delta)
