"""`uniform`: w_k = 1 / K, whatever each client reports. No options."""

from __future__ import annotations

from collections.abc import Sequence

from deqfl.fl.fusion.base import RuleOptions, Weights
from deqfl.fl.fusion.registry import register_weighting
from deqfl.fl.update import ClientUpdate, FusionContext


@register_weighting("uniform", central_dp=True, local_dp=True)
def uniform(updates: Sequence[ClientUpdate], ctx: FusionContext, options: RuleOptions) -> Weights:
    return Weights(scores=[1.0] * len(updates), quality=[1.0] * len(updates))
