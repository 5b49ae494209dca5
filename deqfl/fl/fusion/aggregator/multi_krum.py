"""`multi-krum` (Blanchard et al., NeurIPS 2017): keep the m updates with the lowest Krum
scores (`deqfl.fl.fusion.aggregator.krum`, f = option `byzantine`) and average them with
their weights renormalised (uniformly if those sum to 0).

m is option `select` (default K - f), clamped into [1, K]. Selection ignores the weights
(it is geometric); ties go to the lower client id; the effective weights (0 for updates
not selected) are returned for reporting. Options `byzantine`, `select`
(`fusion.aggregator_options`; old flat keys `fusion.krum_byzantine`, `fusion.krum_select`,
still accepted).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from pydantic import Field

from deqfl.fl.fusion.aggregator.krum import KrumOptions, average_selected
from deqfl.fl.fusion.aggregator.krum import select as lowest_scores
from deqfl.fl.fusion.base import Aggregate
from deqfl.fl.fusion.registry import register_aggregator
from deqfl.fl.validation import ValidatedUpdate


class MultiKrumOptions(KrumOptions):
    legacy_keys: ClassVar[dict[str, str]] = {"krum_byzantine": "byzantine", "krum_select": "select"}

    select: int | None = Field(None, ge=1, description="Updates averaged (m); null means K - f.")


@register_aggregator("multi-krum", options=MultiKrumOptions, local_dp=True)
def multi_krum(
    updates: Sequence[ValidatedUpdate], weights: Sequence[float], options: MultiKrumOptions
) -> Aggregate:
    m = options.select or len(updates) - options.byzantine
    return average_selected(updates, weights, lowest_scores(updates, options.byzantine, m))
