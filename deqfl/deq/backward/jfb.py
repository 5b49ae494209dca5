"""Jacobian-free backprop (`backward="jfb"`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from deqfl.deq.accounting import Cost
from deqfl.deq.backward.base import BackwardMode, register_backward


@register_backward
@dataclass(frozen=True)
class JFB(BackwardMode):
    """Jacobian-free backprop (Fung et al. 2022): output z = f(z*) with one differentiable
    application, so dL/dtheta = dL/dz df/dtheta ((I - J)^{-1} replaced by I). Cost: 1 forward
    + 1 vjp per sample. A descent direction when f is contractive."""

    name: ClassVar[str] = "jfb"

    def tail_cost(self) -> Cost:
        return Cost(forward=1, vjp=1)

    def attach(self, f, z_star, stats, ledger):
        ledger.charge(self.tail_cost(), z_star.shape[0])
        return f(z_star), stats
