"""Backprop through plain iterations (`backward="unrolled"`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from deqfl.deq.accounting import Cost
from deqfl.deq.backward.base import BackwardMode, register_backward
from deqfl.deq.solvers import SolverStats
from deqfl.errors import ConfigError


@register_backward
@dataclass(frozen=True)
class Unrolled(BackwardMode):
    """Backprop through `steps` plain iterations z_{i+1} = f(z_i) from z0 (default: the
    solver's max_iter), i.e. the weight-tied `steps`-layer network; the reference gradient.
    Memory grows linearly with steps. No solve: cost steps forwards + steps vjps per sample."""

    name: ClassVar[str] = "unrolled"
    steps: int | None = None

    def __post_init__(self) -> None:
        if self.steps is not None and (not isinstance(self.steps, int) or self.steps < 1):
            raise ConfigError(f"unrolled steps must be an integer >= 1 or None, got {self.steps!r}")

    def step_cost(self, forward_cap: int) -> Cost:
        steps = self.steps or forward_cap
        return Cost(forward=steps, vjp=steps)

    def run(self, f, z0, solver, ledger):
        steps = self.steps or solver.max_iter
        batch = z0.shape[0]
        z = z0
        for _ in range(steps):
            z_prev, z = z, f(z)
        ledger.charge(self.step_cost(solver.max_iter), batch)
        with torch.no_grad():
            abs_res = torch.linalg.vector_norm((z - z_prev).reshape(batch, -1), dim=1)
            rel_res = abs_res / (torch.linalg.vector_norm(z.reshape(batch, -1), dim=1) + torch.finfo(z.dtype).tiny)
            measure = rel_res if solver.stop_mode == "rel" else abs_res
        stats = SolverStats(
            iterations=torch.full((batch,), steps, dtype=torch.long, device=z.device),
            abs_residual=abs_res,
            rel_residual=rel_res,
            converged=measure <= solver.tol,
            nfe=steps,
            evaluations=steps * batch,
        )
        return z, stats
