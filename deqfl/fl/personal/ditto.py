"""Ditto (Li et al., ICML 2021): a global model w trained as in FedAvg, and a personal
model v per client pulled towards it.

Each round the client trains the received w for the round's steps and uploads it (all of
it travels), then trains its own v (the received w the first time) for `personal_epochs`
local epochs (null: the round's steps) on

    loss(v) + lam/2 ||v - w||^2        (`deqfl.fl.personal.terms.ProximalTo`, w as received)

and keeps v ("personal/<key>"). Its personalised model is v, evaluated on its own test
split. An unseen client fits v from w the same way, for `personalization.unseen_steps`
steps."""

from __future__ import annotations

import dataclasses

from pydantic import Field

from deqfl.fl.personal.base import (
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
    with_metrics,
)
from deqfl.fl.personal.terms import ProximalTo


class DittoOptions(PersonalOptions):
    lam: float = Field(0.1, ge=0, description="Weight lambda of the pull of v towards the global w.")
    personal_epochs: int | None = Field(None, gt=0, description="Local epochs of v per round (null: the round's steps).")


@register_personalization("ditto")
class Ditto(PersonalAlgorithm):
    Options = DittoOptions
    wire = "all"
    unseen_fit = "all"

    def fit_terms(self, round_):
        return (ProximalTo({k: v.detach() for k, v in round_.global_state.items()}, self.options.lam),)

    def client_round(self, round_, call_next, task):
        shared = call_next(round_)
        v = stored(round_.client_state, PERSONAL, round_.global_state, tuple(round_.global_state))
        personal = phase(round_, call_next, v, tuple(v), epochs=self.options.personal_epochs,
                         terms=self.fit_terms(round_))
        metrics = personal_metrics(round_, personal.state, task)
        update = dataclasses.replace(shared, client_state=kept_with(shared, prefixed(PERSONAL, personal.state)))
        return with_metrics(combined(update, personal), metrics)
