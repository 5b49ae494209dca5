"""Solvers and gradient modes are registries: a new one is a decorated function or class."""

import pkgutil
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch

import deqfl.deq.backward as backward_pkg
import deqfl.deq.solvers as solvers_pkg
from deqfl.deq import DEQ, SolverConfig, make_backward, solve
from deqfl.deq.accounting import Cost
from deqfl.deq.backward import BackwardMode, backward_names, register_backward
from deqfl.deq.backward import base as backward_base
from deqfl.deq.solvers import SolverResult, Tracker, FlatLayout, register_solver, solver_names
from deqfl.deq.solvers import base as solver_base
from deqfl.errors import ConfigError


def test_every_module_of_the_packages_registers_itself():
    assert solver_names() == ("anderson", "broyden", "fixed_point")
    assert backward_names() == ("ift", "jfb", "phantom", "unrolled")
    modules = {m.name for m in pkgutil.iter_modules(solvers_pkg.__path__)} - {"base"}
    assert modules == set(solver_names())
    modules = {m.name for m in pkgutil.iter_modules(backward_pkg.__path__)} - {"base"}
    assert modules == set(backward_names())


def test_unknown_names_are_config_errors_naming_the_choices():
    with pytest.raises(ConfigError, match=r"'newton' is unknown; use one of \('anderson', 'broyden', 'fixed_point'\)"):
        SolverConfig(method="newton")
    with pytest.raises(ConfigError, match=r"'adjoint' is unknown; use one of \('ift', 'jfb', 'phantom', 'unrolled'\)"):
        make_backward("adjoint")
    with pytest.raises(ConfigError, match=r"has no option\(s\) \['k'\]"):
        make_backward("jfb", k=3)


@pytest.fixture
def scratch_registries():
    solvers, modes = dict(solver_base._REGISTRY), dict(backward_base._REGISTRY)
    yield
    solver_base._REGISTRY.clear()
    solver_base._REGISTRY.update(solvers)
    backward_base._REGISTRY.clear()
    backward_base._REGISTRY.update(modes)


def test_a_registered_solver_is_selected_by_name(scratch_registries):
    @register_solver("halving")
    @torch.no_grad()
    def halving(f, z0, config, trace=False) -> SolverResult:
        """x_{k+1} = (x_k + f(x_k)) / 2."""
        layout = FlatLayout(z0)
        fl, x = layout.map(f), layout.flat(z0)
        tracker = Tracker(x.shape[0], config, trace, x)
        while True:
            fx = fl(x)
            tracker.update(x, fx)
            if not tracker.running():
                return tracker.result(layout)
            x = 0.5 * (x + fx)

    assert "halving" in solver_names()
    result = solve(lambda z: 0.5 * z + 1.0, torch.zeros(3, 2), SolverConfig(method="halving", max_iter=100, tol=1e-6))
    assert torch.allclose(result.z, torch.full((3, 2), 2.0), atol=1e-4)
    assert bool(result.stats.converged.all())
    with pytest.raises(ValueError, match="already registered"):
        register_solver("halving")(lambda f, z0, config, trace=False: None)


class Shrink(torch.nn.Module):
    """f(z, x) = tanh(0.3 z + x): contractive, no parameters."""

    def forward(self, z, x):
        return torch.tanh(0.3 * z + x)


def test_a_registered_gradient_mode_is_built_by_name_and_costed(scratch_registries):
    @register_backward
    @dataclass(frozen=True)
    class Twice(BackwardMode):
        """Two differentiable applications from z*."""

        name: ClassVar[str] = "twice"

        def tail_cost(self) -> Cost:
            return Cost(forward=2, vjp=2)

        def attach(self, f, z_star, stats, ledger):
            ledger.charge(self.tail_cost(), z_star.shape[0])
            return f(f(z_star)), stats

    mode = make_backward("twice")
    assert isinstance(mode, Twice) and "twice" in backward_names()
    deq = DEQ(Shrink(), train_solver=SolverConfig(max_iter=3, tol=0.0), backward=mode)
    deq.train()
    deq(torch.randn(5, 4, requires_grad=True)).sum().backward()
    assert deq.cell_evals == 5 * mode.step_cost(3).units == 5 * (3 + 2 + 2 * 2)
    with pytest.raises(ValueError, match="already registered"):
        register_backward(type("Other", (Twice,), {}))
