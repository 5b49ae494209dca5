"""Anderson acceleration, type II (`method="anderson"`)."""

from __future__ import annotations

import torch
from torch import Tensor

from deqfl.deq.solvers.base import FlatLayout, Map, SolverConfig, SolverResult, Tracker, register_solver


@register_solver("anderson")
@torch.no_grad()
def anderson(f: Map, z0: Tensor, config: SolverConfig, trace: bool = False) -> SolverResult:
    """Anderson acceleration (type II) with memory m, relative ridge lam and mixing beta.

    With G_i = f(x_i) - x_i over the last n <= m iterates, the weights a solve
        min_a ||sum_i a_i G_i||^2 + lam * s * ||a||^2   subject to  sum_i a_i = 1,
    s = mean_i ||G_i||^2, as the batched (n+1)x(n+1) KKT system [[0, 1^T], [1, G G^T + lam s I]]
    (one `torch.linalg.solve_ex` for the whole batch). Then
        x_{k+1} = beta * sum_i a_i f(x_i) + (1 - beta) * sum_i a_i x_i.
    A sample whose system is singular or gives non-finite weights takes a plain step
    x_{k+1} = f(x_k) instead; such steps are counted in stats.singular. f is evaluated on the
    samples not yet converged only (`Tracker.evaluate`); the histories and weights of
    converged samples are left as they fall and never read back.
    """
    layout = FlatLayout(z0)
    x = layout.flat(z0)
    batch, dim = x.shape
    m = config.m
    X = x.new_empty(batch, m, dim)  # only slots already written are read
    F = x.new_empty(batch, m, dim)
    tracker = Tracker(batch, config, trace, x)
    fx = tracker.evaluate(f, layout, x)
    X[:, 0], F[:, 0] = x, fx
    k = 1
    while tracker.running():
        n = min(k, m)
        G = F[:, :n] - X[:, :n]
        GG = torch.bmm(G, G.transpose(1, 2))
        scale = GG.diagonal(dim1=1, dim2=2).mean(1)
        H = x.new_zeros(batch, n + 1, n + 1)
        H[:, 0, 1:] = 1
        H[:, 1:, 0] = 1
        H[:, 1:, 1:] = GG
        H[:, 1:, 1:].diagonal(dim1=1, dim2=2).add_((config.lam * scale + tracker.eps)[:, None])
        rhs = x.new_zeros(batch, n + 1, 1)
        rhs[:, 0] = 1
        sol, info = torch.linalg.solve_ex(H, rhs)
        alpha = sol[:, 1:, 0]
        bad = (info != 0) | ~torch.isfinite(alpha).all(1)
        if bool(bad.any()):
            plain = torch.zeros_like(alpha)
            plain[:, (k - 1) % m] = 1
            alpha = torch.where(bad[:, None], plain, alpha)
            tracker.singular += int((bad & tracker.active).sum())
        x = torch.bmm(alpha[:, None], F[:, :n])[:, 0]
        if config.beta != 1.0:
            x = config.beta * x + (1 - config.beta) * torch.bmm(alpha[:, None], X[:, :n])[:, 0]
        fx = tracker.evaluate(f, layout, x, fx)
        X[:, k % m], F[:, k % m] = x, fx
        k += 1
    return tracker.result(layout)
