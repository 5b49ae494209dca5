"""`krum` (Blanchard et al., NeurIPS 2017), and the selection `multi-krum` shares.

With K updates and f assumed attackers (option `byzantine`), each update's score is the
sum of squared L2 distances from its delta to its n = K - f - 2 nearest other deltas
(n is clamped into [1, K - 1]; the guarantee needs K >= 2f + 3). `krum` keeps the single
lowest-scoring update (ties go to the lower client id) and ignores the weights; the
effective weights (1 for it, 0 for the others) are returned for reporting.

Option `byzantine` (`fusion.aggregator_options.byzantine`; old flat key
`fusion.krum_byzantine`, still accepted).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from pydantic import Field

from deqfl.fl.fusion.aggregator.ops import flatten, weighted_sum
from deqfl.fl.fusion.base import Aggregate, RuleOptions
from deqfl.fl.fusion.registry import register_aggregator
from deqfl.fl.validation import ValidatedUpdate


class KrumOptions(RuleOptions):
    legacy_keys: ClassVar[dict[str, str]] = {"krum_byzantine": "byzantine"}

    byzantine: int = Field(1, ge=0, description="Assumed number f of attackers.")


def krum_scores(vectors: torch.Tensor, byzantine: int) -> torch.Tensor:
    """Krum score of each row of `vectors` (K, P)."""
    k = vectors.shape[0]
    if k == 1:
        return torch.zeros(1, dtype=torch.float64)
    neighbours = min(max(1, k - byzantine - 2), k - 1)
    distances = torch.cdist(vectors, vectors, compute_mode="donot_use_mm_for_euclid_dist") ** 2
    distances.fill_diagonal_(float("inf"))
    nearest, _ = distances.sort(dim=1)
    return nearest[:, :neighbours].sum(dim=1)


def select(updates: Sequence[ValidatedUpdate], byzantine: int, m: int) -> list[int]:
    """Indices of the m updates with the lowest Krum scores, in their original order."""
    vectors = torch.stack([flatten(u.delta) for u in updates])
    order = krum_scores(vectors, byzantine).argsort(stable=True)
    return sorted(order[: max(1, min(m, len(updates)))].tolist())


def average_selected(
    updates: Sequence[ValidatedUpdate], weights: Sequence[float], chosen: list[int]
) -> Aggregate:
    """The `chosen` updates averaged with their weights renormalised (uniformly if those
    sum to 0); the effective weights are 0 for the others."""
    total = sum(weights[i] for i in chosen)
    share = {i: (weights[i] / total if total > 0 else 1 / len(chosen)) for i in chosen}
    effective = [share.get(i, 0.0) for i in range(len(updates))]
    delta = weighted_sum([updates[i].delta for i in chosen], [share[i] for i in chosen])
    return Aggregate(delta=delta, weights=effective)


@register_aggregator("krum", options=KrumOptions, local_dp=True)
def krum(
    updates: Sequence[ValidatedUpdate], weights: Sequence[float], options: KrumOptions
) -> Aggregate:
    chosen = select(updates, options.byzantine, 1)
    return average_selected(updates, [1.0] * len(updates), chosen)
