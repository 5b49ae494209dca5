"""The two pluggable parts of fusion, and what each returns.

A *weighting* turns the round's accepted updates into one non-negative score per update;
`Fusion` normalises the scores into weights w_k = s_k / sum_j s_j. An *aggregator* turns
the accepted updates' deltas (x_k - x, float64) and those weights into one delta; the new
global model is x + server_lr * delta.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import torch

from deqfl.fl.update import ClientUpdate, FusionContext
from deqfl.fl.validation import ValidatedUpdate

if TYPE_CHECKING:
    from deqfl.fl.fusion.config import FusionConfig


@dataclass(frozen=True)
class Weights:
    """A weighting's output, one entry per update, in the order received."""

    scores: list[float]
    """Unnormalised, finite, >= 0, not all zero."""
    quality: list[float]
    """The quality q_k used (1.0 where the weighting has no notion of quality)."""


@dataclass(frozen=True)
class Aggregate:
    """An aggregator's output."""

    delta: dict[str, torch.Tensor]
    """The fused update direction, float64, one tensor per key of the deltas."""
    weights: list[float] | None = None
    """Each update's effective share when the rule changes it (e.g. Krum selects a
    subset); None when the weights given were used as they are."""


class Weighting(Protocol):
    def __call__(
        self, updates: Sequence[ClientUpdate], ctx: FusionContext, config: FusionConfig
    ) -> Weights: ...


class Aggregator(Protocol):
    def __call__(
        self, updates: Sequence[ValidatedUpdate], weights: Sequence[float], config: FusionConfig
    ) -> Aggregate: ...
