"""`adamw`: Adam with decoupled weight decay (Loshchilov and Hutter, ICLR 2019; torch's
`AdamW`): w <- w - lr * weight_decay * w, then Adam's step on the plain gradient
(`adam`'s formulas, same options); the decay is `train.weight_decay` (default 0, not
torch's 0.01)."""

from __future__ import annotations

import torch

from deqfl.fl.client.optimizers.adam import AdamOptions
from deqfl.fl.client.optimizers.base import register_client_optimizer


@register_client_optimizer("adamw", options=AdamOptions)
def adamw(params, options, typed: AdamOptions):
    return torch.optim.AdamW(
        params, lr=options.lr, betas=(typed.beta_1, typed.beta_2), eps=typed.eps, weight_decay=options.weight_decay
    )
