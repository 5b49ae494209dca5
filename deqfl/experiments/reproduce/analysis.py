"""Arithmetic of the report: rounds and MB to a target accuracy, mean and std over seeds,
and whether two methods differ by more than their spread.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


def rounds_to_target(rounds: list[dict[str, Any]], target: float) -> int | None:
    """The first round whose test accuracy is at least `target`; None if never reached."""
    for row in rounds:
        if row["accuracy"] >= target:
            return int(row["round"])
    return None


def mb_to_target(rounds: list[dict[str, Any]], target: float) -> float | None:
    """Megabytes (up + down, 1 MB = 1e6 bytes) communicated up to and including the first
    round that reaches `target`; None if never reached."""
    total = 0.0
    for row in rounds:
        total += (row["bytes_up"] + row["bytes_down"]) / 1e6
        if row["accuracy"] >= target:
            return total
    return None


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation (n - 1) over seeds; `n` values, `missing` runs
    that gave no value (e.g. never reached the target)."""

    mean: float | None
    std: float | None
    n: int
    missing: int = 0

    def format(self, scale: float = 1.0, digits: int = 2) -> str:
        if self.mean is None:
            return "n/a" if not self.missing else f"not reached ({self.missing})"
        text = f"{self.mean * scale:.{digits}f}"
        if self.n > 1:
            text += f" ± {self.std * scale:.{digits}f}"
        if self.missing:
            text += f" ({self.missing} not reached)"
        return text


def stat(values: list[float | None]) -> Stat:
    present = [float(v) for v in values if v is not None]
    missing = len(values) - len(present)
    if not present:
        return Stat(None, None, 0, missing)
    mean = sum(present) / len(present)
    std = math.sqrt(sum((v - mean) ** 2 for v in present) / (len(present) - 1)) if len(present) > 1 else 0.0
    return Stat(mean, std, len(present), missing)


def within_spread(a: Stat, b: Stat) -> bool:
    """True when the two means differ by no more than the sum of their standard deviations
    (or either rests on a single seed, where no spread is known): do not rank them."""
    if a.mean is None or b.mean is None:
        return False
    if a.n < 2 or b.n < 2:
        return True
    return abs(a.mean - b.mean) <= a.std + b.std
