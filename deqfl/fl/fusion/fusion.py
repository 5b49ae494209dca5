"""`Fusion`: validate a round's updates, weigh them, aggregate them, step the model.

    x_new = x + server_lr * aggregate({x_k - x}, {w_k}),   w_k = s_k / sum_j s_j

with s_k the weighting's scores. Contract of `Fusion.fuse`:

- never raises on anything a client sent; bad updates are rejected with a reason (see
  `deqfl.fl.validation`) and never touch the global model;
- accepted updates are fused in client-id order, so the result does not depend on the
  order in which replies arrived;
- floating-point tensors are fused in float64 and cast back to the global's dtype;
  non-floating tensors (integer buffers such as BatchNorm's `num_batches_tracked`) are
  taken unchanged from the global state;
- fewer than `min_updates` valid updates, or a fused model with non-finite values: the
  round is skipped and `state` holds the global state's own tensors, unchanged.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from deqfl.fl.fusion.base import Weights
from deqfl.fl.fusion.config import FusionConfig
from deqfl.fl.fusion.registry import AGGREGATORS, WEIGHTINGS
from deqfl.fl.update import ClientUpdate, FusionContext
from deqfl.fl.validation import validate_updates

log = logging.getLogger(__name__)


@dataclass
class FusionResult:
    """The outcome of fusing one round."""

    state: dict[str, torch.Tensor]
    """The new global state (the old one's tensors when `skipped`)."""
    weights: dict[int, float] = field(default_factory=dict)
    """Client id -> effective share, summing to 1 over the accepted clients (empty when
    skipped). Rules that select a subset (Krum) give the others 0."""
    quality: dict[int, float] = field(default_factory=dict)
    """Client id -> quality q_k used by the weighting (1.0 if it has none)."""
    accepted: list[int] = field(default_factory=list)
    """Ids of the updates that passed validation, in client-id order."""
    rejected: list[dict[str, Any]] = field(default_factory=list)
    """{"client": id or None, "reason": str} per rejected update."""
    adjusted: list[dict[str, Any]] = field(default_factory=list)
    """{"client", "field", "reported", "used"} per client-reported number that was bounded."""
    delta_norms: dict[int, float] = field(default_factory=dict)
    """Client id -> L2 norm of its accepted update x_k - x."""
    skipped: bool = False
    """True when the global model was left unchanged."""
    skip_reason: str | None = None
    """Why the round was skipped."""


class Fusion:
    """Server-side fusion built from a `FusionConfig` (see the module docstring).

    Stateless between rounds: a checkpoint needs only its config.
    """

    def __init__(self, config: FusionConfig | None = None) -> None:
        self.config = config or FusionConfig()
        self.weighting = WEIGHTINGS.get(self.config.weighting)
        self.aggregator = AGGREGATORS.get(self.config.aggregator)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The rule's state between rounds, for checkpoints (stub: no state yet)."""
        return {}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Restore `state_dict()`'s output (stub: only the empty state is accepted)."""
        if state:
            raise ValueError(f"this fusion rule holds no state, got keys {sorted(state)}")

    def fuse(
        self,
        global_state: Mapping[str, torch.Tensor],
        updates: Sequence[ClientUpdate],
        ctx: FusionContext,
    ) -> FusionResult:
        """Validate `updates` against `global_state`, weigh, aggregate, step the model.

        Raises only for a malformed `global_state` (TypeError: the server's own bug) or
        a broken registered weighting (ValueError); never for anything in `updates`.
        """
        _check_global(global_state)
        outcome = validate_updates(global_state, updates, ctx, self.config.limits())
        for r in outcome.rejected:
            log.warning(
                "round %d: rejected update of client %s: %s", ctx.round, r["client"], r["reason"]
            )
        result = FusionResult(
            state=dict(global_state),
            accepted=[v.update.client_id for v in outcome.accepted],
            rejected=outcome.rejected,
            adjusted=outcome.adjusted,
            delta_norms={v.update.client_id: v.norm for v in outcome.accepted},
        )
        if len(outcome.accepted) < self.config.min_updates:
            return _skip(
                result,
                ctx,
                f"{len(outcome.accepted)} valid update(s), fewer than min_updates="
                f"{self.config.min_updates}",
            )

        clients = result.accepted
        bounded = [v.update for v in outcome.accepted]
        weights = self.weighting(bounded, ctx, self.config)
        shares = _normalise(weights, len(bounded))
        aggregate = self.aggregator(outcome.accepted, shares, self.config)
        effective = shares if aggregate.weights is None else list(aggregate.weights)

        state = {}
        for key, value in global_state.items():
            if value.is_floating_point():
                stepped = value.detach().double() + self.config.server_lr * aggregate.delta[key]
                state[key] = stepped.to(value.dtype)
            else:
                state[key] = value.detach().clone()
        bad = next((k for k, v in state.items() if not _finite(v)), None)
        if bad is not None:
            return _skip(result, ctx, f"fused model has non-finite values in {bad!r}")

        result.state = state
        result.weights = dict(zip(clients, (float(w) for w in effective)))
        result.quality = dict(zip(clients, (float(q) for q in weights.quality)))
        return result


def _check_global(global_state: Mapping[str, torch.Tensor]) -> None:
    """The global state is the server's own: a malformed one is a bug, so raise."""
    if not isinstance(global_state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in global_state.items()
    ):
        raise TypeError("global_state must be a dict of str -> torch.Tensor")


def _finite(value: torch.Tensor) -> bool:
    return not value.is_floating_point() or bool(torch.isfinite(value).all())


def _normalise(weights: Weights, count: int) -> list[float]:
    """scores / sum(scores); a weighting must return `count` finite scores >= 0, not all
    0, and `count` qualities (a broken weighting is a bug: ValueError)."""
    values = [float(s) for s in weights.scores]
    total = sum(values)
    valid = all(math.isfinite(s) and s >= 0 for s in values) and total > 0
    if not valid or len(values) != count or len(weights.quality) != count:
        raise ValueError(
            f"a weighting must return {count} finite scores >= 0, not all 0, and {count} "
            f"qualities; got scores {values}, quality {weights.quality}"
        )
    return [s / total for s in values]


def _skip(result: FusionResult, ctx: FusionContext, reason: str) -> FusionResult:
    log.warning("round %d: skipped, global model unchanged: %s", ctx.round, reason)
    result.skipped = True
    result.skip_reason = reason
    return result
