"""Fault injection: clients that crash mid-training, and stragglers past the deadline.

- A *crash* is decided by the server when it builds the round's tasks (listed clients
  crash whenever sampled; otherwise with `crash_probability`, drawn from a generator
  seeded by (seed, round, client)). The client's task then carries `crash_at`, and
  `deqfl.fl.client.train_client` raises `ClientCrash` inside its training loop after that
  share of its local steps. The engine turns the exception into an error reply: the
  client is listed under the round's `rejected` with the reason, and the round goes on.
- A *straggler* is slowed down on the simulated clock: its simulated seconds are
  multiplied by `straggler_slowdown`. With `sampling.deadline_seconds` set, a client past
  the deadline is dropped (listed under `rejected`: "straggler: ..."). Its partial work is
  not used: the deadline is checked on the simulated time of the whole round, and no
  built-in fusion rule fuses a model trained for part of a round differently from a whole
  one (planned partial work: a tier's `time_budget` or `step_fraction`).

Server crashes are covered by checkpoints (`deqfl run --resume`), not injected here.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from deqfl.errors import ClientFailure

_SEED_TAG = 0xC8A54


class ClientCrash(ClientFailure):
    """Raised inside a client's training loop by an injected crash."""


class FaultsConfig(BaseModel):
    """Injected faults: crashing clients and stragglers (docs/RELIABILITY.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    crash_clients: list[int] = Field(
        default_factory=list, description="Client ids that crash mid-training whenever they are sampled."
    )
    crash_probability: float = Field(
        0.0, ge=0, le=1,
        description="Probability that any other sampled client crashes in a round (seeded by seed, round, client).",
    )
    crash_at: float = Field(
        0.5, ge=0, lt=1,
        description="Share of its local steps a crashing client completes before it raises.",
    )
    straggler_clients: list[int] = Field(
        default_factory=list,
        description="Client ids whose simulated round time is multiplied by `straggler_slowdown` "
        "(dropped when past sampling.deadline_seconds).",
    )
    straggler_slowdown: float = Field(
        10.0, ge=1, description="Simulated slowdown factor of the straggler clients."
    )


def crash_at(faults: FaultsConfig | None, seed: int, round_number: int, client: int) -> float | None:
    """The share of its local steps after which `client` crashes this round, or None."""
    if faults is None:
        return None
    if client in faults.crash_clients:
        return faults.crash_at
    if faults.crash_probability > 0:
        draw = np.random.default_rng([seed, round_number, client, _SEED_TAG]).random()
        if draw < faults.crash_probability:
            return faults.crash_at
    return None


def crash_step(share: float | None, steps: int) -> int | None:
    """The step index (0-based) at which a client with `steps` local steps raises."""
    if share is None:
        return None
    return min(steps - 1, int(share * steps))


def slowdown(faults: FaultsConfig | None, client: int) -> float:
    """Factor applied to `client`'s simulated seconds (1 for a normal client)."""
    if faults is None or client not in faults.straggler_clients:
        return 1.0
    return faults.straggler_slowdown
