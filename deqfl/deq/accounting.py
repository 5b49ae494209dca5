"""Counting the work a DEQ does, in a unit the federated simulated clock can use.

The unit is one cell evaluation on one sample; a vector-Jacobian product through the cell
costs `VJP_UNITS` of them (a backward pass taken as twice a forward one). This module is
the one cost model: the DEQ charges its `Ledger` with the `Cost`s below and the gradient
modes' own (`BackwardMode.tail_cost`), and the time-budget planner
(`deqfl.fl.clock.planned_deq_units`) adds up the same `Cost`s, so the two cannot drift.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from deqfl.deq.solvers import SolverStats

VJP_UNITS = 2
"""Cell evaluations one vector-Jacobian product through the cell counts as."""


@dataclass(frozen=True)
class Cost:
    """Cell work per sample: `forward` cell applications and `vjp` vector-Jacobian products;
    `units` = forward + VJP_UNITS * vjp."""

    forward: int = 0
    vjp: int = 0

    @property
    def units(self) -> int:
        return self.forward + VJP_UNITS * self.vjp

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.forward + other.forward, self.vjp + other.vjp)


def solve_cost(evaluations: int) -> Cost:
    """A graph-free solve of `evaluations` f-evaluations per sample: the worst case of a solve
    capped at `evaluations` calls (`SolverStats.nfe`); the ledger charges what was done
    (`Ledger.charge_solve`)."""
    return Cost(forward=evaluations)


def correction_steps(cap: int, points: int) -> tuple[int, ...]:
    """The evaluation counts at which fixed-point correction reads a solve capped at `cap`:
    max(1, floor(i * cap / (points + 1))) for i = 1..points, those below `cap`, distinct
    (cap 8, 2 points: (2, 5); cap 2: (1,); cap 1: none)."""
    steps = (max(1, i * cap // (points + 1)) for i in range(1, points + 1))
    return tuple(sorted({j for j in steps if j < cap}))


REPLAY = Cost(forward=1, vjp=1)
"""One fixed-point correction step: a differentiable cell application and its vjp."""


def correction_cost(cap: int, points: int) -> Cost:
    """Fixed-point correction at a forward cap `cap` with `points` points: one `REPLAY` per
    correction step (`correction_steps`)."""
    steps = len(correction_steps(cap, points))
    return Cost(forward=REPLAY.forward * steps, vjp=REPLAY.vjp * steps)


def jacobian_penalty_cost(probes: int) -> Cost:
    """The Hutchinson Jacobian penalty (`deqfl.deq.stability.jacobian_penalty`) with
    `probes` probes: one cell application, and per probe one vjp with its graph kept plus
    the vjp through it when the loss is differentiated (2 vjps a probe)."""
    return Cost(forward=1, vjp=2 * probes)


@dataclass
class Ledger:
    """Cell work since the last reset, counted in samples (one sample through one cell call).

    forward: cell applications (solver evaluations and differentiable applications), each
    counted as the rows it ran on (a solve: `SolverStats.evaluations`).  vjp: vector-Jacobian products through the cell (IFT backward
    solver steps and the backward pass of every differentiable application), likewise.
    `cell_evals` = Cost(forward, vjp).units = forward + VJP_UNITS * vjp.
    `backward_fallbacks` counts samples whose IFT gradient came from its cheaper mode;
    `last_backward` holds the statistics of the last IFT backward solve.
    """

    forward: int = 0
    vjp: int = 0
    backward_fallbacks: int = 0
    last_backward: SolverStats | None = field(default=None, repr=False)

    @property
    def cell_evals(self) -> int:
        return Cost(self.forward, self.vjp).units

    def charge(self, cost: Cost, batch: int) -> None:
        """Add `cost` (per sample) for a batch of `batch` samples."""
        self.forward += cost.forward * batch
        self.vjp += cost.vjp * batch

    def charge_solve(self, stats: SolverStats) -> None:
        """A graph-free solve: the sample-evaluations it made (`stats.evaluations`, at most
        `solve_cost(stats.nfe)` per sample)."""
        self.forward += stats.evaluations

    def reset(self) -> None:
        self.forward = self.vjp = self.backward_fallbacks = 0
        self.last_backward = None
