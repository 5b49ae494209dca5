"""Phantom gradient (`backward="phantom"`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from deqfl.deq.accounting import Cost
from deqfl.deq.backward.base import BackwardMode, register_backward
from deqfl.errors import ConfigError


@register_backward
@dataclass(frozen=True)
class Phantom(BackwardMode):
    """Phantom gradient (Geng et al. 2021): k damped differentiable steps from z*,
        z_0 = z*,  z_{i+1} = (1 - tau) z_i + tau f(z_i),  output z_k;
    its gradient is a truncated Neumann series of (I - J)^{-1} and tends to the exact one as
    k grows (for a contractive f). Cost: k forwards + k vjps per sample."""

    name: ClassVar[str] = "phantom"
    k: int = 5
    tau: float = 0.5

    def __post_init__(self) -> None:
        if not isinstance(self.k, int) or self.k < 1:
            raise ConfigError(f"phantom k must be an integer >= 1, got {self.k!r}")
        if not 0 < self.tau <= 1:
            raise ConfigError(f"phantom tau must be in (0, 1], got {self.tau!r}")

    def tail_cost(self) -> Cost:
        return Cost(forward=self.k, vjp=self.k)

    def attach(self, f, z_star, stats, ledger):
        z = z_star
        for _ in range(self.k):
            z = torch.lerp(z, f(z), self.tau) if self.tau != 1.0 else f(z)
        ledger.charge(self.tail_cost(), z_star.shape[0])
        return z, stats
