"""`fedadam`: Adam on the server (Reddi et al., ICLR 2021, Alg. 2; Flower's `FedAdam`).

    m_t = beta_1 m_{t-1} + (1 - beta_1) d_t
    v_t = beta_2 v_{t-1} + (1 - beta_2) d_t^2
    eta_t = lr * sqrt(1 - beta_2^(t+1)) / (1 - beta_1^(t+1))    (bias_correction; else lr)
    x_{t+1} = x_t + eta_t m_t / (sqrt(v_t) + tau)

with m_0 = v_0 = 0 and t the number of steps taken, this one included (t = 1 first).
The bias correction is Flower's, exponent t+1 with t its server round (Kingma and Ba use
t); the paper's Algorithm 2 has none (`bias_correction = false`). Skipped rounds do not
advance t. Defaults are Flower's. State: buffers "m", "v"; scalar "step" (= t).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from pydantic import Field

from deqfl.fl.fusion.optimizer.base import (
    OptimizerOptions,
    ServerOptimizer,
    Step,
    adaptive_step,
    first_moment,
    flat,
)
from deqfl.fl.fusion.registry import register_server_optimizer


class FedAdamOptions(OptimizerOptions):
    lr: float = Field(0.1, gt=0, description="Server learning rate eta.")
    beta_1: float = Field(0.9, ge=0, lt=1, description="First-moment decay.")
    beta_2: float = Field(0.99, ge=0, lt=1, description="Second-moment decay.")
    tau: float = Field(1e-9, gt=0, description="Adaptivity constant added to sqrt(v).")
    bias_correction: bool = Field(True, description="Scale lr as Flower does (module docstring).")


@register_server_optimizer("fedadam", stateful=True)
class FedAdam(ServerOptimizer):
    Options = FedAdamOptions
    BUFFERS = ("m", "v")
    SCALARS = ("step",)

    def propose(self, params: Mapping[str, torch.Tensor], delta: Mapping[str, torch.Tensor]) -> Step:
        o = self.options
        t = self.scalar("step") + 1
        m = first_moment(self.buffer("m", delta), delta, o.beta_1)
        v_prev = self.buffer("v", delta)
        v = {k: o.beta_2 * v_prev[k] + (1 - o.beta_2) * (delta[k] * delta[k]) for k in delta}
        eta = o.lr
        if o.bias_correction:
            eta = o.lr * math.sqrt(1 - o.beta_2 ** (t + 1)) / (1 - o.beta_1 ** (t + 1))
        return Step(
            params=adaptive_step(params, m, v, eta, o.tau),
            state=flat(m=m, v=v, step=torch.tensor(t, dtype=torch.int64, device="cpu")),
        )
