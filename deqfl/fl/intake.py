"""The round's intake: match replies to jobs, decode within bounds, read, time, apply deadlines.

For each job, in client-id order (`match_replies`), the reply becomes a `ClientUpdate`
whose steering numbers are the server's (`read_update`):

- the upload is refused unless it is at most `upload_limit` of the global state and the
  plan's extras bytes, before it is decoded;
- the upload's extras (`deqfl.fl.transport.split_extras`) must have the names, shapes and
  dtypes of the extras the plan broadcast, with finite values (SCAFFOLD's control-variate
  increments); none are allowed when none were broadcast;
- `num_examples` is the client's partition size, `local_steps` and `forward_cap` are
  what the plan assigned, `momentum` is the run's client momentum; a report that differs
  is listed under `adjusted` as {"client", "field", "reported", "used"};
- the reported residual, held-back loss and metrics are read through `FieldReader`.

The client's simulated time (`deqfl.fl.clock.device_seconds` of its reported work units,
download and upload, times a straggler's slowdown) decides deadlines; a width-sliced
client's state is written back into the global shape with the server's `coverage`. Under
personalisation an upload holds only the entries that travel (`local`: the ones that stay on
the client); it is completed with the global values of the others (`embed_partial`), so
their delta is zero and fusion leaves them as they are.
A reply's client state (`ClientReply.client_state`: the client's own, never uploaded) is
kept for the store (`Intake.client_states`) when it is well-formed (at most `state_limit`
bytes plus `state_per_sample` per training row of the client (the warm-start cache's
`RoundSettings.client_state_per_sample`), checked before decoding, decoding to tensors
with finite values), whether or not the update is then used:
the client keeps its state whatever the server does with its upload. A malformed one is a
rejection and is not kept.
Only declared client failures (`deqfl.errors.ClientFailure`: errors the engine reported,
unreadable or oversized uploads, malformed fields) become rejections; anything else raises.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from deqfl.fl.clock import device_seconds
from deqfl.fl.faults import FaultsConfig, slowdown
from deqfl.fl.plan import ClientJob, RoundPlan
from deqfl.fl.record import ClientRecord
from deqfl.fl.reply import ClientReply, FieldReader, ReplyError, truncate
from deqfl.fl.transport import EXTRA_MARK, PayloadError, decode_state, split_extras
from deqfl.fl.update import ClientUpdate
from deqfl.fl.validation import check_state
from deqfl.models.width import embed_state

log = logging.getLogger(__name__)

UPLOAD_SLACK = 1 << 16
"""Bytes allowed beyond eight bytes per model value, for the encoding's header."""

MAX_COUNT = 2**62
"""Largest step count or cap read from a reply (a larger one is malformed)."""


def upload_limit(global_state: Mapping[str, torch.Tensor]) -> int:
    """The largest upload the server decodes: eight bytes per value of the global state
    (float64, the widest dtype) plus `UPLOAD_SLACK` for the header."""
    return 8 * sum(v.numel() for v in global_state.values()) + UPLOAD_SLACK


def state_limit(global_state: Mapping[str, torch.Tensor]) -> int:
    """The largest client state the server decodes: four times `upload_limit` (four
    float64 copies of the model; SCAFFOLD's state is one copy)."""
    return 4 * upload_limit(global_state)


@dataclass
class Intake:
    """The round's usable updates and what was said about the rest."""

    updates: list[ClientUpdate] = field(default_factory=list)
    """Updates for fusion, in client-id order, with the server's numbers."""
    rows: dict[int, ClientRecord] = field(default_factory=dict)
    """Client id -> its record row (weights filled in after fusion)."""
    rejected: list[dict[str, Any]] = field(default_factory=list)
    adjusted: list[dict[str, Any]] = field(default_factory=list)
    simulated: list[float] = field(default_factory=list)
    """Simulated seconds of every client that counts for the round's duration."""
    bytes_up: int = 0
    """Bytes of every upload that arrived."""
    client_states: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)
    """Client id -> its well-formed client state after the round, for the store."""


def take_in(
    plan: RoundPlan,
    replies: object,
    global_state: Mapping[str, torch.Tensor],
    momentum: float,
    deq_model: bool,
    deadline: float | None,
    faults: FaultsConfig | None,
    state_per_sample: int = 0,
    local: tuple[str, ...] = (),
) -> Intake:
    intake = Intake()
    limit = upload_limit({**global_state, **plan.extras})
    travelling = {k: v for k, v in global_state.items() if k not in set(local)}
    max_state = state_limit(global_state)
    pairs = match_replies(plan.jobs, replies, intake, plan.round)
    for job, reply in pairs:
        cid, width = job.client_id, job.task.tier.width
        try:
            kept = read_client_state(reply.client_state, max_state + state_per_sample * len(job.data.train_indices))
            if kept is not None:
                intake.client_states[cid] = kept
            update, bytes_up = read_update(
                job, reply, travelling, limit, momentum, deq_model, intake.adjusted, plan.extras
            )
            if local:
                update = embed_partial(update, global_state, travelling)
            if width < 1:
                update = embed_sliced(update, global_state, plan.sub_globals[width])
        except ReplyError as exc:
            _reject(intake, plan.round, cid, str(exc))
            continue
        seconds = device_seconds(
            job.task.tier, update.metrics.get("work_units", 0.0), plan.download_bytes[width], bytes_up
        ) * slowdown(faults, cid)
        if deadline is not None and seconds > deadline:
            _reject(intake, plan.round, cid, f"straggler: {seconds:.3g} simulated s > deadline {deadline:g} s", "dropped")
            intake.simulated.append(deadline)
            continue
        intake.simulated.append(seconds)
        intake.updates.append(update)
        intake.rows[cid] = _row(update, bytes_up, seconds)
    return intake


def read_update(
    job: ClientJob,
    reply: ClientReply,
    reference: Mapping[str, torch.Tensor],
    limit: int,
    momentum: float,
    deq_model: bool,
    adjusted: list[dict[str, Any]],
    extras_like: Mapping[str, torch.Tensor] | None = None,
) -> tuple[ClientUpdate, int]:
    """The reply as an update with the server's numbers, and its upload's length;
    ReplyError for anything unusable. Mismatched reports are appended to `adjusted`.
    The upload's extras must match `extras_like` (none when it is empty or None)."""
    cid = job.client_id
    if reply.error is not None:
        raise ReplyError(f"client failed: {truncate(reply.error)}")
    state, extras = decode_upload(reply.payload, reference, limit, extras_like or {})
    fields = FieldReader(reply.fields)
    claimed = fields.integer("client_id", 0, MAX_COUNT)
    if claimed != cid:
        raise ReplyError(f"malformed reply: it claims to be client {claimed}")
    metrics = fields.metrics()
    if metrics.get("work_units", 0.0) < 0:
        raise ReplyError(f"malformed reply: work_units must be >= 0, got {metrics['work_units']!r}")
    assigned = {
        "tier": job.task.tier.name,
        "num_examples": len(job.data.train_indices),
        "local_steps": job.assigned_steps,
        "forward_cap": job.task.forward_cap if deq_model else 0,
        "momentum": momentum,
    }
    reported = {
        "tier": fields.text("tier"),
        "num_examples": fields.integer("num_examples", 0, MAX_COUNT),
        "local_steps": fields.integer("local_steps", 1, MAX_COUNT),
        "forward_cap": fields.integer("forward_cap", 0, MAX_COUNT),
        "momentum": fields.real("momentum", 0.0, math.nextafter(1.0, 0.0)),
    }
    for name, used in assigned.items():
        if reported[name] != used:
            adjusted.append({"client": cid, "field": name, "reported": reported[name], "used": used})
    update = ClientUpdate(
        client_id=cid,
        state=state,
        residual=fields.real("residual", 0.0, math.inf, optional=True),
        holdout_loss=fields.real("holdout_loss", 0.0, 1e300, optional=True),
        metrics=metrics,
        extras=extras,
        **assigned,
    )
    return update, len(reply.payload)


def decode_upload(
    payload: object, reference: Mapping[str, torch.Tensor], limit: int, extras_like: Mapping[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The upload as (state, extras), floating tensors in the reference's dtypes; ReplyError
    if it is not bytes, longer than `limit` (checked before decoding), unreadable, or its
    extras do not match `extras_like` (names, shapes, dtypes, finite values)."""
    if not isinstance(payload, (bytes, bytearray)):
        raise ReplyError(f"malformed reply: no upload (got {type(payload).__name__})")
    if len(payload) > limit:
        raise ReplyError(f"upload of {len(payload)} bytes exceeds the bound of {limit} bytes for this model")
    like = {**reference, **{EXTRA_MARK + k: v for k, v in extras_like.items()}}
    try:
        state, extras = split_extras(decode_state(bytes(payload), like=like))
    except Exception as exc:  # noqa: BLE001 - an undecodable upload is a declared client failure
        raise ReplyError(f"malformed reply: the upload is not a readable state ({type(exc).__name__}: {truncate(exc, 200)})") from None
    reason = check_state(extras_like, extras)
    if reason is not None:
        raise ReplyError(f"malformed reply: its extras do not match what the server sent: {reason}")
    return state, extras


def read_client_state(value: object, limit: int) -> dict[str, torch.Tensor] | None:
    """A reply's client state decoded (None stays None); ReplyError unless it is at most
    `limit` bytes of `deqfl.fl.transport.pack_tensors` with finite floating values."""
    if value is None:
        return None
    if not isinstance(value, (bytes, bytearray)):
        raise ReplyError(f"malformed client state: not bytes (got {type(value).__name__})")
    if len(value) > limit:
        raise ReplyError(f"malformed client state: {len(value)} bytes exceed the bound of {limit} bytes")
    try:
        state = decode_state(bytes(value))
    except PayloadError as exc:
        raise ReplyError(f"malformed client state: {truncate(exc, 200)}") from None
    bad = next((k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())), None)
    if bad is not None:
        raise ReplyError(f"malformed client state: non-finite values in {truncate(bad, 80)!r}")
    return state


def embed_sliced(
    update: ClientUpdate, global_state: Mapping[str, torch.Tensor], sub_global: Mapping[str, torch.Tensor]
) -> ClientUpdate:
    """A width-sliced update in the global shape, its `coverage` the shapes of the tier's
    slice of the global state `sub_global` (the server's, not the client's). ReplyError
    unless the returned state passes `check_state` against `sub_global` (keys, shapes,
    dtypes, finite values)."""
    reason = check_state(sub_global, update.state)
    if reason is not None:
        raise ReplyError(f"malformed reply: not the tier's sub-model: {reason}")
    coverage = {key: tuple(value.shape) for key, value in sub_global.items()}
    return replace(update, state=embed_state(update.state, global_state), coverage=coverage)


def embed_partial(
    update: ClientUpdate, global_state: Mapping[str, torch.Tensor], travelling: Mapping[str, torch.Tensor]
) -> ClientUpdate:
    """A partial upload (the entries that travel) completed with the global values of the
    rest; ReplyError unless it passes `check_state` against `travelling`."""
    reason = check_state(travelling, update.state)
    if reason is not None:
        raise ReplyError(f"malformed reply: not the model's travelling part: {reason}")
    return replace(update, state={k: update.state.get(k, v) for k, v in global_state.items()})


def match_replies(
    jobs: Sequence[ClientJob], replies: object, intake: Intake, round_number: int
) -> list[tuple[ClientJob, ClientReply]]:
    """Pair each job with its client's reply, in client-id order. A job without a reply,
    a reply from a client that was not sampled and every reply of a client that answered
    twice are listed under `rejected` (an engine's fault, not a reason to stop). Every
    upload that arrived counts towards `bytes_up`."""
    by_client: dict[int, list[ClientReply]] = {}
    for reply in replies if isinstance(replies, (list, tuple)) else []:
        cid = getattr(reply, "client_id", None)
        if isinstance(reply, ClientReply) and isinstance(cid, int) and not isinstance(cid, bool):
            by_client.setdefault(cid, []).append(reply)
            if isinstance(reply.payload, (bytes, bytearray)):
                intake.bytes_up += len(reply.payload)
        else:
            intake.rejected.append({"client": None, "reason": f"malformed reply ({type(reply).__name__})"})
    sampled = {job.client_id for job in jobs}
    for cid in sorted(set(by_client) - sampled):
        intake.rejected.append({"client": cid, "reason": "reply from a client that was not sampled"})
    pairs = []
    for job in sorted(jobs, key=lambda j: j.client_id):
        got = by_client.get(job.client_id, [])
        if len(got) == 1:
            pairs.append((job, got[0]))
        else:
            _reject(intake, round_number, job.client_id, "no reply" if not got else f"{len(got)} replies for one task")
    return pairs


def _reject(intake: Intake, round_number: int, cid: int, reason: str, verb: str = "rejected") -> None:
    log.warning("round %d: client %d %s: %s", round_number, cid, verb, reason)
    intake.rejected.append({"client": cid, "reason": truncate(reason)})


def _row(update: ClientUpdate, bytes_up: int, seconds: float) -> ClientRecord:
    metrics = update.metrics
    return ClientRecord(
        id=update.client_id,
        tier=update.tier,
        num_examples=update.num_examples,
        local_steps=update.local_steps,
        forward_cap=update.forward_cap,
        iterations=metrics.get("iterations"),
        residual=update.residual,
        train_loss=metrics.get("train_loss"),
        holdout_loss=update.holdout_loss,
        holdout_accuracy=metrics.get("holdout_accuracy"),
        bytes_up=bytes_up,
        simulated_seconds=seconds,
        compute_seconds=metrics.get("compute_seconds"),
    )
