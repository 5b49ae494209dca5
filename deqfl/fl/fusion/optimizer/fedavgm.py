"""`fedavgm`: server momentum (Hsu, Qi and Brown, 2019; Flower's `FedAvgM`).

    v_t = momentum * v_{t-1} + d_t   (v_0 = d_1),      x_{t+1} = x_t + lr * v_t

Flower writes it with the pseudo-gradient g = -d (v = mu v + g, x - lr v): the same step.
State: buffer "momentum". Flower's default momentum is 0 (plain FedAvg); ours is 0.9.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from pydantic import Field

from deqfl.fl.fusion.optimizer.base import OptimizerOptions, ServerOptimizer, Step, flat
from deqfl.fl.fusion.registry import register_server_optimizer


class FedAvgMOptions(OptimizerOptions):
    lr: float = Field(1.0, gt=0, description="Server learning rate.")
    momentum: float = Field(0.9, ge=0, lt=1, description="Server momentum factor.")


@register_server_optimizer("fedavgm", stateful=True)
class FedAvgM(ServerOptimizer):
    Options = FedAvgMOptions
    BUFFERS = ("momentum",)

    def propose(self, params: Mapping[str, torch.Tensor], delta: Mapping[str, torch.Tensor]) -> Step:
        mu, lr = self.options.momentum, self.options.lr
        previous = self.buffer("momentum", delta)
        velocity = {k: mu * previous[k] + delta[k] for k in delta}
        return Step(params={k: params[k] + lr * velocity[k] for k in delta}, state=flat(momentum=velocity))
