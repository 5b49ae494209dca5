"""`sgd` (the default): x_new = x + lr * d, stateless. With lr = 1 this is FedAvg.

Its step size is the config key `fusion.server_lr` (kept from before server optimisers
existed, so stored configs keep their meaning); `server_optimizer_options` must be empty.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from pydantic import Field

from deqfl.fl.fusion.optimizer.base import OptimizerOptions, ServerOptimizer, Step
from deqfl.fl.fusion.registry import register_server_optimizer


class SGDOptions(OptimizerOptions):
    lr: float = Field(1.0, gt=0, description="Server step size (set through fusion.server_lr).")


@register_server_optimizer("sgd", stateful=False)
class SGD(ServerOptimizer):
    Options = SGDOptions

    def propose(self, params: Mapping[str, torch.Tensor], delta: Mapping[str, torch.Tensor]) -> Step:
        lr = self.options.lr
        return Step(params={k: params[k] + lr * delta[k] for k in delta}, state={})
