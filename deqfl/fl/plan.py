"""The first stage of a round: who takes part, with what task, and what they download.

`plan_round` samples the round's clients (seeded by seed and round; Poisson sampling under
central DP), serializes the global state once, slices it for width-sliced tiers (HeteroFL),
and gives each sampled client its task. Everything in a task is the server's decision:

- `forward_cap`: the tier's `max_iter`, or with a `time_budget` the largest cap whose
  worst-case simulated time fits (`deqfl.fl.clock.cap_for_time_budget`);
- `local_steps`: `deqfl.fl.client.local_step_count` of the tier and the client's rows;
- `options.lr`: the round's learning rate (`deqfl.fl.lr_schedule`), the same for every
  client of the round and kept in `RoundPlan.lr`;
- `control_variates`: the run's (SCAFFOLD's client mod runs when it is "scaffold");
- `personalization`: the run's personalised algorithm (`deqfl.fl.personal`), if any.

Under personalisation the download carries only the entries that travel (not
`PersonalTask.local`), and clients held out of training (`held_out`) are never sampled.

The download carries the fusion's extras besides the global state (SCAFFOLD's control
variate, `deqfl.fl.transport.with_extras`), so they count in `bytes_down`. Each job
carries its client's state read from the client-state store (only the round's clients are
read, so memory does not grow with the registered clients).

Intake (`deqfl.fl.intake`) uses these assigned numbers wherever a client's report would
steer the model, and records any mismatch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from deqfl.fl import privacy as dp
from deqfl.fl.attacks import AttackConfig
from deqfl.fl.client import ClientData, ClientTask, TrainOptions, local_step_count
from deqfl.fl.client.task import PersonalTask
from deqfl.fl.client_state import ClientStateStore
from deqfl.fl.clock import cap_for_time_budget
from deqfl.fl.faults import FaultsConfig, crash_at
from deqfl.fl.lr_schedule import LrSchedule
from deqfl.fl.profiles import TierConfig
from deqfl.fl.sampling import RoundSample, sample_round
from deqfl.fl.transport import encode_state, pack_tensors, with_extras
from deqfl.models.width import Shapes, slice_state


@dataclass(frozen=True)
class RoundSettings:
    """What the server decides rounds by; built once per run from the config."""

    seed: int
    fraction: float
    min_clients: int
    rule: str
    min_forward_cap: int
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
    deq_model: bool = True
    """Whether the model solves a fixed point (a client's forward cap is then its task's;
    0 for explicit models)."""
    jacobian_probes: int = 0
    """The DEQ's Jacobian-penalty probes per sample (`jac_reg_samples`), for the planner."""
    control_variates: str = "none"
    """`fusion.control_variates`: "scaffold" gives every task SCAFFOLD's client mod."""
    client_state_per_sample: int = 0
    """Bytes a client's state may hold per training row beyond the model-sized bound
    (`deqfl.fl.intake.state_limit`): the warm-start cache's
    (`deqfl.fl.client.warm_start.cache_bytes_per_sample`; 0 without warm starts)."""
    lr_schedule: LrSchedule = LrSchedule()
    """The clients' rate over rounds; `options.lr` is its base rate."""

    def round_options(self, round_number: int) -> TrainOptions:
        """`options` with the rate of round `round_number`."""
        return dataclasses.replace(self.options, lr=self.lr_schedule.lr(round_number, self.options.lr))
    personalization: PersonalTask | None = None
    """The personalised algorithm every task runs (`deqfl.fl.personal`); None: none."""
    held_out: tuple[int, ...] = ()
    """Clients never sampled for training (personalisation's unseen clients)."""


@dataclass(frozen=True)
class ClientJob:
    """One sampled client's work order: its task and its rows."""

    task: ClientTask
    data: ClientData
    client_state: bytes | None = None
    """The client's persistent state as the store holds it, packed
    (`deqfl.fl.transport.pack_tensors`: jobs cross processes as bytes); None: it holds none."""

    @property
    def client_id(self) -> int:
        return self.data.client_id

    @property
    def assigned_steps(self) -> int:
        """The local steps the server assigned."""
        batch = self.task.tier.batch_size or self.task.options.batch_size
        return local_step_count(self.task.tier, len(self.data.train_indices), batch)


@dataclass(frozen=True)
class RoundPlan:
    """A round before dispatch."""

    round: int
    sample: RoundSample
    jobs: list[ClientJob]
    """One job per selected client, in client-id order."""
    download: bytes
    """The serialized global state every full-width client receives."""
    download_bytes: dict[float, int]
    """Width ratio -> bytes one client of that width downloads (1.0: the whole model)."""
    sub_globals: dict[float, dict[str, torch.Tensor]]
    """Width ratio -> the tier's slice of the global state (HeteroFL)."""
    malicious: list[int]
    """The selected clients that are malicious (attack simulation)."""
    lr: float
    """The round's client learning rate (every task's `options.lr`)."""
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    """The fusion's extras in the download; every reply must upload extras of the same
    names, shapes and dtypes (`deqfl.fl.intake`)."""


def plan_round(
    round_number: int,
    global_state: Mapping[str, torch.Tensor],
    clients: list[ClientData],
    tiers: list[TierConfig],
    settings: RoundSettings,
    *,
    extras: Mapping[str, torch.Tensor] | None = None,
    client_state: ClientStateStore | None = None,
) -> RoundPlan:
    """The round's plan (module docstring); `extras` travel in the full-width download,
    `client_state` is read for the sampled clients."""
    sample = _sample(round_number, tiers, settings)
    extras = dict(extras or {})
    download = encode_state(with_extras(wire_state(global_state, settings), extras), settings.transport_dtype)
    sub_globals = {width: slice_state(global_state, shapes) for width, shapes in settings.sub_shapes.items()}
    download_bytes = {1.0: len(download)} | {
        width: len(encode_state(sub, settings.transport_dtype)) for width, sub in sub_globals.items()
    }
    options = settings.round_options(round_number)
    jobs = [
        ClientJob(
            _task(round_number, clients[cid], tiers[cid], settings, options, len(download)), clients[cid],
            _packed_state(client_state, cid),
        )
        for cid in sample.selected
    ]
    malicious = sorted(set(sample.selected) & set(settings.malicious))
    return RoundPlan(round_number, sample, jobs, download, download_bytes, sub_globals, malicious, options.lr, extras)


def wire_state(global_state: Mapping[str, torch.Tensor], settings: RoundSettings) -> dict[str, torch.Tensor]:
    """The entries of the global state that travel: all but the personalised algorithm's
    `PersonalTask.local` ones."""
    local = set(settings.personalization.local) if settings.personalization is not None else set()
    return {k: v for k, v in global_state.items() if k not in local}


def _packed_state(store: ClientStateStore | None, client_id: int) -> bytes | None:
    state = store.get(client_id) if store is not None else None
    return None if state is None else pack_tensors(state)


def _sample(round_number: int, tiers: list[TierConfig], s: RoundSettings) -> RoundSample:
    if s.privacy is not None and s.privacy.mode == "central":
        return dp.poisson_sample(tiers, s.seed, round_number, s.fraction, s.rule, s.min_forward_cap)
    return sample_round(tiers, s.seed, round_number, s.fraction, s.min_clients, s.rule, s.min_forward_cap,
                        exclude=s.held_out)


def _task(
    round_number: int, data: ClientData, tier: TierConfig, s: RoundSettings, options: TrainOptions, payload: int
) -> ClientTask:
    cap = tier.forward_cap
    if tier.time_budget is not None:
        batch = tier.batch_size or s.options.batch_size
        samples = local_step_count(tier, len(data.train_indices), batch) * batch
        cap = cap_for_time_budget(
            tier, samples, min(s.options.residual_samples, len(data.train_indices)),
            s.reference_cap, payload, payload,
            holdout_samples=len(data.holdout_indices), jacobian_probes=s.jacobian_probes,
            correction_points=s.options.active_correction_points,
        )
    cid = data.client_id
    return ClientTask(
        round=round_number, seed=s.seed, tier=tier, forward_cap=cap,
        reference_cap=s.reference_cap, reference_tol=s.reference_tol, options=options,
        attack=s.attack if cid in s.malicious else None,
        crash_at=crash_at(s.faults, s.seed, round_number, cid),
        local_dp=s.privacy if s.privacy is not None and s.privacy.mode == "local" else None,
        control_variates=s.control_variates,
        personalization=s.personalization,
    )
