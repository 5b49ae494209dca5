"""`examples` (FedAvg): w_k = n_k / sum_j n_j, n_k the bounded example count. No options."""

from __future__ import annotations

from collections.abc import Sequence

from deqfl.fl.fusion.base import RuleOptions, Weights
from deqfl.fl.fusion.registry import register_weighting
from deqfl.fl.update import ClientUpdate, FusionContext


@register_weighting("examples")
def examples(updates: Sequence[ClientUpdate], ctx: FusionContext, options: RuleOptions) -> Weights:
    return Weights(
        scores=[float(u.num_examples) for u in updates], quality=[1.0] * len(updates)
    )
