"""FedAvg, evaluated per client (McMahan et al., AISTATS 2017): one global model, nothing
personal. The client's personalised model is the global model it received, evaluated on
its own test split before it trains; then it trains as in plain FedAvg and uploads it all.
An unseen client is evaluated on the global model as is."""

from __future__ import annotations

from deqfl.fl.personal.base import PersonalAlgorithm, personal_metrics, register_personalization, with_metrics


@register_personalization("fedavg")
class FedAvg(PersonalAlgorithm):
    wire = "all"
    unseen_fit = "none"

    def client_round(self, round_, call_next, task):
        metrics = personal_metrics(round_, round_.global_state, task)
        return with_metrics(call_next(round_), metrics)
