"""The two pluggable parts of fusion, what each returns, and their typed parameters.

A *weighting* turns the round's accepted updates into one non-negative score per update;
`Fusion` normalises the scores into weights w_k = s_k / sum_j s_j. An *aggregator* turns
the accepted updates' deltas (x_k - x, float64) and those weights into one delta, which the
server optimiser applies. Each receives its own typed options (a `RuleOptions` subclass
declared in its file, filled from `fusion.weighting_options` / `fusion.aggregator_options`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol

import torch
from pydantic import BaseModel, ConfigDict

from deqfl.fl.update import ClientUpdate, FusionContext
from deqfl.fl.validation import ValidatedUpdate


class RuleOptions(BaseModel):
    """Base of every fusion rule's typed parameters (unknown keys are errors); a rule
    registered without options gets an instance of this model, which has no fields."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    legacy_keys: ClassVar[dict[str, str]] = {}
    """Flat `fusion.<key>` from before rules had options -> the option it sets; still
    accepted (`deqfl.fl.fusion.options`)."""


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
    """(accepted updates, context, this weighting's options) -> one score per update."""

    def __call__(
        self, updates: Sequence[ClientUpdate], ctx: FusionContext, options: RuleOptions
    ) -> Weights: ...


class Aggregator(Protocol):
    """(accepted updates, normalised weights, this aggregator's options) -> fused delta."""

    def __call__(
        self, updates: Sequence[ValidatedUpdate], weights: Sequence[float], options: RuleOptions
    ) -> Aggregate: ...
