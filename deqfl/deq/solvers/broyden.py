"""Broyden's good method with a low-rank inverse Jacobian (`method="broyden"`)."""

from __future__ import annotations

import torch
from torch import Tensor

from deqfl.deq.solvers.base import FlatLayout, Map, SolverConfig, SolverResult, Tracker, register_solver


@register_solver("broyden")
@torch.no_grad()
def broyden(f: Map, z0: Tensor, config: SolverConfig, trace: bool = False) -> SolverResult:
    """Broyden's ("good") method on g(x) = f(x) - x with a low-rank inverse Jacobian.

    B^{-1} = -I + sum_j u_j v_j^T starts at -I (so the first step is x + g(x) = f(x)) and after
    each step dx, dg is updated to satisfy the secant condition B^{-1} dg = dx:
        u = (dx - B^{-1} dg) / (dx^T B^{-1} dg),  v^T = dx^T B^{-1};
    the step is x_{k+1} = x_k - B^{-1} g(x_k). Memory holds all max_iter - 1 updates
    (2 * B * d * max_iter numbers), both factors stored as (B, slots, d) so every slot is a
    contiguous row. A near-zero denominator skips that sample's update
    (counted in stats.singular); converged samples stop moving and f is evaluated on the
    others only (`Tracker.evaluate`).
    """
    layout = FlatLayout(z0)
    x = layout.flat(z0)
    batch, dim = x.shape
    slots = max(config.max_iter - 1, 1)
    UT = x.new_empty(batch, slots, dim)  # u_j^T as rows; only slots already written are read
    VT = x.new_empty(batch, slots, dim)
    tracker = Tracker(batch, config, trace, x)
    fx = tracker.evaluate(f, layout, x)
    gx = fx - x
    step = gx
    n = 0

    def inv_matvec(v: Tensor) -> Tensor:  # B^{-1} v
        return -v + torch.bmm(torch.bmm(VT[:, :n], v[:, :, None]).transpose(1, 2), UT[:, :n])[:, 0]

    def inv_rmatvec(v: Tensor) -> Tensor:  # v^T B^{-1}
        return -v + torch.bmm(torch.bmm(UT[:, :n], v[:, :, None]).transpose(1, 2), VT[:, :n])[:, 0]

    while tracker.running():
        x_new = x + step * tracker.active[:, None]
        fx = tracker.evaluate(f, layout, x_new, fx)
        g_new = fx - x_new
        dx, dg = x_new - x, g_new - gx
        vT = inv_rmatvec(dx)
        denom = (vT * dg).sum(1)
        size = torch.linalg.vector_norm(vT, dim=1) * torch.linalg.vector_norm(dg, dim=1)
        ok = (denom.abs() > 1e3 * tracker.eps + torch.finfo(x.dtype).eps * size) & torch.isfinite(denom)
        tracker.singular += int((~ok & tracker.active).sum())
        safe = torch.where(ok, denom, torch.ones_like(denom))
        UT[:, n] = torch.where(ok[:, None], (dx - inv_matvec(dg)) / safe[:, None], 0)
        VT[:, n] = torch.where(ok[:, None], vT, 0)
        n += 1
        x, gx = x_new, g_new
        step = -inv_matvec(gx)
        step = torch.where(torch.isfinite(step), step, gx)
    return tracker.result(layout)
