"""`Fusion`: validate a round's updates, weigh them, aggregate them, step the model.

    d = aggregate({x_k - x}, {w_k}),   w_k = s_k / sum_j s_j,   x_new = optimizer(x, d)

with s_k the weighting's scores and the server optimiser `sgd` (x + server_lr * d) by
default. Contract of `Fusion.fuse`:

- never raises on anything a client sent; bad updates are rejected with a reason (see
  `deqfl.fl.validation`) and never touch the global model;
- accepted updates are fused in client-id order, so the result does not depend on the
  order in which replies arrived;
- floating-point tensors are fused in float64 and cast back to the global's dtype;
  non-floating tensors (integer buffers such as BatchNorm's `num_batches_tracked`) are
  taken unchanged from the global state;
- fewer than `min_updates` valid updates, or a fused model with non-finite values: the
  round is skipped, `state` holds the global state's own tensors, unchanged, and the
  server optimiser's state is unchanged too.

`Fusion.fuse_with` is that skeleton with the combine stage (weigh + aggregate) and the
validation limits as parameters; wrappers such as central DP
(`deqfl.fl.fusion.central_dp.CentralDPFusion`) reuse it with their own combine stage.
State between rounds is the server optimiser's: `state_dict()` / `load_state_dict()`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from deqfl.fl.fusion.base import Weights
from deqfl.fl.fusion.config import FusionConfig
from deqfl.fl.fusion.optimizer.base import ServerOptimizer
from deqfl.fl.fusion.registry import AGGREGATORS, OPTIMIZERS, WEIGHTINGS
from deqfl.fl.update import ClientUpdate, FusionContext
from deqfl.fl.validation import ValidatedUpdate, ValidationLimits, validate_updates

log = logging.getLogger(__name__)

STATE_PREFIX = "server_optimizer/"
"""Prefix of the server optimiser's entries in `Fusion.state_dict()`."""


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


@dataclass(frozen=True)
class Combined:
    """A combine stage's output for the accepted updates (in client-id order)."""

    delta: dict[str, torch.Tensor]
    """The fused delta, float64, one tensor per floating-point key of the global state."""
    weights: list[float]
    """Each accepted update's effective share."""
    quality: list[float]
    """Each accepted update's quality q_k (1.0 where there is none)."""


Combine = Callable[
    [Mapping[str, torch.Tensor], list[ValidatedUpdate], FusionContext, FusionResult], Combined
]
"""(global_state, accepted, ctx, result) -> Combined; may append to `result.adjusted`."""


def make_optimizer(config: FusionConfig) -> ServerOptimizer:
    """A fresh (stateless until its first step) server optimiser for `config`."""
    return OPTIMIZERS.get(config.server_optimizer)(config.optimizer_options())


class Fusion:
    """Server-side fusion built from a `FusionConfig` (see the module docstring).

    Holds the server optimiser, the only state kept between rounds.
    """

    def __init__(self, config: FusionConfig | None = None) -> None:
        self.config = config or FusionConfig()
        self.weighting = WEIGHTINGS.get(self.config.weighting)
        self.aggregator = AGGREGATORS.get(self.config.aggregator)
        self.weighting_options = self.config.weighting_params()
        self.aggregator_options = self.config.aggregator_params()
        self.optimizer = make_optimizer(self.config)

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
        limits = self.config.limits()
        return self.fuse_with(global_state, updates, ctx, limits, self.config.min_updates, self.combine)

    def combine(
        self,
        global_state: Mapping[str, torch.Tensor],
        accepted: list[ValidatedUpdate],
        ctx: FusionContext,
        result: FusionResult,
    ) -> Combined:
        """The configured weighting and aggregator (the default combine stage)."""
        weights = self.weighting([v.update for v in accepted], ctx, self.weighting_options)
        shares = _normalise(weights, len(accepted))
        aggregate = self.aggregator(accepted, shares, self.aggregator_options)
        effective = shares if aggregate.weights is None else list(aggregate.weights)
        return Combined(delta=aggregate.delta, weights=effective, quality=list(weights.quality))

    def fuse_with(
        self,
        global_state: Mapping[str, torch.Tensor],
        updates: Sequence[object],
        ctx: FusionContext,
        limits: ValidationLimits,
        min_updates: int,
        combine: Combine,
    ) -> FusionResult:
        """The skeleton of `fuse`: validate under `limits`, skip below `min_updates`,
        `combine`, step with the server optimiser, skip a non-finite model."""
        _check_global(global_state)
        outcome = validate_updates(global_state, updates, ctx, limits)
        for r in outcome.rejected:
            log.warning(
                "round %d: rejected update of client %s: %s", ctx.round, r["client"], r["reason"]
            )
        result = FusionResult(
            state=dict(global_state),
            accepted=[v.update.client_id for v in outcome.accepted],
            rejected=outcome.rejected,
            adjusted=list(outcome.adjusted),
            delta_norms={v.update.client_id: v.norm for v in outcome.accepted},
        )
        if len(outcome.accepted) < min_updates:
            return _skip(
                result,
                ctx,
                f"{len(outcome.accepted)} valid update(s), fewer than min_updates={min_updates}",
            )

        combined = combine(global_state, outcome.accepted, ctx, result)
        params = {k: v.detach().double() for k, v in global_state.items() if v.is_floating_point()}
        step = self.optimizer.propose(params, combined.delta)
        state = {
            key: step.params[key].to(value.dtype) if value.is_floating_point() else value.detach().clone()
            for key, value in global_state.items()
        }
        bad = next((k for k, v in state.items() if not _finite(v)), None)
        if bad is not None:
            return _skip(result, ctx, f"fused model has non-finite values in {bad!r}")

        self.optimizer.accept(step)
        result.state = state
        result.weights = dict(zip(result.accepted, (float(w) for w in combined.weights)))
        result.quality = dict(zip(result.accepted, (float(q) for q in combined.quality)))
        return result

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The state kept between rounds, flat: "server_optimizer/<entry>" -> tensor (a
        copy; float64 buffers, int64 counters; empty for the stateless `sgd`)."""
        return {STATE_PREFIX + k: v for k, v in self.optimizer.state_dict().items()}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Restore what `state_dict` returned (copied); ValueError naming a bad entry."""
        foreign = [k for k in state if not k.startswith(STATE_PREFIX)]
        if foreign:
            raise ValueError(
                f"fusion state: unknown entries {foreign}; every entry starts with {STATE_PREFIX!r}"
            )
        self.optimizer.load_state_dict({k[len(STATE_PREFIX) :]: v for k, v in state.items()})


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
