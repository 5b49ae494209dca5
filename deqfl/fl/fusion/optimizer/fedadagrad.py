"""`fedadagrad`: Adagrad on the server (Reddi et al., ICLR 2021, Alg. 2; Flower's `FedAdagrad`).

    m_t = beta_1 m_{t-1} + (1 - beta_1) d_t      (beta_1 = 0: m_t = d_t, as Flower)
    v_t = v_{t-1} + d_t^2
    x_{t+1} = x_t + lr m_t / (sqrt(v_t) + tau)

with m_0 = v_0 = 0. No bias correction. Defaults are Flower's (Flower fixes beta_1 = 0;
the paper allows momentum). State: buffers "m", "v".
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


class FedAdagradOptions(OptimizerOptions):
    lr: float = Field(0.1, gt=0, description="Server learning rate eta.")
    beta_1: float = Field(0.0, ge=0, lt=1, description="First-moment decay (0: no momentum).")
    tau: float = Field(1e-9, gt=0, description="Adaptivity constant added to sqrt(v).")


@register_server_optimizer("fedadagrad", stateful=True)
class FedAdagrad(ServerOptimizer):
    Options = FedAdagradOptions
    BUFFERS = ("m", "v")

    def propose(self, params: Mapping[str, torch.Tensor], delta: Mapping[str, torch.Tensor]) -> Step:
        o = self.options
        m = first_moment(self.buffer("m", delta), delta, o.beta_1)
        v_prev = self.buffer("v", delta)
        v = {k: v_prev[k] + delta[k] * delta[k] for k in delta}
        return Step(params=adaptive_step(params, m, v, o.lr, o.tau), state=flat(m=m, v=v))
