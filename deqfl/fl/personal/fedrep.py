"""FedRep (Collins et al., ICML 2021): a shared representation, a personal head, trained
in turn.

Each round the client loads the received representation and its own head, trains the
head alone for `head_epochs` local epochs (the representation frozen), then the
representation alone for the round's steps (the head frozen), keeps the head
("personal/<key>") and uploads the representation. Its personalised model is the received
representation with the freshly fitted head, evaluated on its own test split."""

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
    travelling,
    with_metrics,
)


class FedRepOptions(PersonalOptions):
    head_epochs: int = Field(1, gt=0, description="Local epochs of head training per round (the body frozen).")


@register_personalization("fedrep")
class FedRep(PersonalAlgorithm):
    Options = FedRepOptions

    def client_round(self, round_, call_next, task):
        start = {**round_.global_state, **stored(round_.client_state, PERSONAL, round_.global_state, task.personal)}
        head = phase(round_, call_next, start, task.personal, epochs=self.options.head_epochs)
        metrics = personal_metrics(round_, head.state, task)
        shared = [k for k in round_.global_state if k not in set(task.personal)]
        body = phase(round_, call_next, head.state, shared)
        kept = prefixed(PERSONAL, {k: head.state[k] for k in task.personal})
        update = dataclasses.replace(body, state=travelling(body.state, task), client_state=kept_with(body, kept))
        return with_metrics(combined(update, head), metrics)
