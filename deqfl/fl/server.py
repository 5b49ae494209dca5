"""One federated round, engine-agnostic, as a pipeline of small stages:

1. plan (`deqfl.fl.plan`): sample the clients (seeded by seed and round), serialize the
   global state once, with the fusion's extras (`server_extras`), give each client its
   task (forward cap, local steps, attack, crash) and its state from the client-state store;
2. dispatch: the engine runs the jobs and hands back raw replies (`deqfl.fl.reply`);
3. intake (`deqfl.fl.intake`): match replies to jobs, refuse oversized uploads before
   decoding, read every reported number through one bounded reader, use the server's
   numbers where a report would steer the model, time clients on the simulated clock and
   drop stragglers past the deadline;
4. fuse: the fusion (`deqfl.fl.fusion`, wrapped for central DP) validates and fuses the
   updates in client order;
5. record (`deqfl.fl.record`): the typed round record (under personalisation with the
   clients' personalised accuracies, `deqfl.fl.personal.summary`); the replies'
   well-formed client states are written back to the store.

Every decision is made here, so every engine gives the same round for the same config and
seed. A reply the server cannot use is listed under `rejected`, never raised; anything
else that goes wrong is a bug and raises.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from deqfl.fl import privacy as dp
from deqfl.fl.client import ClientData
from deqfl.fl.client_state import ClientStateStore
from deqfl.fl.fusion import CentralDPFusion, Fusion, FusionContext, FusionResult, ScaffoldFusion
from deqfl.fl.intake import Intake, take_in
from deqfl.fl.personal.summary import personal_summary
from deqfl.fl.plan import ClientJob, RoundPlan, RoundSettings, plan_round
from deqfl.fl.profiles import TierConfig
from deqfl.fl.record import Adjustment, Rejection, RoundRecord
from deqfl.fl.reply import ClientReply, truncate

__all__ = ["ClientJob", "ClientReply", "Engine", "RoundOutcome", "RoundSettings", "run_round"]


class Engine(Protocol):
    def run_clients(self, jobs: list[ClientJob], download: bytes) -> list[ClientReply]:
        """Run each job's client on the serialized global state; one reply per job."""


@dataclass
class RoundOutcome:
    state: dict[str, torch.Tensor]
    record: RoundRecord


def run_round(
    round_number: int,
    global_state: dict[str, torch.Tensor],
    clients: list[ClientData],
    tiers: list[TierConfig],
    settings: RoundSettings,
    engine: Engine,
    fusion: Fusion | CentralDPFusion | ScaffoldFusion,
    client_state: ClientStateStore | None = None,
) -> RoundOutcome:
    """One round (module docstring). `client_state`: the run's per-client state store,
    read for the round's clients and updated from their replies (None: no client state)."""
    plan = plan_round(
        round_number, global_state, clients, tiers, settings,
        extras=server_extras(fusion, global_state), client_state=client_state,
    )
    replies = engine.run_clients(plan.jobs, plan.download)
    intake = take_in(
        plan, replies, global_state, settings.options.momentum, settings.deq_model,
        settings.deadline_seconds, settings.faults, settings.client_state_per_sample,
        local=settings.personalization.local if settings.personalization is not None else (),
    )
    context = FusionContext(
        round=round_number,
        reference_cap=settings.reference_cap,
        known_num_examples={c.client_id: len(c.train_indices) for c in clients},
    )
    result = fusion.fuse(global_state, intake.updates, context)
    if client_state is not None:
        for cid, state in sorted(intake.client_states.items()):
            client_state.put(cid, state)
    return RoundOutcome(state=result.state, record=_record(plan, intake, result, settings))


def server_extras(fusion: object, global_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What the fusion broadcasts besides the model: `fusion.server_extras(global_state)`
    for a fusion that has the method (`deqfl.fl.fusion.scaffold.ScaffoldFusion`), else none."""
    extras = getattr(fusion, "server_extras", None)
    return extras(global_state) if callable(extras) else {}


def _record(plan: RoundPlan, intake: Intake, result: FusionResult, settings: RoundSettings) -> RoundRecord:
    rows = []
    for cid in sorted(intake.rows):
        if cid in result.weights:
            rows.append(intake.rows[cid].model_copy(
                update={"weight": result.weights[cid], "quality": result.quality.get(cid)}
            ))
    rejected = sorted(intake.rejected + result.rejected, key=_rejected_order)
    personal = personal_summary(intake.updates) if settings.personalization is not None else None
    return RoundRecord(
        round=plan.round,
        bytes_down=sum(plan.download_bytes[job.task.tier.width] for job in plan.jobs),
        bytes_up=intake.bytes_up,
        clients=rows,
        rejected=[Rejection(client=r["client"], reason=truncate(r["reason"])) for r in rejected],
        unavailable=plan.sample.unavailable,
        adjusted=[Adjustment(**a) for a in intake.adjusted + result.adjusted],
        skipped=result.skipped,
        simulated_seconds=max(intake.simulated, default=0.0),
        malicious=plan.malicious,
        malicious_weight=sum(result.weights.get(c, 0.0) for c in plan.malicious),
        epsilon=dp.epsilon(settings.privacy, plan.round, settings.fraction),
        lr=plan.lr,
        personal_accuracy=personal,
    )


def _rejected_order(entry: dict) -> tuple[bool, int]:
    client = entry.get("client")
    return (client is None, client if isinstance(client, int) else 0)
