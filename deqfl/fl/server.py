"""One federated round, engine-agnostic: sample, dispatch, time, validate and fuse.

The engine only moves payloads and runs `deqfl.fl.client.train_client`; every decision is
made here, so every engine gives the same round for the same config and seed:

1. `sample_round` picks the clients (seeded by seed and round), sorted by id.
2. The global state is serialized once (`bytes_down` = its length x receiving clients).
3. Each client's forward cap is its tier's `max_iter`, or, with a `time_budget`, the
   largest cap whose simulated time fits (`deqfl.fl.clock.cap_for_time_budget`).
4. Replies are timed on the simulated clock; past `deadline_seconds` a client is a
   straggler and its update is dropped. Crashed clients and stragglers are listed under
   `rejected` with the reason, as are updates that fail validation in the fusion.
5. The fusion (`deqfl.fl.fusion`) validates and fuses the remaining updates in client order.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from deqfl.fl.client import ClientData, ClientTask, TrainOptions, local_step_count
from deqfl.fl.clock import cap_for_time_budget, device_seconds
from deqfl.fl.fusion import Fusion, FusionContext
from deqfl.fl.profiles import TierConfig
from deqfl.fl.sampling import sample_round
from deqfl.fl.transport import encode_state
from deqfl.fl.update import ClientUpdate

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
    sample = sample_round(
        tiers, settings.seed, round_number, settings.fraction, settings.min_clients,
        settings.rule, settings.min_cap,
    )
    download = encode_state(global_state, settings.transport_dtype)
    jobs = [
        ClientJob(_task(round_number, clients[cid], tiers[cid], settings, len(download)), clients[cid])
        for cid in sample.selected
    ]
    replies = sorted(engine.run_clients(jobs, download), key=lambda r: r.client_id)
    rejected: list[dict[str, Any]] = []
    updates: list[ClientUpdate] = []
    per_client: dict[int, dict[str, Any]] = {}
    simulated: list[float] = []
    for job, reply in zip(sorted(jobs, key=lambda j: j.data.client_id), replies):
        tier = job.task.tier
        if reply.error is not None or reply.update is None:
            reason = f"client failed: {reply.error}"
            log.warning("round %d: client %d rejected: %s", round_number, reply.client_id, reason)
            rejected.append({"client": reply.client_id, "reason": reason})
            continue
        seconds = device_seconds(
            tier, reply.update.metrics.get("work_units", 0.0), len(download), reply.bytes_up
        )
        if settings.deadline_seconds is not None and seconds > settings.deadline_seconds:
            reason = f"straggler: {seconds:.3g} simulated s > deadline {settings.deadline_seconds:g} s"
            log.warning("round %d: client %d dropped: %s", round_number, reply.client_id, reason)
            rejected.append({"client": reply.client_id, "reason": reason})
            simulated.append(settings.deadline_seconds)
            continue
        simulated.append(seconds)
        updates.append(reply.update)
        per_client[reply.client_id] = {
            "id": reply.client_id,
            "tier": reply.update.tier,
            "num_examples": reply.update.num_examples,
            "local_steps": reply.update.local_steps,
            "forward_cap": reply.update.forward_cap,
            "iterations": reply.update.metrics.get("iterations"),
            "residual": reply.update.residual,
            "train_loss": reply.update.metrics.get("train_loss"),
            "holdout_loss": reply.update.holdout_loss,
            "holdout_accuracy": reply.update.metrics.get("holdout_accuracy"),
            "bytes_up": reply.bytes_up,
            "simulated_seconds": seconds,
            "compute_seconds": reply.update.metrics.get("compute_seconds"),
        }
    context = FusionContext(
        round=round_number,
        reference_cap=settings.reference_cap,
        known_num_examples={c.client_id: len(c.train_indices) for c in clients},
    )
    result = fusion.fuse(global_state, updates, context)
    rejected.extend(result.rejected)
    for cid, info in per_client.items():
        info["weight"] = result.weights.get(cid, 0.0)
        info["quality"] = result.quality.get(cid)
    record = {
        "round": round_number,
        "bytes_down": len(download) * len(jobs),
        "bytes_up": sum(r.bytes_up for r in replies),
        "clients": [per_client[c] for c in sorted(per_client) if c in result.weights],
        "rejected": sorted(rejected, key=lambda r: r["client"]),
        "unavailable": sample.unavailable,
        "adjusted": getattr(result, "adjusted", []),
        "skipped": result.skipped,
        "simulated_seconds": max(simulated, default=0.0),
    }
    return RoundOutcome(state=result.state, record=record)


def _task(round_number: int, data: ClientData, tier: TierConfig, s: RoundSettings, payload: int) -> ClientTask:
    cap = tier.max_iter
    if tier.time_budget is not None:
        batch = tier.batch_size or s.options.batch_size
        samples = local_step_count(tier, len(data.train_indices), batch) * batch
        cap = cap_for_time_budget(
            tier, samples, min(s.options.residual_samples, len(data.train_indices)),
            s.reference_cap, payload, payload,
        )
    return ClientTask(
        round=round_number, seed=s.seed, tier=tier, forward_cap=cap,
        reference_cap=s.reference_cap, reference_tol=s.reference_tol, options=s.options,
    )
