"""`quality`: w_k = n_k q_k / sum_j n_j q_j, with q_k from option `source`
(`fusion.weighting_options.source`; old flat key `fusion.quality`, still accepted).

- residual: q_k = 1 / (1 + r_k / median_j r_j), r_k the client's bounded relative
  residual at the reference budget. q_k is in (0, 1); the median client gets 1/2, a
  client with 3x the median residual 1/4. A client lying with a tiny residual gains at
  most a factor 2 over the median client (q < 1).
- budget: q_k = min(cap_k, reference_cap) / reference_cap; q_k = 1 for explicit models
  (cap 0) and when no tier has a cap (reference_cap 0).
- loss: q_k = 1 / (1 + L_k / median_j L_j), L_k the held-back loss (scale-free, no
  temperature to tune). If the median loss is 0, q_k = 1 for L_k = 0, else 0.

A client that reports no residual (or no loss) is taken to be at the median: q_k = 1/2.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import ClassVar, Literal

from pydantic import Field

from deqfl.fl.fusion.base import RuleOptions, Weights
from deqfl.fl.fusion.registry import register_weighting
from deqfl.fl.update import ClientUpdate, FusionContext


class QualityOptions(RuleOptions):
    legacy_keys: ClassVar[dict[str, str]] = {"quality": "source"}

    source: Literal["residual", "budget", "loss"] = Field(
        "residual",
        description="Source of q_k: 'residual' q_k = 1/(1 + r_k / median r); 'budget' "
        "q_k = cap_k / reference_cap; 'loss' q_k = 1/(1 + L_k / median L), L_k the held-back loss.",
    )


def relative_quality(values: Sequence[float | None]) -> list[float]:
    """q_k = 1 / (1 + v_k / median v) over the values present; None gives 1/2."""
    present = [v for v in values if v is not None]
    median = statistics.median(present) if present else 0.0

    def q(v: float | None) -> float:
        if v is None:
            return 0.5
        if median > 0:
            return 1.0 / (1.0 + v / median)
        return 1.0 if v == 0 else 0.0

    return [q(v) for v in values]


def budget_quality(updates: Sequence[ClientUpdate], reference_cap: int) -> list[float]:
    """q_k = min(cap_k, reference_cap) / reference_cap (1 without caps)."""
    if reference_cap <= 0:
        return [1.0] * len(updates)
    return [
        1.0 if u.forward_cap <= 0 else min(u.forward_cap, reference_cap) / reference_cap
        for u in updates
    ]


@register_weighting("quality", options=QualityOptions)
def quality(updates: Sequence[ClientUpdate], ctx: FusionContext, options: QualityOptions) -> Weights:
    if options.source == "residual":
        q = relative_quality([u.residual for u in updates])
    elif options.source == "loss":
        q = relative_quality([u.holdout_loss for u in updates])
    else:
        q = budget_quality(updates, ctx.reference_cap)
    return Weights(scores=[u.num_examples * qk for u, qk in zip(updates, q)], quality=q)
