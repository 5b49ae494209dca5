"""Batched fixed-point solvers: find z* with z* = f(z*), one independent problem per sample.

`solve(f, z0, config)` runs the solver named by `config.method`. The contract every solver
keeps, and the shared types, are in `deqfl.deq.solvers.base`. Each solver is one module of
this package that registers itself with `@register_solver(name)`; every module here is
imported with the package, so adding a solver is adding one file (docs/EXTENDING.md).
"""

import importlib
import pkgutil

from deqfl.deq.solvers.base import (
    STOP_MODES,
    FlatLayout,
    Map,
    RowMap,
    Solver,
    SolverConfig,
    SolverResult,
    SolverStats,
    Tracker,
    get_solver,
    register_solver,
    solve,
    solver_names,
)

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

from deqfl.deq.solvers.anderson import anderson  # noqa: E402
from deqfl.deq.solvers.broyden import broyden  # noqa: E402
from deqfl.deq.solvers.fixed_point import fixed_point  # noqa: E402

__all__ = [
    "STOP_MODES",
    "FlatLayout",
    "Map",
    "RowMap",
    "Solver",
    "SolverConfig",
    "SolverResult",
    "SolverStats",
    "Tracker",
    "anderson",
    "broyden",
    "fixed_point",
    "get_solver",
    "register_solver",
    "solve",
    "solver_names",
]
