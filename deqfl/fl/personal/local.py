"""Local training: no communication. Each client trains its own model (the build-time
model the first time) on its own rows for the round's steps and keeps all of it
("personal/<key>"); nothing travels but empty payloads, so the global model never
changes. Its personalised model is its own, evaluated on its own test split. An unseen
client trains a fresh model for `personalization.unseen_steps` steps."""

from __future__ import annotations

import dataclasses

from deqfl.fl.personal.base import (
    PERSONAL,
    PersonalAlgorithm,
    kept_with,
    personal_metrics,
    prefixed,
    register_personalization,
    stored,
    with_metrics,
)


@register_personalization("local")
class Local(PersonalAlgorithm):
    wire = "none"
    unseen_fit = "all"

    def client_round(self, round_, call_next, task):
        start = stored(round_.client_state, PERSONAL, round_.global_state, tuple(round_.global_state))
        update = call_next(round_.replace(global_state=start))
        metrics = personal_metrics(round_, update.state, task)
        return with_metrics(dataclasses.replace(update, state={}, client_state=kept_with(update, prefixed(PERSONAL, update.state))), metrics)
