"""Fixed-point correction: kept solver outputs, the replayed forward and the loss term."""

import pytest
import torch
from torch import nn

from deqfl.deq import DEQ, JFB, SolverConfig, replaying, solve, solver_budget, solver_names
from deqfl.deq.accounting import REPLAY, correction_cost, correction_steps
from deqfl.errors import ConfigError
from deqfl.fl.client.loss_terms import FixedPointCorrection, LossInputs, check_deq_terms, default_loss_terms
from deqfl.fl.client.task import TrainOptions


def test_correction_steps_by_hand():
    assert correction_steps(8, 2) == (2, 5)
    assert correction_steps(4, 2) == (1, 2)
    assert correction_steps(2, 2) == (1,)
    assert correction_steps(1, 2) == ()
    assert correction_steps(12, 3) == (3, 6, 9)
    assert correction_cost(8, 2) == REPLAY + REPLAY
    assert correction_cost(8, 0).units == 0


@pytest.mark.parametrize("method", solver_names())
def test_kept_outputs_are_those_of_solves_capped_there(method, spread_problem):
    f, z0, _ = spread_problem()
    config = SolverConfig(method=method, max_iter=60, tol=1e-4)
    full = solve(f, z0, config.replace(keep=(2, 5, 59, 80)))
    capped = [solve(f, z0, config.replace(max_iter=j)).z for j in (2, 5, 59)]
    assert full.stats.nfe < 59  # every sample converged before the last two points
    for kept, expected in zip(full.stats.kept, [*capped, full.z]):
        assert torch.equal(kept, expected)
    assert torch.equal(full.z, solve(f, z0, config).z)


class Line(nn.Module):
    """f(z, u) = a z + u with u = W x (a scalar a): after j plain steps from 0 the solver's
    output is s_j u, s_j = 1 + a + ... + a^(j-1)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.tensor(0.5, dtype=torch.float64))
        self.w = nn.Parameter(torch.randn(3, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64))

    def inject(self, x):
        return x @ self.w.T

    def forward(self, z, u):
        return self.a * z + u


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.deq = DEQ(Line(), train_solver=SolverConfig(method="fixed_point", max_iter=8, tol=0.0), backward=JFB())
        self.head = nn.Linear(3, 4, dtype=torch.float64)

    def forward(self, x):
        return self.head(self.deq(x))


def test_the_correction_term_by_hand():
    torch.manual_seed(0)
    model = Model().train()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(5, 2, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (5,), generator=g)
    with solver_budget(model, forward_cap=4, correction_points=2) as solves:
        logits = model(x)
    assert solves.correction_points == 2  # steps 1 and 2 of cap 4
    model.deq.reset_counters()
    term = FixedPointCorrection(0.3, model)
    value = term(LossInputs(logits, y, {}, {}, solves, None, inputs=x))
    assert model.deq.ledger.forward == model.deq.ledger.vjp == 2 * len(x)  # one REPLAY per point
    grads = torch.autograd.grad(value, list(model.parameters()))
    # by hand: the head of f(z_j, u) = a z_j + u, z_j = s_j u held fixed (no gradient through it)
    a, u = model.deq.cell.a, x @ model.deq.cell.w.T
    losses = []
    for j in (1, 2):
        z_j = (sum(0.5**i for i in range(j)) * u).detach()
        losses.append(nn.functional.cross_entropy(model.head(a * z_j + u), y))
    expected = 0.3 * (losses[0] + losses[1]) / 2
    assert torch.allclose(value, expected, rtol=1e-12)
    for got, want in zip(grads, torch.autograd.grad(expected, list(model.parameters()))):
        assert torch.allclose(got, want, rtol=1e-10, atol=1e-14)


def test_replaying_answers_each_call_without_solving():
    model = Model().train()
    x = torch.randn(3, 2, dtype=torch.float64)
    with solver_budget(model, forward_cap=8, correction_points=3) as solves:
        model(x)
    kept = solves.calls[0].stats.kept
    assert len(kept) == 3
    with replaying(model, solves, 1):
        z = model.deq(x)
    assert torch.allclose(z, model.deq.cell(kept[1], model.deq.inject(x)))


def test_the_term_is_off_by_default_and_needs_a_deq():
    options = TrainOptions(lr=0.1, momentum=0.0, weight_decay=0.0, batch_size=4, proximal_mu=0.0, residual_samples=4)
    assert options.active_correction_points == 0
    assert not any(isinstance(t, FixedPointCorrection) for t in default_loss_terms(options, Model()))
    on = TrainOptions(**{**options.__dict__, "fixed_point_correction": 0.5, "correction_points": 3})
    assert on.active_correction_points == 3
    assert any(isinstance(t, FixedPointCorrection) for t in default_loss_terms(on, Model()))
    assert not any(isinstance(t, FixedPointCorrection) for t in default_loss_terms(on, nn.Linear(2, 2)))
    check_deq_terms(0.5, Model(), "m")  # a DEQ: accepted
    check_deq_terms(0.0, nn.Linear(2, 2), "linear")  # off: accepted
    with pytest.raises(ConfigError, match="train.fixed_point_correction = 0.5 needs a DEQ model, but model.name = 'linear'"):
        check_deq_terms(0.5, nn.Linear(2, 2), "linear")
