"""The gradient-mode interface, its cost contract and its registry.

A mode is a small frozen dataclass passed as an argument (optimistix's "adjoint as an
argument", banax's backward classes). `mode.run(f, z0, solver, ledger)` returns the output
z (attached to the autograd graph) and the forward SolverStats; it charges its cell work to
`ledger` (see `deqfl.deq.accounting`) through the same `Cost`s it reports in `tail_cost` /
`step_cost`, which the time-budget planner uses. Exact gradient, for reference:
    dL/dtheta = dL/dz* (I - J)^{-1} df/dtheta,   J = df/dz at z*.

Each mode is one module of this package that registers itself with `@register_backward`;
`make_backward(name, **options)` builds one from a config.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, TypeVar

from torch import Tensor

from deqfl.deq.accounting import Cost, Ledger, solve_cost
from deqfl.deq.solvers import Map, SolverConfig, SolverStats, solve
from deqfl.errors import ConfigError


class BackwardMode:
    """Base: forward solve without a graph, then `attach` a differentiable tail at z*.

    Subclasses set `name`, implement `attach` and `tail_cost` (or override `run` and
    `step_cost` when they do not start from a solved z*, as Unrolled does)."""

    name: ClassVar[str]

    def run(self, f: Map, z0: Tensor, solver: SolverConfig, ledger: Ledger) -> tuple[Tensor, SolverStats]:
        result = solve(f, z0, solver)
        ledger.charge_solve(result.stats)
        return self.attach(f, result.z.detach(), result.stats, ledger)

    def attach(self, f: Map, z_star: Tensor, stats: SolverStats, ledger: Ledger) -> tuple[Tensor, SolverStats]:
        raise NotImplementedError

    def tail_cost(self) -> Cost:
        """Per-sample cell work of `attach` and the backward pass through its output, at
        most (what `attach` charges to the ledger never exceeds it)."""
        raise NotImplementedError

    def step_cost(self, forward_cap: int) -> Cost:
        """Per-sample cell work of one training forward and backward when the forward
        solver runs to `forward_cap` evaluations: the worst case, an upper bound on what
        `run` charges with `solver.max_iter = forward_cap`."""
        return solve_cost(forward_cap) + self.tail_cost()

    @classmethod
    def from_options(cls, **options: Any) -> BackwardMode:
        """Build the mode from config options (its dataclass fields), rejecting unknown ones."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigError(f"backward mode {cls.name!r} has no option(s) {unknown}; its options are {sorted(known)}")
        return cls(**options)


Mode = TypeVar("Mode", bound=type[BackwardMode])
_REGISTRY: dict[str, type[BackwardMode]] = {}


def register_backward(cls: Mode) -> Mode:
    """Class decorator adding a gradient mode under its `name`."""
    name = cls.name
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise ValueError(f"backward mode {name!r} is already registered (by {_REGISTRY[name].__module__})")
    _REGISTRY[name] = cls
    return cls


def backward_names() -> tuple[str, ...]:
    """The registered gradient-mode names, sorted."""
    return tuple(sorted(_REGISTRY))


def get_backward(name: str) -> type[BackwardMode]:
    """The mode class registered under `name`; a ConfigError naming the valid ones otherwise."""
    if name not in _REGISTRY:
        raise ConfigError(f"backward mode {name!r} is unknown; use one of {backward_names()}")
    return _REGISTRY[name]


def make_backward(name: str, **options: Any) -> BackwardMode:
    """Build a gradient mode from a config: a registered name ("ift", "jfb", "phantom",
    "unrolled", ...) plus its options (IFT's `fallback` may be given as a name, e.g.
    fallback="phantom")."""
    return get_backward(name).from_options(**options)

