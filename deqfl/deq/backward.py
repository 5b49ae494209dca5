"""Gradient modes for a DEQ: how dL/dtheta is obtained from the fixed point z* = f(z*).

A mode is a small frozen dataclass passed as an argument (optimistix's "adjoint as an
argument", banax's backward classes). `mode.run(f, z0, solver, ledger)` returns the output
z (attached to the autograd graph) and the forward SolverStats; it counts its cell work in
`ledger` (see `deqfl.deq.accounting`). Exact gradient, for reference:
    dL/dtheta = dL/dz* (I - J)^{-1} df/dtheta,   J = df/dz at z*.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from deqfl.deq.accounting import Ledger
from deqfl.deq.solvers import Map, SolverConfig, SolverStats, solve
from deqfl.errors import ConfigError


class BackwardMode:
    """Base: forward solve without a graph, then `attach` a differentiable tail at z*."""

    name: ClassVar[str]

    def run(self, f: Map, z0: Tensor, solver: SolverConfig, ledger: Ledger) -> tuple[Tensor, SolverStats]:
        result = solve(f, z0, solver)
        ledger.forward += result.stats.nfe * z0.shape[0]
        return self.attach(f, result.z.detach(), result.stats, ledger)

    def attach(self, f: Map, z_star: Tensor, stats: SolverStats, ledger: Ledger) -> tuple[Tensor, SolverStats]:
        raise NotImplementedError


@dataclass(frozen=True)
class JFB(BackwardMode):
    """Jacobian-free backprop (Fung et al. 2022): output z = f(z*) with one differentiable
    application, so dL/dtheta = dL/dz df/dtheta ((I - J)^{-1} replaced by I). Cost: 1 forward
    + 1 vjp per batch. A descent direction when f is contractive."""

    name: ClassVar[str] = "jfb"

    def attach(self, f, z_star, stats, ledger):
        ledger.forward += z_star.shape[0]
        ledger.vjp += z_star.shape[0]
        return f(z_star), stats


@dataclass(frozen=True)
class Phantom(BackwardMode):
    """Phantom gradient (Geng et al. 2021): k damped differentiable steps from z*,
        z_0 = z*,  z_{i+1} = (1 - tau) z_i + tau f(z_i),  output z_k;
    its gradient is a truncated Neumann series of (I - J)^{-1} and tends to the exact one as
    k grows (for a contractive f). Cost: k forwards + k vjps."""

    name: ClassVar[str] = "phantom"
    k: int = 5
    tau: float = 0.5

    def __post_init__(self) -> None:
        if not isinstance(self.k, int) or self.k < 1:
            raise ConfigError(f"phantom k must be an integer >= 1, got {self.k!r}")
        if not 0 < self.tau <= 1:
            raise ConfigError(f"phantom tau must be in (0, 1], got {self.tau!r}")

    def attach(self, f, z_star, stats, ledger):
        z = z_star
        for _ in range(self.k):
            z = torch.lerp(z, f(z), self.tau) if self.tau != 1.0 else f(z)
        ledger.forward += self.k * z_star.shape[0]
        ledger.vjp += self.k * z_star.shape[0]
        return z, stats


@dataclass(frozen=True)
class Unrolled(BackwardMode):
    """Backprop through `steps` plain iterations z_{i+1} = f(z_i) from z0 (default: the
    solver's max_iter), i.e. the weight-tied `steps`-layer network; the reference gradient.
    Memory grows linearly with steps. Cost: steps forwards + steps vjps."""

    name: ClassVar[str] = "unrolled"
    steps: int | None = None

    def __post_init__(self) -> None:
        if self.steps is not None and (not isinstance(self.steps, int) or self.steps < 1):
            raise ConfigError(f"unrolled steps must be an integer >= 1 or None, got {self.steps!r}")

    def run(self, f, z0, solver, ledger):
        steps = self.steps or solver.max_iter
        batch = z0.shape[0]
        z = z0
        for _ in range(steps):
            z_prev, z = z, f(z)
        ledger.forward += steps * batch
        ledger.vjp += steps * batch
        with torch.no_grad():
            abs_res = torch.linalg.vector_norm((z - z_prev).reshape(batch, -1), dim=1)
            rel_res = abs_res / (torch.linalg.vector_norm(z.reshape(batch, -1), dim=1) + torch.finfo(z.dtype).tiny)
            measure = rel_res if solver.stop_mode == "rel" else abs_res
        stats = SolverStats(
            iterations=torch.full((batch,), steps, dtype=torch.long),
            abs_residual=abs_res,
            rel_residual=rel_res,
            converged=measure <= solver.tol,
            nfe=steps,
        )
        return z, stats


@dataclass(frozen=True)
class IFT(BackwardMode):
    """Implicit differentiation. Output z = f(z*) with a gradient hook that replaces the
    incoming g = dL/dz by the solution u of the adjoint fixed point
        u = g + J^T u   (i.e. u = (I - J^T)^{-1} g, J = df/dz at z*),
    found by `method` within max_iter vjps to relative tolerance tol, so that
    dL/dtheta = u^T df/dtheta is exact at a converged z*. When the forward mean relative
    residual exceeds fallback_threshold the gradient would be wrong, so the batch uses
    `fallback` instead (counted in stats.backward_fallbacks and ledger.backward_fallbacks).
    Cost: 2 forwards + (backward iterations + 1) vjps."""

    name: ClassVar[str] = "ift"
    max_iter: int = 30
    tol: float = 1e-4
    fallback_threshold: float = 1e-2
    fallback: BackwardMode = field(default_factory=lambda: JFB())
    method: str = "anderson"

    def __post_init__(self) -> None:
        if not self.fallback_threshold > 0:
            raise ConfigError(f"ift fallback_threshold must be > 0, got {self.fallback_threshold!r}")
        if isinstance(self.fallback, (IFT, Unrolled)) or not isinstance(self.fallback, BackwardMode):
            raise ConfigError("ift fallback must be a cheaper mode: JFB() or Phantom(...)")
        self.solver_config()  # validates max_iter, tol, method

    def solver_config(self) -> SolverConfig:
        return SolverConfig(method=self.method, max_iter=self.max_iter, tol=self.tol, stop_mode="rel")

    def attach(self, f, z_star, stats, ledger):
        batch = z_star.shape[0]
        if stats.mean_rel_residual > self.fallback_threshold:
            ledger.backward_fallbacks += 1
            return self.fallback.attach(f, z_star, dataclasses.replace(stats, backward_fallbacks=1), ledger)
        z = f(z_star)
        z_in = z_star.clone().requires_grad_()
        with torch.enable_grad():
            f_in = f(z_in)
        ledger.forward += 2 * batch
        config = self.solver_config()

        def hook(grad: Tensor) -> Tensor:
            def adjoint(u: Tensor) -> Tensor:
                (vjp,) = torch.autograd.grad(f_in, z_in, u, retain_graph=True)
                return vjp + grad

            result = solve(adjoint, torch.zeros_like(grad), config)
            ledger.vjp += (result.stats.nfe + 1) * batch
            ledger.last_backward = result.stats
            return result.z

        if z.requires_grad:
            z.register_hook(hook)
        return z, stats


MODES: dict[str, type[BackwardMode]] = {m.name: m for m in (IFT, JFB, Phantom, Unrolled)}


def make_backward(name: str, **options: Any) -> BackwardMode:
    """Build a gradient mode from a config: "ift" | "jfb" | "phantom" | "unrolled" plus its
    options (IFT's `fallback` may be given as a name, e.g. fallback="phantom")."""
    if name not in MODES:
        raise ConfigError(f"backward mode {name!r} is unknown; use one of {tuple(MODES)}")
    cls = MODES[name]
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(f"backward mode {name!r} has no option(s) {unknown}; its options are {sorted(known)}")
    if name == "ift" and isinstance(options.get("fallback"), str):
        options = {**options, "fallback": make_backward(options["fallback"])}
    return cls(**options)
