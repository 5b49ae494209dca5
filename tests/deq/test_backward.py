"""Gradient modes against backprop through 200 unrolled iterations (float64)."""

import pytest
import torch
from torch import nn

from deqfl.deq import DEQ, IFT, JFB, Phantom, SolverConfig, Unrolled, make_backward, solver_budget
from deqfl.errors import ConfigError

DIM, IN, BATCH = 12, 5, 4


class TanhCell(nn.Module):
    """f(z, x) = tanh(W z + U x + b) with ||W||_2 = 0.5: contractive."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        w = torch.randn(DIM, DIM, generator=g, dtype=torch.float64)
        self.w = nn.Parameter(0.5 * w / torch.linalg.matrix_norm(w, 2))
        self.u = nn.Parameter(torch.randn(DIM, IN, generator=g, dtype=torch.float64))
        self.b = nn.Parameter(torch.randn(DIM, generator=g, dtype=torch.float64))

    def inject(self, x):
        return x @ self.u.T + self.b

    def initial_state(self, u):
        return torch.zeros_like(u)

    def forward(self, z, u):
        return torch.tanh(z @ self.w.T + u)


EXACT = SolverConfig(method="anderson", max_iter=200, tol=1e-13)


def gradients(backward, solver=EXACT):
    torch.manual_seed(0)
    deq = DEQ(TanhCell(), train_solver=solver, backward=backward)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(BATCH, IN, generator=g, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(BATCH, DIM, generator=g, dtype=torch.float64)
    (deq(x) * weights).sum().backward()
    return torch.cat([p.grad.flatten() for p in deq.parameters()] + [x.grad.flatten()]), deq


def rel_error(a, b):
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


@pytest.fixture(scope="module")
def reference():
    return gradients(Unrolled(steps=200))[0]


def test_ift_matches_unrolled_backprop(reference):
    grad, deq = gradients(IFT(max_iter=200, tol=1e-13))
    assert rel_error(grad, reference) <= 1e-6
    assert deq.ledger.backward_fallbacks == 0
    assert deq.ledger.last_backward.converged.all()


def test_phantom_approaches_ift_as_k_grows(reference):
    errors = [rel_error(gradients(Phantom(k=k, tau=0.5))[0], reference) for k in (1, 4, 16, 64)]
    assert errors == sorted(errors, reverse=True)
    assert errors[-1] < 1e-6 < errors[0]


def test_jfb_is_a_descent_direction(reference):
    grad = gradients(JFB())[0]
    cosine = float(grad @ reference / (grad.norm() * reference.norm()))
    assert cosine > 0
    assert rel_error(grad, reference) > 1e-3  # and really an approximation


def test_ift_falls_back_when_the_forward_pass_is_unconverged():
    loose = SolverConfig(method="fixed_point", max_iter=1, tol=0.0)
    grad, deq = gradients(IFT(fallback_threshold=1e-3), solver=loose)
    assert deq.ledger.backward_fallbacks == BATCH  # every sample is over the threshold
    with solver_budget(deq) as solves:
        deq(torch.randn(BATCH, IN, dtype=torch.float64))
    assert solves.calls[0].stats.backward_fallbacks == BATCH
    assert torch.equal(grad, gradients(JFB(), solver=loose)[0])


def test_work_is_counted_by_hand():
    deq = DEQ(TanhCell(), train_solver=SolverConfig(method="fixed_point", max_iter=3, tol=0.0), backward=JFB())
    deq(torch.randn(BATCH, IN, dtype=torch.float64)).sum().backward()
    assert (deq.ledger.forward, deq.ledger.vjp) == (3 * BATCH + BATCH, BATCH)
    assert deq.cell_evals == 4 * BATCH + 2 * BATCH
    deq.reset_counters()
    deq.backward = Phantom(k=2)
    deq(torch.randn(BATCH, IN, dtype=torch.float64)).sum().backward()
    assert (deq.ledger.forward, deq.ledger.vjp) == (5 * BATCH, 2 * BATCH)


def test_make_backward():
    assert make_backward("jfb") == JFB()
    assert make_backward("phantom", k=3, tau=0.8) == Phantom(3, 0.8)
    assert make_backward("unrolled", steps=7) == Unrolled(7)
    ift = make_backward("ift", max_iter=10, fallback="phantom")
    assert ift.max_iter == 10 and ift.fallback == Phantom()
    for name, options in [("adjoint", {}), ("phantom", {"kk": 3}), ("phantom", {"k": 0}), ("ift", {"fallback": "ift"}), ("ift", {"tol": -1})]:
        with pytest.raises(ConfigError):
            make_backward(name, **options)


def test_ift_falls_back_only_for_the_unconverged_samples(reference):
    """Three samples start at their fixed point, the last one far from it: the three get the
    exact implicit gradient, the last one JFB's (the batch mean residual would pass a
    threshold that the worst sample fails)."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(BATCH, IN, generator=g, dtype=torch.float64)
    weights = torch.randn(BATCH, DIM, generator=g, dtype=torch.float64)
    cell = TanhCell()
    with torch.no_grad():
        z_star = DEQ(cell, train_solver=EXACT).eval()(x)
    z0 = z_star.clone()
    z0[-1] = 0
    solver = SolverConfig(method="fixed_point", max_iter=3, tol=1e-11)

    def run(backward, rows):
        deq = DEQ(cell, train_solver=solver, backward=backward)
        deq.zero_grad()
        xi = x[rows].clone().requires_grad_()
        with solver_budget(deq) as solves:
            (deq(xi, z0=z0[rows]) * weights[rows]).sum().backward()
        return xi.grad, [p.grad.clone() for p in deq.parameters()], deq.ledger, solves.calls[0].stats

    ift = IFT(max_iter=200, tol=1e-13, fallback_threshold=5e-3)
    x_grad, p_grad, ledger, stats = run(ift, slice(None))
    rel = stats.rel_residual
    assert rel[-1] > 5e-3 > rel.mean() and bool((rel[:-1] < 1e-10).all())
    assert stats.backward_fallbacks == ledger.backward_fallbacks == 1
    # the converged samples' gradients are the exact implicit ones
    exact = reference[-BATCH * IN :].view(BATCH, IN)  # x's gradient, computed from z0 = 0
    assert torch.allclose(x_grad[:-1], exact[:-1], rtol=0, atol=1e-10)
    # the unconverged one's is JFB's, a bounded error against the exact gradient
    jfb_grad, _, _, _ = run(JFB(), slice(None))
    assert torch.allclose(x_grad[-1], jfb_grad[-1], rtol=0, atol=1e-12)
    assert 0 < rel_error(x_grad[-1], exact[-1]) < 0.6
    # and the parameters' gradient is the sum of the two parts
    parts = [run(ift, slice(0, BATCH - 1))[1], run(JFB(), slice(BATCH - 1, BATCH))[1]]
    for p, a, b in zip(p_grad, *parts):
        assert torch.allclose(p, a + b, rtol=0, atol=1e-10)
    # work: the solve's evaluations, IFT's tail on 3 rows, JFB's on one
    assert ledger.forward == stats.evaluations + 2 * (BATCH - 1) + 1
