"""Optimiser-step hooks: code that runs at fixed points of every local step.

Each local step runs, in order:

    hook.start(step)                        for every hook (before the batch is drawn)
    hook.before_forward(step)               the batch drawn (`step.batch`), not yet run
    forward, loss terms, loss.backward()
    hook.before_update(step)                gradients ready in p.grad, may be changed
    optimizer.step()
    hook.after_update(step)                 parameters updated

`StepHook` has no-op methods; a hook overrides the ones it needs. SCAFFOLD's correction
g <- g - c_i + c is a `before_update`; an injected crash is a `start`; warm starts
(`deqfl.fl.client.warm_start`) arm in `before_forward`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from deqfl.deq.budget import SolveRecord


@dataclass
class LocalStep:
    """One local step as the hooks see it. `batch` is set once drawn (None in `start`);
    `solves` (the step's DEQ calls: solver statistics, fixed points, Jacobian penalties)
    and `losses` (each loss term's value) are set once the step's loss is computed (None /
    empty before)."""

    index: int
    """0-based step index."""
    total: int
    """Local steps of the round."""
    model: nn.Module
    params: dict[str, Tensor]
    """The trainable parameters by name (their `.grad` is the step's gradient)."""
    anchor: dict[str, Tensor]
    """The same parameters as received from the server (detached)."""
    optimizer: torch.optim.Optimizer
    client_state: dict[str, Tensor] | None
    solves: SolveRecord | None = None
    losses: dict[str, float] = field(default_factory=dict)
    batch: Tensor | None = None
    """The step's rows: positions in the client's training rows (`ClientRound.x_train`),
    stable across rounds (the same position is the same sample every round)."""


class StepHook:
    """Base class of optimiser-step hooks (every method a no-op)."""

    def start(self, step: LocalStep) -> None:
        """Before the step's batch is drawn."""

    def before_forward(self, step: LocalStep) -> None:
        """After the batch is drawn (`step.batch`), before the forward."""

    def before_update(self, step: LocalStep) -> None:
        """After loss.backward(), before optimizer.step(): may modify the gradients."""

    def after_update(self, step: LocalStep) -> None:
        """After optimizer.step()."""
