"""FeDEQ's ADMM consensus (Le et al., CIKM 2024): a shared part theta (the DEQ's stem and
cell), a personal head, and a dual lambda_k per client for the shared part.

Each round the client, from the received theta and its own head and dual (the build-time
head and zeros the first time):

1. trains the head alone for `head_epochs` local epochs (theta frozen);
2. trains its copy theta_k of the shared part (from theta, the head frozen) for the
   round's steps on

       loss + <lambda_k, theta_k - theta> + rho/2 ||theta_k - theta||^2

   (`deqfl.fl.personal.terms.AugmentedLagrangian`);
3. updates its dual: lambda_k <- lambda_k + dual_step * (theta_k - theta)
   (dual_step = rho unless set);

keeps head and dual ("personal/<key>", "dual/<key>") and uploads theta_k; the server
averages the shared parts as the fusion rule says (by sample count under
`fusion.weighting = "examples"`). Its personalised model is theta with the head of step 1,
evaluated on its own test split.
"""

from __future__ import annotations

import dataclasses

import torch
from pydantic import Field

from deqfl.fl.personal.base import (
    DUAL,
    PERSONAL,
    PersonalAlgorithm,
    PersonalOptions,
    combined,
    kept_with,
    personal_metrics,
    phase,
    prefixed,
    register_personalization,
    stored,
    travelling,
    with_metrics,
)
from deqfl.fl.personal.terms import AugmentedLagrangian


class FeDEQOptions(PersonalOptions):
    rho: float = Field(0.01, gt=0, description="ADMM penalty rho of the augmented Lagrangian.")
    dual_step: float | None = Field(None, gt=0, description="Step of the dual update (null: rho).")
    head_epochs: int = Field(1, gt=0, description="Local epochs of head training per round (theta frozen).")


def dual_update(dual: dict[str, torch.Tensor], theta_k: dict[str, torch.Tensor], theta: dict[str, torch.Tensor],
                step: float) -> dict[str, torch.Tensor]:
    """lambda_k + step * (theta_k - theta), key by key."""
    return {k: dual[k] + step * (theta_k[k].to(dual[k]) - theta[k].to(dual[k])) for k in dual}


@register_personalization("fedeq")
class FeDEQ(PersonalAlgorithm):
    Options = FeDEQOptions

    def client_round(self, round_, call_next, task):
        theta = {k: v for k, v in round_.global_state.items() if k not in set(task.personal)}
        floating = {k: v for k, v in theta.items() if v.is_floating_point()}
        dual = stored(round_.client_state, DUAL, {k: torch.zeros_like(v) for k, v in floating.items()}, floating)
        start = {**round_.global_state, **stored(round_.client_state, PERSONAL, round_.global_state, task.personal)}
        head = phase(round_, call_next, start, task.personal, epochs=self.options.head_epochs)
        metrics = personal_metrics(round_, head.state, task)
        term = AugmentedLagrangian(center=floating, dual=dual, rho=self.options.rho)
        body = phase(round_, call_next, {**head.state, **theta}, tuple(theta), terms=(term,))
        step = self.options.dual_step if self.options.dual_step is not None else self.options.rho
        new_dual = dual_update(dual, body.state, floating, step)
        kept = {**prefixed(PERSONAL, {k: head.state[k] for k in task.personal}), **prefixed(DUAL, new_dual)}
        update = dataclasses.replace(body, state=travelling(body.state, task), client_state=kept_with(body, kept))
        return with_metrics(combined(update, head), metrics)
