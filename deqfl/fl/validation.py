"""Server-side validation of client updates, run before any fusion.

Contract: `validate_updates` never raises on anything a client sent (wrong types, missing
keys, non-tensor values, empty dicts, NaN, lies); it rejects the update instead, with a
short reason. Checks, in order:

1. the reported fields have the right types and ranges (`check_fields`);
2. the state has exactly the global state's keys, and every value is a dense tensor on
   the global's device with its dtype and shape, all values finite (`check_state`);
3. the delta x_k - x has a finite L2 norm (float64, over the global's floating keys);
4. client ids are unique in the round (every update sharing an id is rejected, so the
   outcome does not depend on arrival order);
5. the adaptive norm bound: reject an update whose delta norm exceeds
   `max_norm_factor` x the median delta norm of the updates that passed 1-4
   (`norm_outliers`). It needs three or more updates to bite: with two and a factor >= 2
   a huge update raises the median with it. If the median norm is 0 (most clients sent
   the global model back), any update that moved is rejected.

Numbers that steer fusion weights are then bounded, never trusted (`bound_numbers`):
`num_examples` into [1, known partition size (else MAX_EXAMPLES)], `residual` into
[residual_floor, residual_cap], `forward_cap` at most the reference cap. Every change is
reported as {"client", "field", "reported", "used"}.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from deqfl.fl.update import ClientUpdate, FusionContext


MAX_EXAMPLES = 2**53
"""Hard upper bound on a reported example count (exact as a float), for clients whose
partition size the server does not know."""


@dataclass(frozen=True)
class ValidationLimits:
    """Bounds applied to client-reported numbers; `Fusion` builds them from its config."""

    residual_floor: float = 1e-6
    """Reported residuals below this are raised to it (keeps the median positive)."""
    residual_cap: float = 10.0
    """Reported residuals above this, or infinite, are lowered to it."""
    max_norm_factor: float | None = 10.0
    """Adaptive norm bound (see the module docstring); None disables it."""


@dataclass
class ValidatedUpdate:
    """An accepted update: its bounded numbers, and its delta from the global model."""

    update: ClientUpdate
    """A copy of the client's update with bounded, type-normalised numbers."""
    delta: dict[str, torch.Tensor]
    """x_k - x in float64, for every floating-point key of the global state."""
    norm: float
    """L2 norm of `delta` over all keys."""


@dataclass
class ValidationOutcome:
    accepted: list[ValidatedUpdate] = field(default_factory=list)
    """Accepted updates, sorted by client id."""
    rejected: list[dict[str, Any]] = field(default_factory=list)
    """One {"client": id or None, "reason": str} per rejected update: failed checks in
    the order given, then duplicate ids, then norm outliers by client id."""
    adjusted: list[dict[str, Any]] = field(default_factory=list)
    """One {"client", "field", "reported", "used"} per bounded number."""


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _type_name(value: object) -> str:
    return type(value).__name__


def _names(keys: set[Any]) -> str:
    shown = sorted(repr(k) for k in keys)
    more = f" (+{len(shown) - 3} more)" if len(shown) > 3 else ""
    return ", ".join(shown[:3]) + more


def check_fields(update: object) -> str | None:
    """Reason why the reported fields of `update` are unusable, or None if they are fine."""
    if not isinstance(update, ClientUpdate):
        return f"not a ClientUpdate (got {_type_name(update)})"
    if not _is_int(update.client_id):
        return f"client_id must be an int, got {_type_name(update.client_id)}"
    if not isinstance(update.tier, str):
        return f"tier must be a str, got {_type_name(update.tier)}"
    if not _is_int(update.num_examples):
        return f"num_examples must be an int, got {_type_name(update.num_examples)}"
    if not _is_int(update.local_steps) or update.local_steps < 1:
        return f"local_steps must be an int >= 1, got {update.local_steps!r}"
    if not _is_int(update.forward_cap) or update.forward_cap < 0:
        return f"forward_cap must be an int >= 0, got {update.forward_cap!r}"
    if update.residual is not None and not (_is_real(update.residual) and update.residual >= 0):
        return f"residual must be a number >= 0 or None, got {update.residual!r}"
    loss = update.holdout_loss
    if loss is not None and not (_is_real(loss) and math.isfinite(loss) and loss >= 0):
        return f"holdout_loss must be a finite number >= 0 or None, got {loss!r}"
    if not (_is_real(update.momentum) and 0 <= update.momentum < 1):
        return f"momentum must be a number in [0, 1), got {update.momentum!r}"
    if not isinstance(update.metrics, dict):
        return f"metrics must be a dict, got {_type_name(update.metrics)}"
    return None


def check_state(global_state: Mapping[str, torch.Tensor], state: object) -> str | None:
    """Reason why `state` cannot stand in for `global_state`, or None if it can."""
    if not isinstance(state, Mapping):
        return f"state is not a dict (got {_type_name(state)})"
    missing = set(global_state) - set(state)
    if missing:
        return f"missing keys: {_names(missing)}"
    extra = set(state) - set(global_state)
    if extra:
        return f"unexpected keys: {_names(extra)}"
    for key, expected in global_state.items():
        value = state[key]
        if not isinstance(value, torch.Tensor):
            return f"{key!r} is not a tensor (got {_type_name(value)})"
        if value.layout != torch.strided or value.device != expected.device:
            return f"{key!r} must be a dense tensor on {expected.device}"
        if value.dtype != expected.dtype:
            return f"dtype mismatch for {key!r}: got {value.dtype}, expected {expected.dtype}"
        if value.shape != expected.shape:
            return (
                f"shape mismatch for {key!r}: got {tuple(value.shape)}, "
                f"expected {tuple(expected.shape)}"
            )
        if (value.is_floating_point() or value.is_complex()) and not bool(
            torch.isfinite(value).all()
        ):
            return f"non-finite values in {key!r}"
    return None


def float_delta(
    global_state: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """x_k - x in float64 over the global's floating-point keys (others are not fused)."""
    return {
        key: state[key].detach().double() - g.detach().double()
        for key, g in global_state.items()
        if g.is_floating_point()
    }


def delta_norm(delta: Mapping[str, torch.Tensor]) -> float:
    """L2 norm of a delta over all its tensors."""
    return math.sqrt(sum(float(d.pow(2).sum()) for d in delta.values()))


def norm_outliers(norms: Mapping[int, float], factor: float | None) -> dict[int, str]:
    """Clients whose norm exceeds `factor` x the median of `norms`, with the reason."""
    if factor is None or not norms:
        return {}
    median = statistics.median(norms.values())
    bound = factor * median
    return {
        client: f"update norm {norm:.4g} exceeds {factor:g} x the round's median norm {median:.4g}"
        for client, norm in norms.items()
        if norm > bound
    }


def bound_numbers(
    update: ClientUpdate, ctx: FusionContext, limits: ValidationLimits
) -> tuple[ClientUpdate, list[dict[str, Any]]]:
    """A copy of `update` with the numbers that steer weights bounded; the changes made.

    Requires `check_fields(update) is None`.
    """
    client = int(update.client_id)
    adjusted: list[dict[str, Any]] = []

    def bound(name: str, reported: Any, used: Any) -> Any:
        if used != reported:
            adjusted.append({"client": client, "field": name, "reported": reported, "used": used})
        return used

    reported_n = int(update.num_examples)
    n = min(max(1, reported_n), MAX_EXAMPLES)
    known = ctx.known_num_examples.get(client)
    if known is not None:
        n = min(n, max(1, int(known)))
    reported_r = None if update.residual is None else float(update.residual)
    r = reported_r
    if r is not None:
        r = min(max(r, limits.residual_floor), limits.residual_cap)
    reported_cap = int(update.forward_cap)
    cap = min(reported_cap, ctx.reference_cap) if ctx.reference_cap > 0 else reported_cap
    bounded = dataclasses.replace(
        update,
        client_id=client,
        num_examples=bound("num_examples", reported_n, n),
        residual=bound("residual", reported_r, r),
        forward_cap=bound("forward_cap", reported_cap, cap),
        local_steps=int(update.local_steps),
        holdout_loss=None if update.holdout_loss is None else float(update.holdout_loss),
        momentum=float(update.momentum),
    )
    return bounded, adjusted


def _candidate(
    global_state: Mapping[str, torch.Tensor], update: ClientUpdate
) -> tuple[str | None, ValidatedUpdate | None]:
    reason = check_state(global_state, update.state)
    if reason is not None:
        return reason, None
    delta = float_delta(global_state, update.state)
    norm = delta_norm(delta)
    if not math.isfinite(norm):
        return "update norm is not finite (values too large)", None
    return None, ValidatedUpdate(update=update, delta=delta, norm=norm)


def _check_one(
    global_state: Mapping[str, torch.Tensor], update: object
) -> tuple[str | None, ValidatedUpdate | None]:
    """(reason, None) for a rejected update, (None, candidate) for a structurally valid one."""
    try:
        reason = check_fields(update)
        if reason is not None or not isinstance(update, ClientUpdate):
            return reason, None
        return _candidate(global_state, update)
    except Exception as exc:  # a hostile object can fail in ways no check foresees
        return f"could not validate update ({_type_name(exc)}: {str(exc)[:200]})", None


def _client_of(update: object) -> int | None:
    """The update's client id if it is a usable int, else None (never raises)."""
    try:
        client = getattr(update, "client_id", None)
        return int(client) if _is_int(client) else None
    except Exception:
        return None


def validate_updates(
    global_state: Mapping[str, torch.Tensor],
    updates: Sequence[object],
    ctx: FusionContext,
    limits: ValidationLimits,
) -> ValidationOutcome:
    """Check every update against `global_state`; accept, bound or reject each one."""
    outcome = ValidationOutcome()
    candidates: list[ValidatedUpdate] = []
    for update in updates:
        reason, candidate = _check_one(global_state, update)
        if candidate is None:
            outcome.rejected.append({"client": _client_of(update), "reason": reason})
        else:
            candidates.append(candidate)

    counts = Counter(c.update.client_id for c in candidates)
    duplicated = [c for c in candidates if counts[c.update.client_id] > 1]
    for c in duplicated:
        client = int(c.update.client_id)
        outcome.rejected.append({"client": client, "reason": f"duplicate client id {client}"})
    candidates = [c for c in candidates if counts[c.update.client_id] == 1]

    outliers = norm_outliers(
        {c.update.client_id: c.norm for c in candidates}, limits.max_norm_factor
    )
    for candidate in sorted(candidates, key=lambda c: c.update.client_id):
        client = candidate.update.client_id
        if client in outliers:
            outcome.rejected.append({"client": int(client), "reason": outliers[client]})
            continue
        bounded, adjusted = bound_numbers(candidate.update, ctx, limits)
        outcome.adjusted.extend(adjusted)
        outcome.accepted.append(dataclasses.replace(candidate, update=bounded))
    return outcome
