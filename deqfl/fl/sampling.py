"""Which clients take part in a round: chosen by deqfl, seeded by (seed, round).

1. Eligible clients: all, or under `drop-weak` only those whose tier's forward cap is at
   least `min_cap` (the baseline that excludes weak devices); never those in `exclude`
   (clients held out of training).
2. Sample max(min_clients, round(fraction * eligible)) of them without replacement.
3. Each sampled client answers with its tier's `availability` probability.
The result is sorted by client id: replies are fused in client order, not arrival order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deqfl.errors import ConfigError
from deqfl.fl.profiles import TierConfig


@dataclass(frozen=True)
class RoundSample:
    selected: list[int]
    unavailable: list[int]


def eligible_clients(tiers: list[TierConfig], rule: str, min_cap: int) -> list[int]:
    """The clients a round may sample: all, or under `drop-weak` those whose tier's forward
    cap is at least `min_cap`."""
    if rule == "drop-weak":
        return [cid for cid, t in enumerate(tiers) if t.forward_cap >= min_cap]
    return list(range(len(tiers)))


def sample_round(
    tiers: list[TierConfig],
    seed: int,
    round_number: int,
    fraction: float,
    min_clients: int,
    rule: str = "uniform",
    min_cap: int = 1,
    exclude: tuple[int, ...] = (),
) -> RoundSample:
    eligible = eligible_clients(tiers, rule, min_cap)
    if exclude:
        eligible = [c for c in eligible if c not in set(exclude)]
    if not eligible:
        raise ConfigError(
            f"sampling: rule '{rule}' with min_cap={min_cap} leaves no eligible client; "
            "lower sampling.min_forward_cap or use rule='uniform'"
        )
    rng = np.random.default_rng([seed, round_number, 0x5A3])
    count = min(len(eligible), max(min_clients, round(fraction * len(eligible))))
    chosen = sorted(int(c) for c in rng.choice(eligible, size=count, replace=False))
    answers = rng.random(len(chosen))
    selected = [c for c, a in zip(chosen, answers) if a < tiers[c].availability]
    unavailable = [c for c, a in zip(chosen, answers) if a >= tiers[c].availability]
    return RoundSample(selected=selected, unavailable=unavailable)
