"""Deep equilibrium core: solvers, gradient modes, the DEQ module and stability control."""

from deqfl.deq.accounting import Cost, Ledger
from deqfl.deq.backward import (
    IFT,
    JFB,
    BackwardMode,
    Phantom,
    Unrolled,
    backward_names,
    make_backward,
    register_backward,
)
from deqfl.deq.budget import DEQCall, SolveRecord, deq_layers, replaying, solver_budget
from deqfl.deq.module import DEQ
from deqfl.deq.solvers import (
    SolverConfig,
    SolverResult,
    SolverStats,
    anderson,
    broyden,
    fixed_point,
    register_solver,
    solve,
    solver_names,
)
from deqfl.deq.stability import (
    BoundedWeightNorm,
    bounded_weight_norm,
    contraction_estimate,
    jacobian_penalty,
)

__all__ = [
    "DEQ",
    "DEQCall",
    "IFT",
    "JFB",
    "BackwardMode",
    "BoundedWeightNorm",
    "Cost",
    "Ledger",
    "Phantom",
    "SolveRecord",
    "SolverConfig",
    "SolverResult",
    "SolverStats",
    "Unrolled",
    "anderson",
    "backward_names",
    "bounded_weight_norm",
    "broyden",
    "contraction_estimate",
    "deq_layers",
    "fixed_point",
    "jacobian_penalty",
    "make_backward",
    "register_backward",
    "register_solver",
    "replaying",
    "solve",
    "solver_budget",
    "solver_names",
]
