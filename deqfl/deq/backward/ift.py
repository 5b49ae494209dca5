"""Implicit differentiation (`backward="ift"`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from deqfl.deq.accounting import Cost
from deqfl.deq.backward.base import BackwardMode, get_backward, register_backward
from deqfl.deq.backward.jfb import JFB
from deqfl.deq.solvers import RowMap, SolverConfig, solve
from deqfl.errors import ConfigError

PRIMAL = Cost(forward=2)
"""The output f(z*) and the graph-holding f(z_in) the adjoint's vjps run through."""


def adjoint_cost(evaluations: int) -> Cost:
    """The adjoint solve of `evaluations` steps, one vjp each, plus the vjp of u^T df/dtheta."""
    return Cost(vjp=evaluations + 1)


@register_backward
@dataclass(frozen=True)
class IFT(BackwardMode):
    """Implicit differentiation. Output z = f(z*) with a gradient hook that replaces the
    incoming g = dL/dz by the solution u of the adjoint fixed point
        u = g + J^T u   (i.e. u = (I - J^T)^{-1} g, J = df/dz at z*),
    found by `method` within max_iter vjps to relative tolerance tol, so that
    dL/dtheta = u^T df/dtheta is exact at a converged z*. A sample whose forward relative
    residual exceeds fallback_threshold (or is not finite) would get a wrong gradient, so it
    gets `fallback`'s instead while the others keep the exact one: the two run on their own
    rows (`RowMap.rows`; for a plain map, whose rows cannot be split, the whole batch falls
    back as soon as one sample is over). Fallen-back samples are counted in
    stats.backward_fallbacks and ledger.backward_fallbacks.
    Cost per sample: 2 forwards + (backward iterations + 1) vjps, or the fallback's."""

    name: ClassVar[str] = "ift"
    max_iter: int = 30
    tol: float = 1e-4
    fallback_threshold: float = 1e-2
    fallback: BackwardMode = field(default_factory=lambda: JFB())
    method: str = "anderson"

    def __post_init__(self) -> None:
        if not self.fallback_threshold > 0:
            raise ConfigError(f"ift fallback_threshold must be > 0, got {self.fallback_threshold!r}")
        if not isinstance(self.fallback, BackwardMode) or not _attaches_without_adjoint(self.fallback):
            raise ConfigError("ift fallback must be a cheaper mode that starts from z*: JFB() or Phantom(...)")
        self.solver_config()  # validates max_iter, tol, method

    @classmethod
    def from_options(cls, **options: Any) -> IFT:
        if isinstance(options.get("fallback"), str):
            options = {**options, "fallback": get_backward(options["fallback"]).from_options()}
        return super().from_options(**options)

    def solver_config(self) -> SolverConfig:
        return SolverConfig(method=self.method, max_iter=self.max_iter, tol=self.tol, stop_mode="rel")

    def tail_cost(self) -> Cost:
        exact = PRIMAL + adjoint_cost(self.max_iter)
        cheaper = self.fallback.tail_cost()
        return exact if exact.units >= cheaper.units else cheaper

    def attach(self, f, z_star, stats, ledger):
        over = ~(stats.rel_residual <= self.fallback_threshold)  # NaN residuals are over
        fallen = int(over.sum())
        if fallen == 0:
            return self._exact(f, z_star, ledger), stats
        if not isinstance(f, RowMap):
            fallen = len(over)
        stats = dataclasses.replace(stats, backward_fallbacks=fallen)
        ledger.backward_fallbacks += fallen
        if fallen == len(over):
            return self.fallback.attach(f, z_star, stats, ledger)
        exact, cheap = (~over).nonzero()[:, 0], over.nonzero()[:, 0]
        z_exact = self._exact(f.rows(exact), z_star[exact], ledger)
        z_cheap, _ = self.fallback.attach(f.rows(cheap), z_star[cheap], stats, ledger)
        return torch.zeros_like(z_star).index_copy(0, exact, z_exact).index_copy(0, cheap, z_cheap), stats

    def _exact(self, f, z_star: Tensor, ledger) -> Tensor:
        """f(z*) with the adjoint hook: the exact gradient for every row of z_star."""
        batch = z_star.shape[0]
        z = f(z_star)
        z_in = z_star.clone().requires_grad_()
        with torch.enable_grad():
            f_in = f(z_in)
        ledger.charge(PRIMAL, batch)
        config = self.solver_config()

        def hook(grad: Tensor) -> Tensor:
            def adjoint(u: Tensor) -> Tensor:
                (vjp,) = torch.autograd.grad(f_in, z_in, u, retain_graph=True)
                return vjp + grad

            result = solve(adjoint, torch.zeros_like(grad), config)
            ledger.charge(adjoint_cost(result.stats.nfe), batch)
            ledger.last_backward = result.stats
            return result.z

        if z.requires_grad:
            z.register_hook(hook)
        return z


def _attaches_without_adjoint(mode: BackwardMode) -> bool:
    """True for a mode whose `attach` works from z* alone (not IFT, not Unrolled)."""
    return not isinstance(mode, IFT) and type(mode).attach is not BackwardMode.attach
