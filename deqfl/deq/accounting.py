"""Counting the work a DEQ does, in a unit the federated simulated clock can use."""

from __future__ import annotations

from dataclasses import dataclass, field

from deqfl.deq.solvers import SolverStats


@dataclass
class Ledger:
    """Cell work since the last reset, counted in samples (one sample through one cell call).

    forward: cell applications (solver evaluations and differentiable applications), each
    counted as its batch size.  vjp: vector-Jacobian products through the cell (IFT backward
    solver steps and the backward pass of every differentiable application), likewise.
    `cell_evals` = forward + 2 * vjp, taking a backward pass as twice a forward one.
    `backward_fallbacks` counts batches where IFT fell back to its cheaper mode;
    `last_backward` holds the statistics of the last IFT backward solve.
    """

    forward: int = 0
    vjp: int = 0
    backward_fallbacks: int = 0
    last_backward: SolverStats | None = field(default=None, repr=False)

    @property
    def cell_evals(self) -> int:
        return self.forward + 2 * self.vjp

    def reset(self) -> None:
        self.forward = self.vjp = self.backward_fallbacks = 0
        self.last_backward = None
