"""FedPer (Arivazhagan et al., 2019): the shared body is averaged, the head is personal.

The client loads the received shared part and its own head (the build-time head the first
time), trains both jointly for the round's steps, keeps the trained head
("personal/<key>") and uploads only the trained shared part. Its personalised model, the
model it just trained, is evaluated on its own test split."""

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
    travelling,
    with_metrics,
)


@register_personalization("fedper")
class FedPer(PersonalAlgorithm):
    def client_round(self, round_, call_next, task):
        start = {**round_.global_state, **stored(round_.client_state, PERSONAL, round_.global_state, task.personal)}
        update = call_next(round_.replace(global_state=start))
        metrics = personal_metrics(round_, update.state, task)
        kept = prefixed(PERSONAL, {k: update.state[k] for k in task.personal})
        return with_metrics(dataclasses.replace(update, state=travelling(update.state, task), client_state=kept_with(update, kept)), metrics)
