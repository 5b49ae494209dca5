"""`krum` and `multi-krum` (Blanchard et al., NeurIPS 2017).

With K updates and f assumed attackers (`krum_byzantine`), each update's score is the
sum of squared L2 distances from its delta to its n = K - f - 2 nearest other deltas
(n is clamped into [1, K - 1]; the guarantee needs K >= 2f + 3). `krum` keeps the single
lowest-scoring update; `multi-krum` keeps the m lowest (`krum_select`, default K - f,
clamped into [1, K]) and averages them with their weights renormalised (uniformly if
those sum to 0). Selection ignores the weights; ties go to the lower client id. The
effective weights (0 for updates not selected) are returned for reporting.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from deqfl.fl.fusion.aggregator.ops import flatten, weighted_sum
from deqfl.fl.fusion.base import Aggregate
from deqfl.fl.fusion.config import FusionConfig
from deqfl.fl.fusion.registry import register_aggregator
from deqfl.fl.validation import ValidatedUpdate


def krum_scores(vectors: torch.Tensor, byzantine: int) -> torch.Tensor:
    """Krum score of each row of `vectors` (K, P)."""
    k = vectors.shape[0]
    if k == 1:
        return torch.zeros(1, dtype=torch.float64, device=vectors.device)
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


def _average_selected(
    updates: Sequence[ValidatedUpdate], weights: Sequence[float], chosen: list[int]
) -> Aggregate:
    total = sum(weights[i] for i in chosen)
    share = {i: (weights[i] / total if total > 0 else 1 / len(chosen)) for i in chosen}
    effective = [share.get(i, 0.0) for i in range(len(updates))]
    delta = weighted_sum([updates[i].delta for i in chosen], [share[i] for i in chosen])
    return Aggregate(delta=delta, weights=effective)


@register_aggregator("krum", local_dp=True)
def krum(
    updates: Sequence[ValidatedUpdate], weights: Sequence[float], config: FusionConfig
) -> Aggregate:
    chosen = select(updates, config.krum_byzantine, 1)
    return _average_selected(updates, [1.0] * len(updates), chosen)


@register_aggregator("multi-krum", local_dp=True)
def multi_krum(
    updates: Sequence[ValidatedUpdate], weights: Sequence[float], config: FusionConfig
) -> Aggregate:
    m = config.krum_select or len(updates) - config.krum_byzantine
    return _average_selected(updates, weights, select(updates, config.krum_byzantine, m))
