"""What every solver shares: its config, statistics, result, bookkeeping and registry.

Every solver is a pure function `solver(f, z0, config, trace=False) -> SolverResult` over a
closure `f` that maps a batch `(B, ...)` to a batch of the same shape, registered under its
`config.method` name with `@register_solver(name)` (one file per solver in this package);
`solve` dispatches by name. Samples must not interact through `f` (GroupNorm, convolutions
and per-sample maps are fine; BatchNorm is not). `f` may be a `RowMap` (the DEQ passes one),
which can also be evaluated on a subset of the rows.

Contract shared by all solvers:

* One *evaluation* is one call of `f`; `stats.nfe` counts them and `config.max_iter` caps
  them (the first evaluation, f(z0), counts). A call covers the whole batch, or only the
  rows of samples not yet converged when `f` is a `RowMap` (`Tracker.evaluate`);
  `stats.evaluations` counts the sample-evaluations actually made (rows passed to f).
* For an iterate x the residuals are  abs = ||f(x) - x||_2  and
  rel = ||f(x) - x||_2 / (||f(x)||_2 + eps), per sample over all non-batch dimensions.
* A sample is converged once its residual in `config.stop_mode` is <= `config.tol`; from then
  on it stops changing (its output and statistics are frozen), and the solve ends as soon as
  every sample is converged or the cap is reached.
* The returned z holds, per sample, f(x) for the iterate x with the lowest residual seen
  while the sample was active; `stats` reports that iterate's residuals.
* No autograd graph is built: solvers run under `torch.no_grad()` (differentiation is the
  job of `deqfl.deq.backward`). They work in the dtype of z0 (float32 or float64).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from deqfl.errors import ConfigError

Map = Callable[[Tensor], Tensor]

Solver = Callable[[Map, Tensor, "SolverConfig", bool], "SolverResult"]


class RowMap:
    """z -> fn(z, context) for a per-sample `context` (a tensor, or a tuple of tensors,
    indexed along dim 0 like z), evaluable on a subset of the rows:
        RowMap(fn, c).rows(index)(z[index]) == RowMap(fn, c)(z)[index]
    for a 1-D long tensor `index`, because samples do not interact. The DEQ hands its cell
    with the input injection as one, so solvers skip converged samples and gradient modes
    treat samples apart."""

    def __init__(self, fn: Callable[[Tensor, Any], Tensor], context: Any) -> None:
        self.fn = fn
        self.context = context

    def __call__(self, z: Tensor) -> Tensor:
        return self.fn(z, self.context)

    def rows(self, index: Tensor) -> RowMap:
        """The map restricted to the rows `index` (advanced indexing keeps channels_last)."""
        context = tuple(c[index] for c in self.context) if isinstance(self.context, tuple) else self.context[index]
        return RowMap(self.fn, context)
STOP_MODES = ("rel", "abs")
_REGISTRY: dict[str, Solver] = {}


def register_solver(name: str) -> Callable[[Solver], Solver]:
    """Decorator adding `solver(f, z0, config, trace=False) -> SolverResult` under `name`
    (the `SolverConfig.method` that selects it)."""

    def decorate(solver: Solver) -> Solver:
        if name in _REGISTRY and _REGISTRY[name] is not solver:
            raise ValueError(f"solver {name!r} is already registered (by {_REGISTRY[name].__module__})")
        _REGISTRY[name] = solver
        return solver

    return decorate


def solver_names() -> tuple[str, ...]:
    """The registered solver names, sorted."""
    return tuple(sorted(_REGISTRY))


def get_solver(name: str) -> Solver:
    """The solver registered under `name`; a ConfigError naming the valid ones otherwise."""
    if name not in _REGISTRY:
        raise ConfigError(f"solver method {name!r} is unknown; use one of {solver_names()}")
    return _REGISTRY[name]


@dataclass(frozen=True)
class SolverConfig:
    """Which solver runs and how much work it may do.

    method: a registered solver name (`solver_names()`: "anderson", "broyden", "fixed_point").
    max_iter: cap on f-evaluations (>= 1).  tol: stopping tolerance (>= 0; 0 = run to the cap).
    stop_mode: "rel" or "abs" residual (see module docstring).
    m: Anderson memory (past iterates mixed).  lam: Anderson ridge, relative to the mean squared
    residual norm held in memory (scale-free).  beta: Anderson mixing,
    x_{k+1} = beta * sum_i a_i f(x_i) + (1 - beta) * sum_i a_i x_i.
    damping: fixed-point step x_{k+1} = (1 - damping) x_k + damping f(x_k).
    keep: evaluation counts j at which the solve keeps its current output, the z it would
    return with max_iter = j (`SolverStats.kept`, in this order); () keeps none.
    """

    method: str = "anderson"
    max_iter: int = 16
    tol: float = 1e-3
    stop_mode: str = "rel"
    m: int = 5
    lam: float = 1e-4
    beta: float = 1.0
    damping: float = 1.0
    keep: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        get_solver(self.method)  # a ConfigError naming the registered solvers
        if self.stop_mode not in STOP_MODES:
            raise ConfigError(f"solver stop_mode {self.stop_mode!r} is unknown; use one of {STOP_MODES}")
        if not isinstance(self.max_iter, int) or isinstance(self.max_iter, bool) or self.max_iter < 1:
            raise ConfigError(f"solver max_iter must be an integer >= 1, got {self.max_iter!r}")
        if not isinstance(self.m, int) or isinstance(self.m, bool) or self.m < 1:
            raise ConfigError(f"solver memory m must be an integer >= 1, got {self.m!r}")
        if not self.tol >= 0:
            raise ConfigError(f"solver tol must be >= 0, got {self.tol!r}")
        if not self.lam >= 0:
            raise ConfigError(f"solver ridge lam must be >= 0, got {self.lam!r}")
        if not 0 < self.beta <= 1:
            raise ConfigError(f"solver mixing beta must be in (0, 1], got {self.beta!r}")
        if not 0 < self.damping <= 1:
            raise ConfigError(f"solver damping must be in (0, 1], got {self.damping!r}")
        if not all(isinstance(j, int) and not isinstance(j, bool) and j >= 1 for j in self.keep):
            raise ConfigError(f"solver keep must hold evaluation counts >= 1, got {self.keep!r}")

    def replace(self, **changes) -> SolverConfig:
        """A copy with `changes` applied (validated again)."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class SolverStats:
    """What one solve did, per sample (tensors of shape (B,)) and in total.

    iterations: f-evaluations each sample used before it converged (or max_iter).
    abs_residual / rel_residual: residuals of the returned iterate.  converged: tol reached.
    nfe: calls of f performed (each on the whole batch or on its active rows).
    evaluations: sample-evaluations performed, the rows passed to f summed over its calls
    (nfe * B when every call covers the whole batch; what the ledger charges).
    singular: sample-steps where the Anderson/Broyden update was singular or not finite and a
    plain fixed-point step was taken instead.
    backward_fallbacks: samples whose gradient came from the gradient mode's cheaper fallback
    (IFT, for samples whose forward residual is over its threshold), else 0.
    abs_trace / rel_trace: (nfe, B) residuals of each sample's current returned iterate after
    every evaluation (frozen once converged), only with trace=True.
    kept: for each count j of `SolverConfig.keep`, the z the solve would have returned with
    max_iter = j (its output after j evaluations, or its final output if it stopped sooner).
    """

    iterations: Tensor
    abs_residual: Tensor
    rel_residual: Tensor
    converged: Tensor
    nfe: int
    evaluations: int
    singular: int = 0
    backward_fallbacks: int = 0
    abs_trace: Tensor | None = None
    rel_trace: Tensor | None = None
    kept: tuple[Tensor, ...] = ()

    @property
    def mean_iterations(self) -> float:
        return float(self.iterations.double().mean())

    @property
    def mean_abs_residual(self) -> float:
        return float(self.abs_residual.double().mean())

    @property
    def mean_rel_residual(self) -> float:
        return float(self.rel_residual.double().mean())

    @property
    def converged_fraction(self) -> float:
        return float(self.converged.double().mean())


@dataclass(frozen=True)
class SolverResult:
    z: Tensor
    stats: SolverStats


class Tracker:
    """Per-sample bookkeeping: best iterate, residuals, convergence, iteration counts."""

    def __init__(self, batch: int, config: SolverConfig, trace: bool, like: Tensor) -> None:
        self.config = config
        self.best_z = torch.zeros_like(like)
        self.best = torch.full((batch,), float("inf"), dtype=like.dtype, device=like.device)
        self.abs = torch.full_like(self.best, float("inf"))
        self.rel = torch.full_like(self.best, float("inf"))
        self.iterations = torch.zeros(batch, dtype=torch.long, device=like.device)
        self.converged = torch.zeros(batch, dtype=torch.bool, device=like.device)
        self.active = torch.ones(batch, dtype=torch.bool, device=like.device)
        self.nfe = 0
        self.evaluations = 0
        self.singular = 0
        self.trace: list[tuple[Tensor, Tensor]] | None = [] if trace else None
        self.kept: dict[int, Tensor] = {}
        self.eps = torch.finfo(like.dtype).tiny

    def evaluate(self, f: Map, layout: FlatLayout, x: Tensor, previous: Tensor | None = None) -> Tensor:
        """fx = f(x) for flat (B, d) iterates x, recorded with `update`. When `f` is a
        `RowMap`, `previous` is given and some sample has converged, only the active rows are
        evaluated and the rows of converged samples hold `previous` (the solver must not
        read them: they are frozen and never evaluated again)."""
        if previous is None or not isinstance(f, RowMap) or bool(self.active.all()):
            fx = layout.flat(f(layout.unflat(x)))
            self.update(x, fx)
            return fx
        index = self.active.nonzero()[:, 0]
        fx = previous.index_copy(0, index, layout.flat(f.rows(index)(layout.unflat(x[index]))))
        self.update(x, fx, rows=len(index))
        return fx

    def update(self, x: Tensor, fx: Tensor, rows: int | None = None) -> None:
        """Record the evaluation fx = f(x) of flat (B, d) iterates, made on `rows` rows
        (default: the whole batch)."""
        self.nfe += 1
        self.evaluations += x.shape[0] if rows is None else rows
        abs_res = torch.linalg.vector_norm(fx - x, dim=1)
        rel_res = abs_res / (torch.linalg.vector_norm(fx, dim=1) + self.eps)
        measure = rel_res if self.config.stop_mode == "rel" else abs_res
        better = self.active & ~(measure >= self.best)  # NaN never counts as better
        self.best_z = torch.where(better[:, None], fx, self.best_z)
        self.best = torch.where(better, measure, self.best)
        self.abs = torch.where(better, abs_res, self.abs)
        self.rel = torch.where(better, rel_res, self.rel)
        self.iterations += self.active
        self.converged |= self.active & (measure <= self.config.tol)
        self.active &= ~self.converged
        if self.trace is not None:
            self.trace.append((self.abs.clone(), self.rel.clone()))
        if self.nfe in self.config.keep:
            self.kept[self.nfe] = self.best_z

    def running(self) -> bool:
        return self.nfe < self.config.max_iter and bool(self.active.any())

    def result(self, layout: FlatLayout) -> SolverResult:
        traces = {}
        if self.trace is not None:
            traces = {
                "abs_trace": torch.stack([a for a, _ in self.trace]),
                "rel_trace": torch.stack([r for _, r in self.trace]),
            }
        stats = SolverStats(
            iterations=self.iterations,
            abs_residual=self.abs,
            rel_residual=self.rel,
            converged=self.converged,
            nfe=self.nfe,
            evaluations=self.evaluations,
            singular=self.singular,
            kept=tuple(layout.unflat(self.kept.get(j, self.best_z)) for j in self.config.keep),
            **traces,
        )
        return SolverResult(layout.unflat(self.best_z), stats)


class FlatLayout:
    """Flat (B, d) view of a batch of states, following z0's memory layout: a channels_last
    4-D state is flattened in NHWC order, so neither flattening nor the cell (which then
    receives channels_last tensors, the fast path of CPU convolutions) copies. Norms, and so
    every residual, do not depend on the order."""

    def __init__(self, z0: Tensor) -> None:
        self.shape = z0.shape
        self.nhwc = z0.dim() == 4 and z0.shape[1] > 1 and z0.is_contiguous(memory_format=torch.channels_last) and not z0.is_contiguous()

    def flat(self, z: Tensor) -> Tensor:
        return (z.permute(0, 2, 3, 1) if self.nhwc else z).reshape(z.shape[0], -1)

    def unflat(self, x: Tensor) -> Tensor:
        """The states of flat rows x (the whole batch or some of its rows)."""
        if self.nhwc:
            _, c, h, w = self.shape
            return x.view(x.shape[0], h, w, c).permute(0, 3, 1, 2)
        return x.view(x.shape[0], *self.shape[1:])

    def map(self, f: Map) -> Map:
        return lambda x: self.flat(f(self.unflat(x)))


def solve(f: Map, z0: Tensor, config: SolverConfig, trace: bool = False) -> SolverResult:
    """Run the solver named by `config.method` (see the module docstring for the contract)."""
    return get_solver(config.method)(f, z0, config, trace)
