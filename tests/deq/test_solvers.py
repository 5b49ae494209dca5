"""Solvers: known fixed points, budgets, tolerances and hand-checkable statistics."""

import pytest
import torch

from deqfl.deq import SolverConfig, anderson, broyden, fixed_point, solve, solver_names
from deqfl.errors import ConfigError

METHODS = solver_names()  # every registered solver keeps the shared contract


def linear_problem(dtype, batch=3, dim=40, rho=0.9, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
    a = q @ torch.diag(torch.linspace(-rho, rho, dim, dtype=torch.float64)) @ q.T
    b = torch.randn(batch, dim, generator=g, dtype=torch.float64)
    z_star = torch.linalg.solve(torch.eye(dim, dtype=torch.float64) - a, b.T).T
    a, b = a.to(dtype), b.to(dtype)
    return (lambda z: z @ a.T + b), z_star.to(dtype)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-11)])
def test_reaches_known_fixed_point(method, dtype, tol):
    f, z_star = linear_problem(dtype)
    result = solve(f, torch.zeros_like(z_star), SolverConfig(method=method, max_iter=400, tol=tol))
    assert result.z.dtype == dtype
    assert bool(result.stats.converged.all())
    assert bool((result.stats.rel_residual <= tol).all())
    err = torch.linalg.vector_norm(result.z - z_star, dim=1) / torch.linalg.vector_norm(z_star, dim=1)
    assert float(err.max()) < 20 * tol  # error <= residual / (1 - rho)


def test_anderson_and_broyden_need_fewer_evaluations_than_plain_iteration():
    f, z_star = linear_problem(torch.float64, rho=0.95, dim=80)
    nfe = {m: solve(f, torch.zeros_like(z_star), SolverConfig(method=m, max_iter=1000, tol=1e-8)).stats.nfe for m in METHODS}
    assert nfe["anderson"] < nfe["fixed_point"] / 2
    assert nfe["broyden"] < nfe["fixed_point"] / 2


def test_hand_checkable_stats_and_per_sample_stopping():
    # f(z) = z/2 + c from z0 = 0: x_k = 2c(1 - 2^-k), |f(x_k) - x_k| = c 2^-k.
    c = torch.tensor([[1.0], [4.0]], dtype=torch.float64)
    config = SolverConfig(method="fixed_point", max_iter=50, tol=0.1, stop_mode="abs")
    result = fixed_point(lambda z: 0.5 * z + c, torch.zeros_like(c), config, trace=True)
    s = result.stats
    # sample 0: residuals 1, .5, .25, .125, .0625 -> converged at evaluation 5, returns f(x_4)
    # sample 1: 4, 2, 1, .5, .25, .125, .0625 -> converged at evaluation 7
    assert s.iterations.tolist() == [5, 7]
    assert s.nfe == 7
    assert s.abs_residual.tolist() == [0.0625, 0.0625]
    assert result.z.flatten().tolist() == [2 * (1 - 2**-5), 8 * (1 - 2**-7)]
    assert s.rel_residual[0].item() == pytest.approx(0.0625 / 1.9375)
    assert s.converged.tolist() == [True, True]
    assert s.mean_iterations == 6.0
    assert s.abs_trace.shape == (7, 2) and s.rel_trace.shape == (7, 2)
    assert s.abs_trace[:, 0].tolist() == [1, 0.5, 0.25, 0.125, 0.0625, 0.0625, 0.0625]  # frozen after 5
    assert torch.equal(s.abs_trace[-1], s.abs_residual)


@pytest.mark.parametrize("method", METHODS)
def test_budget_is_respected(method):
    f, z_star = linear_problem(torch.float64, rho=0.99)
    result = solve(f, torch.zeros_like(z_star), SolverConfig(method=method, max_iter=3, tol=1e-12))
    assert result.stats.nfe == 3
    assert result.stats.iterations.tolist() == [3, 3, 3]
    assert not bool(result.stats.converged.any())


@pytest.mark.parametrize("method", METHODS)
def test_tolerance_stops_early_in_both_modes(method):
    f, z_star = linear_problem(torch.float64)
    for stop_mode in ("rel", "abs"):
        result = solve(f, torch.zeros_like(z_star), SolverConfig(method=method, max_iter=400, tol=1e-3, stop_mode=stop_mode))
        res = result.stats.rel_residual if stop_mode == "rel" else result.stats.abs_residual
        assert bool((res <= 1e-3).all())
        # stopped at the first evaluation below tol: the previous one was above it
        tight = solve(f, torch.zeros_like(z_star), SolverConfig(method=method, max_iter=400, tol=1e-9, stop_mode=stop_mode))
        assert result.stats.nfe < tight.stats.nfe


@pytest.mark.parametrize("method", METHODS)
def test_samples_are_independent_of_their_batch(method):
    f, z_star = linear_problem(torch.float64, batch=4)
    config = SolverConfig(method=method, max_iter=100, tol=1e-6)
    together = solve(f, torch.zeros_like(z_star), config)
    for i in range(4):
        alone = solve(lambda z: f(z.expand(4, -1))[i : i + 1], torch.zeros_like(z_star[i : i + 1]), config)
        assert torch.allclose(alone.z, together.z[i : i + 1], rtol=1e-10, atol=1e-12)
        assert alone.stats.iterations.item() == together.stats.iterations[i].item()


def test_singular_anderson_system_is_survived_and_counted():
    # f(z) = z + 1 has no fixed point; every residual is 1, so G G^T is a rank-one matrix of
    # ones: with lam = 0 the KKT system is exactly singular.
    z0 = torch.zeros(2, 3, dtype=torch.float64)
    result = anderson(lambda z: z + 1, z0, SolverConfig(lam=0.0, max_iter=6, tol=1e-6))
    assert result.stats.singular > 0
    assert bool(torch.isfinite(result.z).all())
    assert result.stats.nfe == 6


def test_broyden_survives_a_degenerate_update():
    result = broyden(lambda z: z + 1, torch.zeros(2, 3, dtype=torch.float64), SolverConfig(method="broyden", max_iter=6))
    assert bool(torch.isfinite(result.z).all())
    assert result.stats.nfe == 6


@pytest.mark.parametrize(
    "bad",
    [
        {"method": "newton"},
        {"stop_mode": "max"},
        {"max_iter": 0},
        {"max_iter": 2.5},
        {"tol": -1.0},
        {"m": 0},
        {"lam": -1e-3},
        {"beta": 0.0},
        {"damping": 1.5},
    ],
)
def test_bad_config_is_a_config_error(bad):
    with pytest.raises(ConfigError):
        SolverConfig(**bad)


@pytest.mark.parametrize("method", METHODS)
def test_channels_last_states_give_the_same_solution(method):
    g = torch.Generator().manual_seed(0)
    u = torch.randn(3, 4, 5, 6, generator=g, dtype=torch.float64)
    w = 0.3 * torch.randn(4, 4, 3, 3, generator=g, dtype=torch.float64)
    f = lambda z: torch.tanh(torch.nn.functional.conv2d(z, w, padding=1) + u)
    config = SolverConfig(method=method, max_iter=50, tol=1e-10)
    plain = solve(f, torch.zeros_like(u), config)
    nhwc = solve(f, torch.zeros_like(u).contiguous(memory_format=torch.channels_last), config)
    assert nhwc.z.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(plain.z, nhwc.z, atol=1e-9)
    assert torch.equal(plain.stats.iterations, nhwc.stats.iterations)


def dense_broyden(f, x, steps):
    """Broyden's good method with the full (B, d, d) inverse Jacobian: the definition the
    low-rank solver implements; returns f(x) of the iterate with the lowest relative residual."""
    batch, dim = x.shape
    inv = -torch.eye(dim, dtype=x.dtype).repeat(batch, 1, 1)
    fx = f(x)
    g = fx - x
    best, best_z = (g.norm(dim=1) / fx.norm(dim=1)), fx
    for _ in range(steps - 1):
        x_new = x - (inv @ g[:, :, None])[:, :, 0]
        fx = f(x_new)
        g_new = fx - x_new
        dx, dg = x_new - x, g_new - g
        inv_dg = (inv @ dg[:, :, None])[:, :, 0]
        vT = (dx[:, None] @ inv)[:, 0]
        inv = inv + ((dx - inv_dg) / (vT * dg).sum(1, keepdim=True))[:, :, None] * vT[:, None]
        rel = g_new.norm(dim=1) / fx.norm(dim=1)
        better = rel < best
        best, best_z = torch.where(better, rel, best), torch.where(better[:, None], fx, best_z)
        x, g = x_new, g_new
    return best_z


def test_broyden_matches_the_dense_inverse_jacobian_method():
    g = torch.Generator().manual_seed(3)
    w = 0.9 * torch.randn(30, 30, generator=g, dtype=torch.float64) / 30**0.5
    b = torch.randn(4, 30, generator=g, dtype=torch.float64)
    f = lambda z: torch.tanh(z @ w.T + b)  # noqa: E731
    result = broyden(f, torch.zeros_like(b), SolverConfig(method="broyden", max_iter=12, tol=0.0))
    assert torch.allclose(result.z, dense_broyden(f, torch.zeros_like(b), 12), rtol=0, atol=1e-10)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("channels_last", [False, True])
def test_converged_samples_are_not_evaluated_and_results_match_the_whole_batch(method, channels_last, spread_problem):
    f, z0, sizes = spread_problem(channels_last=channels_last)
    config = SolverConfig(method=method, max_iter=60, tol=1e-9)
    rows = solve(f, z0, config)
    whole = solve(lambda z: f(z), z0, config)  # a plain map: every call on the whole batch
    s = rows.stats
    assert len(set(s.iterations.tolist())) > 2  # the samples really stop at different steps
    assert torch.allclose(rows.z, whole.z, rtol=0, atol=1e-12)
    assert torch.equal(s.iterations, whole.stats.iterations) and s.nfe == whole.stats.nfe
    assert torch.allclose(s.rel_residual, whole.stats.rel_residual, rtol=1e-6, atol=1e-15)
    # the calls of the RowMap solve ran on the active rows only, and that is what is counted
    calls = sizes[: s.nfe]
    assert calls == [int((s.iterations > k).sum()) for k in range(s.nfe)]
    assert s.evaluations == sum(calls) == int(s.iterations.sum()) < s.nfe * len(z0)
    assert whole.stats.evaluations == whole.stats.nfe * len(z0)
