"""The clients' learning rate over rounds (`train.lr_schedule`), decided by the server.

The rate of round r (1..R, R = `experiment.rounds`) is a pure function of r, so a resumed
run gives every round the rate of an uninterrupted one. With base rate lr (`train.lr`) and
W warmup rounds (`train.lr_warmup_rounds`, W < R):

    r <= W:  lr_r = lr * r / (W + 1)                     (linear warmup)
    r > W:   t = r - W - 1 (0, 1, ...), T = R - W
      constant: lr_r = lr
      cosine:   lr_r = lr_min + (lr - lr_min) * (1 + cos(pi * t / T)) / 2
      step:     lr_r = lr * factor ** floor(t / every)

Cosine is torch's `CosineAnnealingLR(T_max=T)` stepped once a round: it starts at lr and
would reach `lr_min` at the end of round R, so the last round still trains. Step
multiplies by `train.lr_step_factor` every `train.lr_step_rounds` rounds. The plan
(`deqfl.fl.plan`) puts lr_r into every task of round r and the round record keeps it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SCHEDULES = ("constant", "cosine", "step")


@dataclass(frozen=True)
class LrSchedule:
    """A schedule of the rate over `rounds` rounds (module docstring); the default is the
    constant rate."""

    kind: str = "constant"
    rounds: int = 1
    lr_min: float = 0.0
    warmup_rounds: int = 0
    step_rounds: int = 1
    step_factor: float = 0.1

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise ValueError(f"unknown lr schedule {self.kind!r}; valid choices: {', '.join(SCHEDULES)}")
        if not 0 <= self.warmup_rounds < self.rounds:
            raise ValueError(f"warmup_rounds must be in 0..rounds - 1 = {self.rounds - 1}, got {self.warmup_rounds}")

    def lr(self, round_number: int, base_lr: float) -> float:
        """The rate of round `round_number` (from 1) for base rate `base_lr`."""
        if round_number <= self.warmup_rounds:
            return base_lr * round_number / (self.warmup_rounds + 1)
        t, total = round_number - self.warmup_rounds - 1, self.rounds - self.warmup_rounds
        if self.kind == "cosine":
            return base_lr - (base_lr - self.lr_min) * (1 - math.cos(math.pi * t / total)) / 2  # exactly lr at t = 0
        if self.kind == "step":
            return base_lr * self.step_factor ** (t // self.step_rounds)
        return base_lr
