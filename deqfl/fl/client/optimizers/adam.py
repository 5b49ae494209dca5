"""`adam`: Adam (Kingma and Ba, ICLR 2015; torch's `Adam`) with L2 weight decay
`train.weight_decay` added to the gradient; `train.momentum` is not used.

    g <- grad + weight_decay * w
    m <- beta_1 m + (1 - beta_1) g,   v <- beta_2 v + (1 - beta_2) g^2
    w <- w - lr * (m / (1 - beta_1^t)) / (sqrt(v / (1 - beta_2^t)) + eps)

t counts the round's local steps: the moments start at zero every round."""

from __future__ import annotations

import torch
from pydantic import Field

from deqfl.fl.client.optimizers.base import ClientOptimizerOptions, register_client_optimizer


class AdamOptions(ClientOptimizerOptions):
    beta_1: float = Field(0.9, ge=0, lt=1, description="Decay of the first moment m.")
    beta_2: float = Field(0.999, ge=0, lt=1, description="Decay of the second moment v.")
    eps: float = Field(1e-8, gt=0, description="Added to sqrt(v) in the denominator.")


@register_client_optimizer("adam", options=AdamOptions)
def adam(params, options, typed: AdamOptions):
    return torch.optim.Adam(
        params, lr=options.lr, betas=(typed.beta_1, typed.beta_2), eps=typed.eps, weight_decay=options.weight_decay
    )
