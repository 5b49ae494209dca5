"""FedAvg with local fine-tuning (FedAvg-FT): the global model, fine-tuned on the client's
own training rows for `finetune_steps` local steps (every parameter, the round's optimiser
settings), is the client's personalised model; it is evaluated and dropped. Training and
upload are plain FedAvg's, from the received global model. An unseen client fine-tunes the
same way for `personalization.unseen_steps` steps."""

from __future__ import annotations

import dataclasses

from pydantic import Field

from deqfl.fl.personal.base import (
    PersonalAlgorithm,
    PersonalOptions,
    combined,
    personal_metrics,
    phase,
    register_personalization,
    with_metrics,
)


class FedAvgFTOptions(PersonalOptions):
    finetune_steps: int = Field(10, gt=0, description="Local steps of fine-tuning before each evaluation.")


@register_personalization("fedavg-ft")
class FedAvgFT(PersonalAlgorithm):
    Options = FedAvgFTOptions
    wire = "all"
    unseen_fit = "all"

    def client_round(self, round_, call_next, task):
        tier = round_.task.tier.model_copy(update={"local_steps": self.options.finetune_steps, "step_fraction": 1.0})
        tuning = round_.replace(task=dataclasses.replace(round_.task, tier=tier))
        tuned = phase(tuning, call_next, round_.global_state, tuple(round_.global_state))
        metrics = personal_metrics(round_, tuned.state, task)
        return with_metrics(combined(call_next(round_), tuned), metrics)

