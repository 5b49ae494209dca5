"""`median`: coordinate-wise weighted median of the deltas (Yin et al., ICML 2018).

Per coordinate, sort the K values; the weighted median is the value where the cumulative
weight reaches 1/2; where it lands exactly on 1/2 between two values, their mean. With
equal weights this is the ordinary median (mean of the two middle values for even K).
No options.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from deqfl.fl.fusion.base import Aggregate, RuleOptions
from deqfl.fl.fusion.registry import register_aggregator
from deqfl.fl.validation import ValidatedUpdate

_TOL = 1e-12


def weighted_median(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted median along dim 0 of `values` (K, ...), weights (K,) summing to 1."""
    ordered, index = values.sort(dim=0, stable=True)
    cumulative = weights[index].cumsum(dim=0)
    last = values.shape[0] - 1
    lo = (cumulative < 0.5 - _TOL).sum(dim=0, keepdim=True).clamp(max=last)
    hi = (cumulative <= 0.5 + _TOL).sum(dim=0, keepdim=True).clamp(max=last)
    return ((ordered.gather(0, lo) + ordered.gather(0, hi)) / 2).squeeze(0)


@register_aggregator("median", local_dp=True)
def median(
    updates: Sequence[ValidatedUpdate], weights: Sequence[float], options: RuleOptions
) -> Aggregate:
    w = torch.tensor(list(weights), dtype=torch.float64)
    delta = {}
    for key in updates[0].delta:
        delta[key] = weighted_median(torch.stack([u.delta[key] for u in updates]), w)
    return Aggregate(delta=delta)
