"""SCAFFOLD's client side (Karimireddy et al., "SCAFFOLD: Stochastic Controlled Averaging
for Federated Learning", ICML 2020, Algorithm 1 with option II), as one client mod.

The server broadcasts its control variate c (`ClientRound.server_extras`, "control/<key>");
the client's own control variate c_i is its persistent state (`ClientRound.client_state`,
"control/<key>"; zeros the first time). Local training corrects every step's gradient

    g <- g + (c - c_i)                           (`ControlCorrection.before_update`)

before the optimiser step, and after the K local steps from x to y_i:

    c_i+ = c_i - c + (x - y_i) / (lr * A),       delta_c_i = c_i+ - c_i

c_i+ is returned as the client's new state, delta_c_i as the upload's extras (counted in
`bytes_up`); the server adds (1/N) sum_i delta_c_i to c (`deqfl.fl.fusion.scaffold`).

Momentum. The client optimiser is SGD with heavy-ball momentum rho (torch's form:
b <- rho b + g, w <- w - lr b), and the momentum buffer accumulates the corrected
gradients. Then x - y_i = lr * sum_k a_k g~_k with ||a||_1 = A = FedNova's normaliser
`normaliser(K, rho)` = [K - rho (1 - rho^K) / (1 - rho)] / (1 - rho) (= K without
momentum), so (x - y_i) / (lr A) is the a-weighted mean of the corrected gradients and
c_i+ the a-weighted mean of the raw ones (the paper's option II is the rho = 0 case).
Weight decay is part of the gradient torch's SGD steps along, so it is part of c_i too.

Only trainable parameters are corrected; for any other floating entry of the federated
state (a buffer, a frozen parameter) c_i+ = c_i, so its delta is 0 and c stays 0.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import torch
from torch import Tensor

from deqfl.fl.client.hooks import LocalStep, StepHook
from deqfl.fl.client.mods import ClientFn, ClientRound
from deqfl.fl.fusion.aggregator.fednova import normaliser
from deqfl.fl.transport import PayloadError
from deqfl.fl.update import ClientUpdate

CONTROL = "control/"
"""Prefix of SCAFFOLD's tensors in the server extras, the upload extras and the client state."""


@dataclasses.dataclass(frozen=True)
class ControlCorrection(StepHook):
    """Adds `correction[name]` (c - c_i) to each trainable parameter's gradient before the
    optimiser step (a parameter without a gradient this step gets the correction alone)."""

    correction: dict[str, Tensor]

    def before_update(self, step: LocalStep) -> None:
        for name, param in step.params.items():
            if param.grad is None:
                param.grad = self.correction[name].clone()
            else:
                param.grad.add_(self.correction[name])


def control_variates(extras: Mapping[str, Tensor], like: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The "control/<key>" entries of `extras` for every floating key of `like`, as float64
    (PayloadError naming the first one missing or misshapen: the download is not a
    SCAFFOLD round's)."""
    found = {}
    for key, value in like.items():
        if not value.is_floating_point():
            continue
        got = extras.get(CONTROL + key)
        if got is None or got.shape != value.shape:
            raise PayloadError(f"the download carries no control variate {CONTROL + key!r} of shape {tuple(value.shape)}")
        found[key] = got.detach().double()
    return found


def own_control_variates(state: Mapping[str, Tensor] | None, like: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """c_i from the client's state (float64, on `like`'s devices), zeros for every key it
    does not hold (`like`: c, float64)."""
    state = state or {}
    return {
        key: state[CONTROL + key].to(c.device, torch.float64) if CONTROL + key in state else torch.zeros_like(c)
        for key, c in like.items()
    }


def scaffold_update(
    x: Mapping[str, Tensor], y: Mapping[str, Tensor], c: Mapping[str, Tensor], c_i: Mapping[str, Tensor],
    trained: set[str], lr: float, steps: int, momentum: float,
) -> dict[str, Tensor]:
    """c_i+ (float64) by the module docstring's formula, for the keys of `c`; keys not in
    `trained` keep c_i."""
    scale = lr * normaliser(steps, momentum)
    return {
        key: c_i[key] - c[key] + (x[key].double() - y[key].double()) / scale if key in trained else c_i[key].clone()
        for key in c
    }


def scaffold(round_: ClientRound, call_next: ClientFn) -> ClientUpdate:
    """SCAFFOLD's client mod (module docstring)."""
    c = control_variates(round_.server_extras, round_.global_state)
    c_i = own_control_variates(round_.client_state, c)
    trainable = {name: p for name, p in round_.model.named_parameters() if p.requires_grad}
    correction = {name: (c[name] - c_i[name]).to(p.dtype) for name, p in trainable.items()}
    hook = ControlCorrection(correction)
    update = call_next(round_.replace(step_hooks=(*round_.step_hooks, hook)))
    options = round_.task.options
    new = scaffold_update(
        round_.global_state, update.state, c, c_i, set(trainable), options.lr, update.local_steps, options.momentum
    )
    dtype = {key: round_.global_state[key].dtype for key in c}
    state = {**(update.client_state or {}), **{CONTROL + k: v.to(dtype[k]) for k, v in new.items()}}
    delta = {CONTROL + k: (new[k] - c_i[k]).to(dtype[k]) for k in new}
    return dataclasses.replace(update, client_state=state, extras={**update.extras, **delta})
