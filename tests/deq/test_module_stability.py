"""The DEQ module (budgets, per-call solver budgets, warm start) and stability tools."""

import copy
import io

import pytest
import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from deqfl.deq import (
    DEQ,
    JFB,
    BoundedWeightNorm,
    Phantom,
    SolverConfig,
    bounded_weight_norm,
    contraction_estimate,
    jacobian_penalty,
    solver_budget,
)
from deqfl.errors import ConfigError
from deqfl.models import build_model, federated_state, find_deq


class LinearCell(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.register_buffer("a", a)

    def forward(self, z, u):
        return z @ self.a.T + u


def nfe(deq, x, **budget):
    with solver_budget(deq, **budget) as solves:
        deq(x)
    (call,) = solves.calls
    return call.stats.nfe


def test_train_and_eval_solvers_and_budget():
    deq = DEQ(LinearCell(0.9 * torch.eye(3)), train_solver=SolverConfig(max_iter=4, tol=0), eval_solver=SolverConfig(max_iter=7, tol=0))
    x = torch.ones(2, 3)
    deq.train()
    with torch.no_grad():
        assert nfe(deq, x) == 4
    deq.eval()
    assert nfe(deq, x) == 7
    with solver_budget(deq, forward_cap=2, backward=Phantom(k=1)) as solves:
        deq(x)
        assert deq.backward == Phantom(k=1) and deq.train_solver.max_iter == 2
    assert [c.stats.nfe for c in solves.calls] == [2] and solves.calls[0].layer == "" and solves.calls[0].batch == 2
    assert deq.eval_solver.max_iter == 7 and deq.train_solver.max_iter == 4 and deq.backward == JFB()
    deq.eval_solver = SolverConfig(method="fixed_point", max_iter=3)  # a client reassigns its budget
    assert nfe(deq, x) == 3


def test_budget_restores_after_an_error():
    deq = DEQ(LinearCell(0.5 * torch.eye(3)))
    with pytest.raises(ConfigError):
        with solver_budget(deq, forward_cap=0):
            pass
    with pytest.raises(RuntimeError):
        with solver_budget(deq, forward_cap=3):
            raise RuntimeError
    assert deq.train_solver.max_iter == 16
    with solver_budget(deq) as outer:
        deq(torch.ones(1, 3))
        with solver_budget(deq, forward_cap=2) as inner:
            deq(torch.ones(1, 3))
        deq(torch.ones(1, 3))
    assert [c.stats.nfe for c in inner.calls] == [2] and len(outer.calls) == 2  # the innermost records


class TwoDEQs(nn.Module):
    """Two DEQ layers in sequence, the second with a Jacobian penalty."""

    def __init__(self):
        super().__init__()
        self.first = DEQ(TanhCell(0.5), train_solver=SolverConfig(max_iter=30, tol=1e-6))
        self.second = DEQ(TanhCell(0.3), train_solver=SolverConfig(max_iter=30, tol=1e-6), jac_reg_samples=2)

    def forward(self, x):
        return self.second(self.first(x))


class TanhCell(nn.Module):
    def __init__(self, scale):
        super().__init__()
        self.lin = nn.Linear(6, 6)
        with torch.no_grad():
            self.lin.weight.mul_(scale)

    def forward(self, z, u):
        return torch.tanh(self.lin(z) + u)


def test_budget_applies_to_every_deq_and_returns_their_stats():
    torch.manual_seed(0)
    model, x = TwoDEQs(), torch.randn(5, 6)
    with torch.no_grad(), solver_budget(model, forward_cap=3, tol=0.0) as solves:
        model.eval()(x)
    assert [(c.layer, c.batch, c.stats.nfe) for c in solves.calls] == [("first", 5, 3), ("second", 5, 3)]
    assert solves.mean_iterations == 3.0 and solves.layer("second") == [solves.calls[1]]
    assert solves.mean_rel_residual == pytest.approx(sum(c.stats.mean_rel_residual for c in solves.calls) / 2)
    assert solves.jacobian_penalty() is None  # eval forwards record no penalty
    assert all(c.fixed_point is None for c in solves.calls)
    with torch.no_grad(), solver_budget(model, keep_fixed_points=True) as solves:
        out = model(x)
    assert torch.equal(solves.calls[1].fixed_point, out) and solves.calls[0].fixed_point.shape == (5, 6)
    model.train()
    with solver_budget(model, generator=torch.Generator().manual_seed(3)) as solves:
        model(x)
    first, second = solves.calls
    assert first.jacobian_penalty is None and second.jacobian_penalty.requires_grad
    assert 0 < solves.jacobian_penalty().item() and solves.jacobian_penalty() is second.jacobian_penalty
    assert all(m.train_solver.max_iter == 30 for m in (model.first, model.second))


def test_jacobian_penalty_depends_only_on_the_generator():
    torch.manual_seed(0)
    model, x = TwoDEQs().train(), torch.randn(5, 6)

    def penalty(global_seed, seed):
        torch.manual_seed(global_seed)
        with solver_budget(model, generator=torch.Generator().manual_seed(seed)) as solves:
            model(x)
        return solves.jacobian_penalty().item()

    assert penalty(0, 1) == penalty(99, 1) != penalty(0, 2)


def test_warm_start_from_the_fixed_point_needs_one_evaluation():
    deq = DEQ(LinearCell(0.5 * torch.eye(3, dtype=torch.float64)), eval_solver=SolverConfig(tol=1e-10, max_iter=100)).eval()
    x = torch.randn(5, 3, dtype=torch.float64)
    z = deq(x)
    assert torch.allclose(z, 2 * x)
    with solver_budget(deq) as solves:
        deq(x, z0=z)
    assert solves.calls[0].stats.nfe == 1


def test_contraction_estimate_of_a_linear_map():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(6, 6, generator=g, dtype=torch.float64)
    f = lambda z: z @ a.T
    est = contraction_estimate(f, torch.zeros(3, 6, dtype=torch.float64), n_iter=200)
    assert torch.allclose(est, torch.linalg.matrix_norm(a, 2).expand(3), rtol=1e-6)


def test_jacobian_penalty_of_a_scaled_identity():
    torch.manual_seed(0)
    scale = torch.tensor(0.7, requires_grad=True)
    penalty = jacobian_penalty(lambda z: scale * z, torch.zeros(64, 256), n_samples=2)
    assert penalty.item() == pytest.approx(0.49, rel=0.03)
    penalty.backward()
    assert scale.grad.item() == pytest.approx(2 * 0.7, rel=0.03)


def test_bounded_weight_norm_bounds_the_norm_and_survives_copies():
    conv = bounded_weight_norm(nn.Conv2d(4, 4, 3), max_norm=0.5)
    with torch.no_grad():
        conv.parametrizations.weight.original0.fill_(50.0)
    assert torch.linalg.vector_norm(conv.weight) <= 0.5
    assert not list(conv.buffers())
    twin = copy.deepcopy(conv)
    x = torch.randn(2, 4, 6, 6)
    assert torch.equal(conv(x), twin(x))
    with pytest.raises(ConfigError):
        BoundedWeightNorm(0.0)


def test_normalised_deq_survives_deepcopy_and_state_dict_round_trip():
    torch.manual_seed(0)
    model = build_model("deq-mnist", (1, 8, 8)).eval()
    with torch.no_grad():  # move away from the initialisation
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x = torch.randn(8, 1, 8, 8)
    with solver_budget(model) as solves:
        out = model(x)
    assert torch.equal(copy.deepcopy(model)(x), out)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    torch.manual_seed(1)
    fresh = build_model("deq-mnist", (1, 8, 8)).eval()
    assert not torch.equal(fresh(x), out)
    fresh.load_state_dict(torch.load(buffer))
    with solver_budget(fresh) as fresh_solves:
        assert torch.equal(fresh(x), out)
    assert torch.equal(fresh_solves.calls[0].stats.iterations, solves.calls[0].stats.iterations)


def test_spectral_norm_vectors_stay_local():
    net = nn.Sequential(spectral_norm(nn.Linear(4, 4)))
    keys = list(federated_state(net))
    assert all(not k.endswith(("_u", "_v")) for k in keys) and keys == ["0.bias", "0.parametrizations.weight.original"]
    assert torch.equal(copy.deepcopy(net).eval()(torch.ones(1, 4)), net.eval()(torch.ones(1, 4)))


def test_default_classifier_cell_is_contractive_at_initialisation():
    torch.manual_seed(0)
    model = build_model("deq-mnist", (1, 28, 28)).eval()
    x = torch.randn(16, 1, 28, 28)
    deq = find_deq(model)
    assert float(deq.contraction(model.stem(x)).max()) < 1
    with solver_budget(model) as solves:
        model(x)
    assert bool(solves.calls[0].stats.converged.all())


def test_jacobian_regulariser_is_recorded_in_training_only():
    torch.manual_seed(0)
    model = build_model("deq-mnist", (1, 8, 8), jac_reg_samples=1)
    deq = find_deq(model)
    x = torch.randn(4, 1, 8, 8)
    before = deq.cell_evals
    model(x)  # outside a budget context nobody collects a penalty, so none is computed
    plain = deq.cell_evals - before
    with solver_budget(model, generator=torch.Generator().manual_seed(0)) as solves:
        model(x)
    penalty = solves.jacobian_penalty()
    assert penalty is not None and penalty.requires_grad and penalty > 0
    assert deq.cell_evals - before - plain == plain + 4 + 2 * (2 * 1 * 4)  # penalty: 1 forward + 2k vjps per sample
    penalty.backward()
    assert deq.cell.conv1.parametrizations.weight.original1.grad is not None
    model.eval()
    with solver_budget(model) as solves:
        model(x)
    assert solves.jacobian_penalty() is None
