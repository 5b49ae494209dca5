"""One federated round, engine-agnostic: sample, dispatch, time, validate and fuse.

The engine only moves payloads and runs `deqfl.fl.client.train_client`; every decision is
made here, so every engine gives the same round for the same config and seed:

1. `sample_round` picks the clients (seeded by seed and round), sorted by id.
2. The global state is serialized once (`bytes_down` = its length x receiving clients;
   a width-sliced client's download is counted as its sub-model's serialized slices).
3. Each client's forward cap is its tier's `max_iter`, or, with a `time_budget`, the
   largest cap whose simulated time fits (`deqfl.fl.clock.cap_for_time_budget`).
4. Replies are timed on the simulated clock; past `deadline_seconds` a client is a
   straggler and its update is dropped. Crashed clients and stragglers are listed under
   `rejected` with the reason, as are updates that fail validation in the fusion.
5. The fusion (`deqfl.fl.fusion`) validates and fuses the remaining updates in client order.
   A width-sliced client's reply (HeteroFL baseline) must have exactly its tier's
   sub-model shapes; it is written back into the global shape with its `coverage` first.

Reliability (`deqfl.fl.attacks`, `deqfl.fl.faults`, `deqfl.fl.privacy`): a malicious
client's task carries its attack, a crashing client's task its crash point; stragglers are
slowed on the simulated clock. Under central DP, clients are Poisson-sampled and the
round is fused by `deqfl.fl.privacy.central_fuse`; `epsilon` is reported every round.
A reply the server cannot use (missing, duplicated, from a client not sampled, with
malformed fields) is listed under `rejected`, never raised.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import torch

from deqfl.fl import privacy as dp
from deqfl.fl.attacks import AttackConfig
from deqfl.fl.client import ClientData, ClientTask, TrainOptions, local_step_count
from deqfl.fl.clock import cap_for_time_budget, device_seconds
from deqfl.fl.faults import FaultsConfig, crash_at, slowdown
from deqfl.fl.fusion import Fusion, FusionContext
from deqfl.fl.profiles import TierConfig
from deqfl.fl.sampling import sample_round
from deqfl.fl.transport import encode_state
from deqfl.fl.update import ClientUpdate
from deqfl.fl.validation import check_state
from deqfl.models.width import Shapes, embed_state, slice_state

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClientJob:
    task: ClientTask
    data: ClientData


@dataclass
class ClientReply:
    """A client's answer as the server receives it: the decoded update, or an error."""

    client_id: int
    update: ClientUpdate | None
    bytes_up: int = 0
    error: str | None = None


class Engine(Protocol):
    def run_clients(self, jobs: list[ClientJob], download: bytes) -> list[ClientReply]:
        """Run each job's client on the serialized global state; one reply per job."""


@dataclass(frozen=True)
class RoundSettings:
    seed: int
    fraction: float
    min_clients: int
    rule: str
    min_cap: int
    deadline_seconds: float | None
    transport_dtype: str
    reference_cap: int
    reference_tol: float
    options: TrainOptions
    attack: AttackConfig | None = None
    malicious: tuple[int, ...] = ()
    """The run's malicious client ids (`deqfl.fl.attacks.malicious_clients`)."""
    faults: FaultsConfig | None = None
    privacy: dp.PrivacyConfig | None = None
    sub_shapes: Mapping[float, Shapes] = field(default_factory=dict)
    """Width ratio -> the sub-model's tensor shapes, for every tier `width` below 1."""


@dataclass
class RoundOutcome:
    state: dict[str, torch.Tensor]
    record: dict[str, Any] = field(default_factory=dict)


def run_round(
    round_number: int,
    global_state: dict[str, torch.Tensor],
    clients: list[ClientData],
    tiers: list[TierConfig],
    settings: RoundSettings,
    engine: Engine,
    fusion: Fusion,
) -> RoundOutcome:
    central = settings.privacy is not None and settings.privacy.mode == "central"
    if central:
        sample = dp.poisson_sample(
            tiers, settings.seed, round_number, settings.fraction, settings.rule, settings.min_cap
        )
    else:
        sample = sample_round(
            tiers, settings.seed, round_number, settings.fraction, settings.min_clients,
            settings.rule, settings.min_cap,
        )
    download = encode_state(global_state, settings.transport_dtype)
    sub_globals = {width: slice_state(global_state, shapes) for width, shapes in settings.sub_shapes.items()}
    download_bytes = {1.0: len(download)} | {
        width: len(encode_state(sub, settings.transport_dtype)) for width, sub in sub_globals.items()
    }
    jobs = [
        ClientJob(_task(round_number, clients[cid], tiers[cid], settings, len(download)), clients[cid])
        for cid in sample.selected
    ]
    malicious = sorted(set(sample.selected) & set(settings.malicious))
    replies = engine.run_clients(jobs, download)
    rejected: list[dict[str, Any]] = []
    updates: list[ClientUpdate] = []
    per_client: dict[int, dict[str, Any]] = {}
    simulated: list[float] = []
    for job, reply in _match_replies(jobs, replies, rejected, round_number):
        tier = job.task.tier
        if reply.error is not None or reply.update is None:
            reason = f"client failed: {reply.error}"
            log.warning("round %d: client %d rejected: %s", round_number, reply.client_id, reason)
            rejected.append({"client": reply.client_id, "reason": reason})
            continue
        try:
            if not isinstance(reply.update, ClientUpdate):
                raise TypeError(f"not a ClientUpdate (got {type(reply.update).__name__})")
            if reply.update.client_id != reply.client_id:
                raise ValueError(f"the update claims to be client {reply.update.client_id!r}")
            seconds = device_seconds(
                tier, _work_units(reply.update), download_bytes[tier.width], _byte_count(reply.bytes_up)
            ) * slowdown(settings.faults, reply.client_id)
            update = (  # coverage is the server's to set, whatever a client sent
                embed_sliced(reply.update, global_state, sub_globals[tier.width])
                if tier.width < 1 else replace(reply.update, coverage=None)
            )
        except Exception as exc:  # noqa: BLE001 - a malformed reply must not end the round
            reason = f"malformed reply ({type(exc).__name__}: {str(exc)[:200]})"
            log.warning("round %d: client %d rejected: %s", round_number, reply.client_id, reason)
            rejected.append({"client": reply.client_id, "reason": reason})
            continue
        if settings.deadline_seconds is not None and seconds > settings.deadline_seconds:
            reason = f"straggler: {seconds:.3g} simulated s > deadline {settings.deadline_seconds:g} s"
            log.warning("round %d: client %d dropped: %s", round_number, reply.client_id, reason)
            rejected.append({"client": reply.client_id, "reason": reason})
            simulated.append(settings.deadline_seconds)
            continue
        simulated.append(seconds)
        updates.append(update)
        metrics = reply.update.metrics
        per_client[reply.client_id] = {
            "id": reply.client_id,
            "tier": reply.update.tier,
            "num_examples": reply.update.num_examples,
            "local_steps": reply.update.local_steps,
            "forward_cap": reply.update.forward_cap,
            "iterations": _number(metrics.get("iterations")),
            "residual": reply.update.residual,
            "train_loss": _number(metrics.get("train_loss")),
            "holdout_loss": reply.update.holdout_loss,
            "holdout_accuracy": _number(metrics.get("holdout_accuracy")),
            "bytes_up": _byte_count(reply.bytes_up),
            "simulated_seconds": seconds,
            "compute_seconds": _number(metrics.get("compute_seconds")),
        }
    context = FusionContext(
        round=round_number,
        reference_cap=settings.reference_cap,
        known_num_examples={c.client_id: len(c.train_indices) for c in clients},
    )
    if central:
        expected = settings.fraction * len(dp.eligible_clients(tiers, settings.rule, settings.min_cap))
        result = dp.central_fuse(
            global_state, updates, context, fusion.config, settings.privacy, expected, settings.seed
        )
    else:
        result = fusion.fuse(global_state, updates, context)
    rejected.extend(result.rejected)
    for cid, info in per_client.items():
        info["weight"] = result.weights.get(cid, 0.0)
        info["quality"] = result.quality.get(cid)
    record = {
        "round": round_number,
        "bytes_down": sum(download_bytes[job.task.tier.width] for job in jobs),
        "bytes_up": sum(_byte_count(r.bytes_up) for r in replies if isinstance(r, ClientReply)),
        "clients": [per_client[c] for c in sorted(per_client) if c in result.weights],
        "rejected": sorted(rejected, key=_rejected_order),
        "unavailable": sample.unavailable,
        "adjusted": result.adjusted,
        "skipped": result.skipped,
        "simulated_seconds": max(simulated, default=0.0),
        "malicious": malicious,
        "malicious_weight": sum(result.weights.get(c, 0.0) for c in malicious),
        "epsilon": dp.epsilon(settings.privacy, round_number, settings.fraction),
    }
    return RoundOutcome(state=result.state, record=record)


def embed_sliced(
    update: ClientUpdate, global_state: Mapping[str, torch.Tensor], sub_global: Mapping[str, torch.Tensor]
) -> ClientUpdate:
    """A width-sliced update in the global shape, its `coverage` the shapes of the tier's
    slice of the global state `sub_global` (the server's, not the client's). ValueError
    unless the returned state passes `check_state` against `sub_global` (keys, shapes,
    dtypes, finite values)."""
    reason = check_state(sub_global, update.state)
    if reason is not None:
        raise ValueError(f"not the tier's sub-model: {reason}")
    coverage = {key: tuple(value.shape) for key, value in sub_global.items()}
    return replace(update, state=embed_state(update.state, global_state), coverage=coverage)


def _rejected_order(entry: dict[str, Any]) -> tuple[bool, int]:
    client = entry.get("client")
    return (client is None, client if isinstance(client, int) else 0)


def _work_units(update: ClientUpdate) -> float:
    """The reported work units, which must be a finite number >= 0 (ValueError otherwise)."""
    metrics = update.metrics
    if not isinstance(metrics, dict):
        raise ValueError(f"metrics must be a dict, got {type(metrics).__name__}")
    work = metrics.get("work_units", 0.0)
    if isinstance(work, bool) or not isinstance(work, (int, float)) or not math.isfinite(work) or work < 0:
        raise ValueError(f"work_units must be a finite number >= 0, got {work!r}")
    return float(work)


def _number(value: object) -> float | None:
    """A client-reported metric as a float for the results, or None if it is not a number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _byte_count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _match_replies(
    jobs: list[ClientJob], replies: object, rejected: list[dict[str, Any]], round_number: int
) -> list[tuple[ClientJob, ClientReply]]:
    """Pair each job with its client's reply, in client-id order. A job without a reply,
    a reply from a client that was not sampled and every reply of a client that answered
    twice are listed under `rejected` (an engine's fault, not a reason to stop)."""
    by_client: dict[int, list[ClientReply]] = {}
    for reply in replies if isinstance(replies, (list, tuple)) else []:
        cid = getattr(reply, "client_id", None)
        if isinstance(reply, ClientReply) and isinstance(cid, int) and not isinstance(cid, bool):
            by_client.setdefault(cid, []).append(reply)
        else:
            rejected.append({"client": None, "reason": f"malformed reply ({type(reply).__name__})"})
    sampled = {job.data.client_id for job in jobs}
    for cid in sorted(set(by_client) - sampled):
        rejected.append({"client": cid, "reason": "reply from a client that was not sampled"})
    pairs = []
    for job in sorted(jobs, key=lambda j: j.data.client_id):
        cid = job.data.client_id
        got = by_client.get(cid, [])
        if len(got) == 1:
            pairs.append((job, got[0]))
            continue
        reason = "no reply" if not got else f"{len(got)} replies for one task"
        log.warning("round %d: client %d rejected: %s", round_number, cid, reason)
        rejected.append({"client": cid, "reason": reason})
    return pairs


def _task(round_number: int, data: ClientData, tier: TierConfig, s: RoundSettings, payload: int) -> ClientTask:
    cap = tier.max_iter
    if tier.time_budget is not None:
        batch = tier.batch_size or s.options.batch_size
        samples = local_step_count(tier, len(data.train_indices), batch) * batch
        cap = cap_for_time_budget(
            tier, samples, min(s.options.residual_samples, len(data.train_indices)),
            s.reference_cap, payload, payload,
        )
    cid = data.client_id
    return ClientTask(
        round=round_number, seed=s.seed, tier=tier, forward_cap=cap,
        reference_cap=s.reference_cap, reference_tol=s.reference_tol, options=s.options,
        attack=s.attack if cid in s.malicious else None,
        crash_at=crash_at(s.faults, s.seed, round_number, cid),
        local_dp=s.privacy if s.privacy is not None and s.privacy.mode == "local" else None,
    )
