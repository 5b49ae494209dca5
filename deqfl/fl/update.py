"""What a client sends back after a round, and what the server knows while fusing it.

Both are plain dataclasses: the engines build them, `deqfl.fl.validation` checks them and
`deqfl.fl.fusion` turns a list of them into the next global model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class ClientUpdate:
    """One client's reply to a training round.

    Every number here is *reported by the client*: the server validates and bounds the
    ones that steer fusion weights (`num_examples`, `residual`, `holdout_loss`,
    `forward_cap`, `local_steps`, `momentum`) before using them.
    """

    client_id: int
    """The client's id (the server's, not taken from the payload)."""
    tier: str
    """Name of the device tier the client belongs to."""
    state: dict[str, torch.Tensor]
    """The client's full returned model state: same keys, shapes and dtypes as the global."""
    num_examples: int
    """Number of training examples the client says it used."""
    local_steps: int
    """Optimiser steps the client took this round (FedNova's tau_i)."""
    forward_cap: int
    """The client's forward solver iteration cap; 0 for explicit (non-DEQ) models."""
    residual: float | None
    """Mean relative residual ||f(z)-z|| / ||f(z)|| of the returned model at the reference
    budget on up to 256 of the client's samples; None for explicit models."""
    holdout_loss: float | None
    """Loss of the returned model on the client's held-back slice; None if not measured."""
    momentum: float = 0.0
    """Momentum rho of the client's SGD optimiser, in [0, 1) (used by FedNova)."""
    metrics: dict[str, float] = field(default_factory=dict)
    """Anything else the client reports; passed through to results untouched."""
    coverage: dict[str, tuple[int, ...]] | None = None
    """Set by the server, never by the client, for a width-sliced (HeteroFL) update: the
    leading slice of each tensor the client trained. `state` then holds the global values
    outside it (`deqfl.models.width.embed_state`). None: the client trained everything."""
    client_state: dict[str, torch.Tensor] | None = None
    """The client's persistent state after the round (`train_client(client_state=...)`),
    kept on the client side and never uploaded; None when the run keeps none."""
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    """Tensors the algorithm uploads besides the state (SCAFFOLD: "control/<key>" -> the
    client's control-variate increment), in the same payload (`deqfl.fl.transport`), so
    counted in its bytes; the server checks them against what it broadcast."""


@dataclass
class FusionContext:
    """What the server knows when it fuses a round's updates."""

    round: int
    """The round number (for logs and results)."""
    reference_cap: int
    """Forward iteration cap of the strongest tier (0 if no model in the fleet is a DEQ)."""
    known_num_examples: dict[int, int] = field(default_factory=dict)
    """Partition size of each client as the server knows it; reported example counts are
    capped at these. A client missing here gets only the lower bound of 1."""
