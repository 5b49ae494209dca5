"""`mean`: delta = sum_k w_k (x_k - x), the weighted average (FedAvg with examples).
No options."""

from __future__ import annotations

from collections.abc import Sequence

from deqfl.fl.fusion.aggregator.ops import weighted_sum
from deqfl.fl.fusion.base import Aggregate, RuleOptions
from deqfl.fl.fusion.registry import register_aggregator
from deqfl.fl.validation import ValidatedUpdate


@register_aggregator("mean", central_dp=True, local_dp=True)
def mean(
    updates: Sequence[ValidatedUpdate], weights: Sequence[float], options: RuleOptions
) -> Aggregate:
    return Aggregate(delta=weighted_sum([u.delta for u in updates], weights))
