"""Solver budgets applied per call to every DEQ layer of a model, with returned statistics.

    with solver_budget(model, forward_cap=8, tol=1e-3, backward=Phantom(k=2), generator=g) as solves:
        logits = model(x)
    solves.mean_iterations, solves.mean_rel_residual, solves.jacobian_penalty(), solves.calls

Inside the context every `DEQ` of `model` runs with forward cap `forward_cap` and tolerance
`tol` (both solvers; None keeps the layer's own value) and gradient mode `backward` (None
keeps the layer's own); on exit every layer gets its own settings back, also after an
error. Each forward call of each layer appends a `DEQCall` to the yielded `SolveRecord`;
nothing is read back from the module. A training forward (training mode, grad enabled) of
a layer with `jac_reg_samples` k > 0 also records the Hutchinson estimate of
||J_f(z*)||_F^2 / dim with k probes (with graph, for a loss term), its probes drawn from
`generator` (the global RNG when None). Contexts nest: the innermost one sets the budget
and receives the calls.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from deqfl.deq.backward import BackwardMode
from deqfl.deq.module import DEQ
from deqfl.deq.solvers import SolverStats


@dataclass(frozen=True)
class DEQCall:
    """One forward call of one DEQ layer."""

    layer: str
    """The layer's qualified name in the model ("" when the model is the DEQ)."""
    batch: int
    """Samples in the call."""
    stats: SolverStats
    """The forward solve's statistics (detached)."""
    jacobian_penalty: Tensor | None
    """Hutchinson estimate of ||J_f(z*)||_F^2 / dim (with graph); None unless requested."""
    fixed_point: Tensor | None = None
    """The layer's output z (detached), with `keep_fixed_points=True` only."""


@dataclass
class SolveRecord:
    """The calls made under one `solver_budget` context, in call order."""

    calls: list[DEQCall] = field(default_factory=list)

    def layer(self, name: str) -> list[DEQCall]:
        """The calls of the layer named `name`."""
        return [c for c in self.calls if c.layer == name]

    @property
    def correction_points(self) -> int:
        """Kept outputs every call has (`DEQCall.stats.kept`); 0 without calls."""
        return min((len(c.stats.kept) for c in self.calls), default=0)

    @property
    def mean_iterations(self) -> float:
        """Mean over calls of each call's mean per-sample iterations (0.0 without calls)."""
        if not self.calls:
            return 0.0
        return sum(float(c.stats.mean_iterations) for c in self.calls) / len(self.calls)

    @property
    def mean_rel_residual(self) -> float:
        """Mean over calls of each call's mean relative residual (0.0 without calls)."""
        if not self.calls:
            return 0.0
        return sum(float(c.stats.mean_rel_residual) for c in self.calls) / len(self.calls)

    def jacobian_penalty(self) -> Tensor | None:
        """Sum of the recorded Jacobian penalties (with graph), None when none was recorded."""
        terms = [c.jacobian_penalty for c in self.calls if c.jacobian_penalty is not None]
        if not terms:
            return None
        total = terms[0]
        for term in terms[1:]:
            total = total + term
        return total


def deq_layers(model: nn.Module) -> list[tuple[str, DEQ]]:
    """Every DEQ of `model` (the model itself included) with its qualified name."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, DEQ)]


@contextlib.contextmanager
def solver_budget(
    model: nn.Module,
    forward_cap: int | None = None,
    tol: float | None = None,
    backward: BackwardMode | None = None,
    generator: torch.Generator | None = None,
    keep_fixed_points: bool = False,
    correction_points: int = 0,
) -> Iterator[SolveRecord]:
    """Run every DEQ of `model` at this budget and collect its calls (module docstring);
    with `keep_fixed_points` each call also keeps the layer's output z (detached; memory
    grows with the calls), with `correction_points` n > 0 each training solve its outputs
    at the n correction steps. A model without DEQ layers runs unchanged and records
    nothing."""
    record = SolveRecord()
    with contextlib.ExitStack() as stack:
        for name, deq in deq_layers(model):
            sink = _Sink(name, record, keep_fixed_points)
            stack.enter_context(deq.budgeted(forward_cap, tol, backward, sink, generator, correction_points))
        yield record


@contextlib.contextmanager
def replaying(model: nn.Module, record: SolveRecord, point: int) -> Iterator[None]:
    """Every DEQ of `model` answers its calls, in the order `record` holds them, with one
    differentiable cell application f(z_j, u) from the output z_j its solve kept at
    correction step number `point` (`DEQCall.stats.kept[point]`, point <
    `record.correction_points`) instead of solving; u is injected from the new call's input."""
    with contextlib.ExitStack() as stack:
        for name, deq in deq_layers(model):
            stack.enter_context(deq.replaying([c.stats.kept[point] for c in record.layer(name)]))
        yield


@dataclass(frozen=True)
class _Sink:
    layer: str
    record: SolveRecord
    keep_fixed_points: bool

    def __call__(self, z: Tensor, stats: SolverStats, penalty: Tensor | None) -> None:
        fixed_point = z.detach() if self.keep_fixed_points else None
        self.record.calls.append(DEQCall(self.layer, z.shape[0], stats, penalty, fixed_point))
