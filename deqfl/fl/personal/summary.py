"""The round record's personalised accuracies, from what the round's clients reported.

`personal_summary(updates)`: over the clients whose reply was read this round (fused or
not: each evaluated its own personalised model), the mean and 10th percentile (numpy's
linear interpolation) of their `personal_accuracy` on their own test splits, and the mean
per device tier; None when no client reported one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from deqfl.fl.update import ClientUpdate

METRIC = "personal_accuracy"


def accuracy_summary(values: Sequence[float], tiers: Sequence[str]) -> dict[str, Any] | None:
    """{"mean", "p10", "clients", "tiers": {tier: mean}} of `values` (client i in tier
    `tiers[i]`); None for no values."""
    if not values:
        return None
    by_tier: dict[str, list[float]] = {}
    for value, tier in zip(values, tiers):
        by_tier.setdefault(tier, []).append(value)
    return {
        "mean": float(np.mean(values)),
        "p10": float(np.percentile(values, 10)),
        "clients": len(values),
        "tiers": {tier: float(np.mean(v)) for tier, v in sorted(by_tier.items())},
    }


def personal_summary(updates: Sequence[ClientUpdate]) -> dict[str, Any] | None:
    """The round's summary (module docstring)."""
    reported = [u for u in updates if METRIC in u.metrics]
    return accuracy_summary([u.metrics[METRIC] for u in reported], [u.tier for u in reported])
