"""`sgd` (default): torch's SGD with heavy-ball momentum and L2 weight decay, from the flat
keys `train.momentum` and `train.weight_decay`:

    g <- grad + weight_decay * w,   b <- momentum * b + g  (b_1 = g),   w <- w - lr * b

No options of its own."""

from __future__ import annotations

import torch

from deqfl.fl.client.optimizers.base import register_client_optimizer


@register_client_optimizer("sgd", heavy_ball=True)
def sgd(params, options, typed):
    return torch.optim.SGD(params, lr=options.lr, momentum=options.momentum, weight_decay=options.weight_decay)
