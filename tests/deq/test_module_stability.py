"""The DEQ module (budgets, override, warm start) and stability tools."""

import copy
import io

import pytest
import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from deqfl.deq import DEQ, JFB, BoundedWeightNorm, Phantom, SolverConfig, bounded_weight_norm, contraction_estimate, jacobian_penalty
from deqfl.errors import ConfigError
from deqfl.models import build_model, federated_state, find_deq


class LinearCell(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.register_buffer("a", a)

    def forward(self, z, u):
        return z @ self.a.T + u


def test_train_and_eval_solvers_and_override():
    deq = DEQ(LinearCell(0.9 * torch.eye(3)), train_solver=SolverConfig(max_iter=4, tol=0), eval_solver=SolverConfig(max_iter=7, tol=0))
    x = torch.ones(2, 3)
    deq.train()
    with torch.no_grad():
        deq(x)
    assert deq.last_stats.nfe == 4
    deq.eval()
    deq(x)
    assert deq.last_stats.nfe == 7
    with deq.override(max_iter=2, backward=Phantom(k=1)):
        deq(x)
        assert deq.last_stats.nfe == 2 and deq.backward == Phantom(k=1)
        assert deq.train_solver.max_iter == 2
    assert deq.eval_solver.max_iter == 7 and deq.train_solver.max_iter == 4 and deq.backward == JFB()
    deq.eval_solver = SolverConfig(method="fixed_point", max_iter=3)  # a client reassigns its budget
    deq(x)
    assert deq.last_stats.nfe == 3


def test_override_restores_after_an_error():
    deq = DEQ(LinearCell(0.5 * torch.eye(3)))
    with pytest.raises(ConfigError):
        with deq.override(max_iter=0):
            pass
    with pytest.raises(RuntimeError):
        with deq.override(max_iter=3):
            raise RuntimeError
    assert deq.train_solver.max_iter == 16


def test_warm_start_from_the_fixed_point_needs_one_evaluation():
    deq = DEQ(LinearCell(0.5 * torch.eye(3, dtype=torch.float64)), eval_solver=SolverConfig(tol=1e-10, max_iter=100)).eval()
    x = torch.randn(5, 3, dtype=torch.float64)
    z = deq(x)
    assert torch.allclose(z, 2 * x)
    deq(x, z0=z)
    assert deq.last_stats.nfe == 1


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
    out = model(x)
    assert torch.equal(copy.deepcopy(model)(x), out)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    torch.manual_seed(1)
    fresh = build_model("deq-mnist", (1, 8, 8)).eval()
    assert not torch.equal(fresh(x), out)
    fresh.load_state_dict(torch.load(buffer))
    assert torch.equal(fresh(x), out)
    assert torch.equal(find_deq(fresh).last_stats.iterations, find_deq(model).last_stats.iterations)


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
    model(x)
    assert bool(deq.last_stats.converged.all())


def test_jacobian_regulariser_is_exposed_in_training_only():
    torch.manual_seed(0)
    model = build_model("deq-mnist", (1, 8, 8), jac_reg_samples=1)
    deq = find_deq(model)
    x = torch.randn(4, 1, 8, 8)
    model(x)
    assert deq.jacobian_loss is not None and deq.jacobian_loss.requires_grad and deq.jacobian_loss > 0
    deq.jacobian_loss.backward()
    assert deq.cell.conv1.parametrizations.weight.original1.grad is not None
    model.eval()
    model(x)
    assert deq.jacobian_loss is None
