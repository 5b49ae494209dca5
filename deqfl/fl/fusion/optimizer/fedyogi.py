"""`fedyogi`: Yogi on the server (Reddi et al., ICLR 2021, Alg. 2; Flower's `FedYogi`).

    m_t = beta_1 m_{t-1} + (1 - beta_1) d_t
    v_t = v_{t-1} - (1 - beta_2) d_t^2 sign(v_{t-1} - d_t^2)
    x_{t+1} = x_t + lr m_t / (sqrt(v_t) + tau)

with m_0 = v_0 = 0 (as Flower; the paper allows v_0 >= tau^2) and sign(0) = 0. No bias
correction. Defaults are Flower's. State: buffers "m", "v".
"""

from __future__ import annotations

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


class FedYogiOptions(OptimizerOptions):
    lr: float = Field(0.01, gt=0, description="Server learning rate eta.")
    beta_1: float = Field(0.9, ge=0, lt=1, description="First-moment decay.")
    beta_2: float = Field(0.99, ge=0, lt=1, description="Second-moment decay.")
    tau: float = Field(1e-3, gt=0, description="Adaptivity constant added to sqrt(v).")


@register_server_optimizer("fedyogi", stateful=True)
class FedYogi(ServerOptimizer):
    Options = FedYogiOptions
    BUFFERS = ("m", "v")

    def propose(self, params: Mapping[str, torch.Tensor], delta: Mapping[str, torch.Tensor]) -> Step:
        o = self.options
        m = first_moment(self.buffer("m", delta), delta, o.beta_1)
        v_prev = self.buffer("v", delta)
        v = {}
        for k, d in delta.items():
            square = d * d
            v[k] = v_prev[k] - (1 - o.beta_2) * square * torch.sign(v_prev[k] - square)
        return Step(params=adaptive_step(params, m, v, o.lr, o.tau), state=flat(m=m, v=v))
