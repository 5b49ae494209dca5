"""Damped Picard iteration (`method="fixed_point"`)."""

from __future__ import annotations

import torch
from torch import Tensor

from deqfl.deq.solvers.base import FlatLayout, Map, SolverConfig, SolverResult, Tracker, register_solver


@register_solver("fixed_point")
@torch.no_grad()
def fixed_point(f: Map, z0: Tensor, config: SolverConfig, trace: bool = False) -> SolverResult:
    """Damped Picard iteration x_{k+1} = (1 - damping) x_k + damping f(x_k), evaluated on the
    samples not yet converged only (`Tracker.evaluate`)."""
    layout = FlatLayout(z0)
    x, fx = layout.flat(z0), None
    tracker = Tracker(x.shape[0], config, trace, x)
    while True:
        fx = tracker.evaluate(f, layout, x, fx)
        if not tracker.running():
            return tracker.result(layout)
        x = fx if config.damping == 1.0 else torch.lerp(x, fx, config.damping)
