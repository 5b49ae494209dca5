"""The `DEQ` module: z* = f(z*, x) for a cell f, with swappable budgets and gradient modes."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

from deqfl.deq.accounting import REPLAY, Ledger, correction_steps, jacobian_penalty_cost
from deqfl.deq.backward import JFB, BackwardMode
from deqfl.deq.solvers import RowMap, SolverConfig, SolverStats, solve
from deqfl.deq.stability import contraction_estimate, jacobian_penalty

StatsSink = Callable[[Tensor, SolverStats, Tensor | None], None]
"""Receives (output z, forward SolverStats, Jacobian penalty or None) after each forward."""


class DEQ(nn.Module):
    """Deep equilibrium layer around a cell.

    The cell is an nn.Module with `forward(z, u) -> z'` (same shape as z), and optionally
    `inject(x) -> u` (input injection computed once per forward; default u = x) and
    `initial_state(u) -> z0` (default zeros shaped like u).

    * Training mode with grad enabled: `backward.run` solves with `train_solver` and attaches
      the gradient tail (IFT / JFB / Phantom / Unrolled). Output: as the mode defines (f(z*)
      for IFT and JFB).
    * Otherwise (eval mode, or under no_grad): a graph-free solve with `eval_solver` in eval
      mode, `train_solver` in training mode. Output: the solver's z.

    `train_solver`, `eval_solver` and `backward` are the layer's own settings; a caller runs
    it at another budget per call with `deqfl.deq.budget.solver_budget`, which applies to
    every DEQ of a model and returns each call's SolverStats and, for a layer with
    jac_reg_samples > 0 in a training forward, its Jacobian penalty (Hutchinson estimate of
    ||J_f||_F^2 / dim at z*, with graph). Outside such a context statistics are dropped and
    no penalty is computed. `forward(x, z0=...)` warm-starts the solve from z0 instead of
    the cell's initial state. Work since `reset_counters()`: `ledger` and `cell_evals` (unit
    in `deqfl.deq.accounting.Ledger`).

    Fixed-point correction (`deqfl.deq.budget`): a training forward under a budget with
    correction points keeps the solver's outputs at `correction_steps(cap, points)`
    evaluations (`SolverStats.kept`); under `replaying(states)` the layer instead answers
    each call with one differentiable cell application f(z_j, u) from the next of `states`
    (1 forward + 1 vjp per sample), the output a solve capped at j would train with JFB.
    """

    def __init__(
        self,
        cell: nn.Module,
        train_solver: SolverConfig | None = None,
        eval_solver: SolverConfig | None = None,
        backward: BackwardMode | None = None,
        jac_reg_samples: int = 0,
    ) -> None:
        super().__init__()
        self.cell = cell
        self.train_solver = train_solver or SolverConfig()
        self.eval_solver = eval_solver or self.train_solver
        self.backward = backward or JFB()
        self.jac_reg_samples = jac_reg_samples
        self.ledger = Ledger()
        self._sink: StatsSink | None = None
        self._generator: torch.Generator | None = None
        self._correction_points = 0
        self._replay: list[Tensor] | None = None

    @property
    def cell_evals(self) -> int:
        return self.ledger.cell_evals

    def reset_counters(self) -> None:
        self.ledger.reset()

    def inject(self, x: Tensor) -> Tensor:
        return self.cell.inject(x) if hasattr(self.cell, "inject") else x

    def initial_state(self, u: Tensor) -> Tensor:
        return self.cell.initial_state(u) if hasattr(self.cell, "initial_state") else torch.zeros_like(u)

    def forward(self, x: Tensor, z0: Tensor | None = None) -> Tensor:
        u = self.inject(x)
        z0 = self.initial_state(u) if z0 is None else z0

        f = RowMap(self.cell, u)
        if self._replay is not None:
            z = f(self._replay.pop(0))
            self.ledger.charge(REPLAY, z.shape[0])
            return z
        penalty = None
        if self.training and torch.is_grad_enabled():
            solver = self.train_solver
            if self._correction_points and self._sink is not None:
                solver = solver.replace(keep=correction_steps(solver.max_iter, self._correction_points))
            z, stats = self.backward.run(f, z0, solver, self.ledger)
            if self.jac_reg_samples > 0 and self._sink is not None:
                penalty = jacobian_penalty(f, z.detach(), self.jac_reg_samples, self._generator)
                self.ledger.charge(jacobian_penalty_cost(self.jac_reg_samples), z.shape[0])
        else:
            result = solve(f, z0, self.train_solver if self.training else self.eval_solver)
            self.ledger.charge_solve(result.stats)
            z, stats = result.z, result.stats
        if self._sink is not None:
            self._sink(z, stats, penalty)
        return z

    @contextlib.contextmanager
    def budgeted(
        self,
        max_iter: int | None,
        tol: float | None,
        backward: BackwardMode | None,
        sink: StatsSink,
        generator: torch.Generator | None,
        correction_points: int = 0,
    ) -> Iterator[None]:
        """The per-layer half of `deqfl.deq.budget.solver_budget` (call that instead): run
        at cap `max_iter` / tolerance `tol` (both solvers; None keeps them) and gradient mode
        `backward` (None keeps it), hand every call's (output, stats, penalty) to `sink`,
        draw the penalty's probes from `generator` and keep the training solves' outputs at
        `correction_points` correction steps; everything is restored on exit."""
        saved = (self.train_solver, self.eval_solver, self.backward, self._sink, self._generator, self._correction_points)
        changes = {k: v for k, v in (("max_iter", max_iter), ("tol", tol)) if v is not None}
        try:
            self.train_solver = dataclasses.replace(self.train_solver, **changes)
            self.eval_solver = dataclasses.replace(self.eval_solver, **changes)
            if backward is not None:
                self.backward = backward
            self._sink, self._generator, self._correction_points = sink, generator, correction_points
            yield
        finally:
            self.train_solver, self.eval_solver, self.backward, self._sink, self._generator, self._correction_points = saved

    @property
    def is_replaying(self) -> bool:
        """True inside `replaying`: calls answer from kept states, they solve nothing."""
        return self._replay is not None

    @contextlib.contextmanager
    def replaying(self, states: list[Tensor]) -> Iterator[None]:
        """Answer the next calls with f(z, u) from `states` in order (see the class
        docstring); the half of `deqfl.deq.budget.replaying` for one layer."""
        saved, self._replay = self._replay, list(states)
        try:
            yield
        finally:
            self._replay = saved

    def contraction(self, x: Tensor, n_iter: int = 10) -> Tensor:
        """Per-sample estimate of ||J_f||_2 at the (eval-solver) fixed point for input x."""
        with torch.no_grad():
            u = self.inject(x)
            z_star = solve(lambda z: self.cell(z, u), self.initial_state(u), self.eval_solver).z
        return contraction_estimate(lambda z: self.cell(z, u), z_star, n_iter)
