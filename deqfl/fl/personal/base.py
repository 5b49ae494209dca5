"""The personalised algorithm interface, its registry, and the steps algorithms share.

An algorithm is a `PersonalAlgorithm` subclass registered under a name
(`register_personalization`), with typed options (`Options`, a `PersonalOptions`) and

* `wire`: what travels each round: "all" keys of the model, the "shared" ones of the
  model split (`deqfl.fl.personal.split`), or "none" (Local);
* `client_round(round_, call_next, task)`: the client's round, a client mod
  (`deqfl.fl.client.mods`): it receives the download completed with the client's
  build-time values for what does not travel, reads its personal part and duals from
  `round_.client_state`, runs local training phases through `call_next`, reports
  `personal_accuracy` / `personal_loss` (its personalised model on its own test split,
  `deqfl.fl.personal.test_split`, at its own forward cap) and returns an update whose
  `state` holds only what travels and whose `client_state` holds what stays;
* `unseen_fit` ("none", "personal" or "all") and `fit_terms`: how a client held out of
  training fits its personalised model before it is evaluated (`fit_unseen`).

Client-state keys: "personal/<key>" for a kept model entry, "dual/<key>" for a dual.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Mapping
from typing import ClassVar, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor

from deqfl.errors import ConfigError
from deqfl.fl.client.hooks import LocalStep, StepHook
from deqfl.fl.client.loss_terms import LossTerm
from deqfl.fl.client.mods import ClientFn, ClientRound
from deqfl.fl.client.task import PersonalTask
from deqfl.fl.evaluation import evaluate
from deqfl.fl.personal.test_split import client_test_rows
from deqfl.fl.update import ClientUpdate
from deqfl.models import load_federated_state

PERSONAL, DUAL = "personal/", "dual/"
"""Prefixes of the client-state entries: a kept model entry, a dual variable."""

EVAL_BATCH = 500


class PersonalOptions(BaseModel):
    """Base of every algorithm's typed options (unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class PersonalAlgorithm:
    """Base class (module docstring)."""

    Options: ClassVar[type[PersonalOptions]] = PersonalOptions
    wire: ClassVar[Literal["all", "shared", "none"]] = "shared"
    unseen_fit: ClassVar[Literal["none", "personal", "all"]] = "personal"

    def __init__(self, options: PersonalOptions) -> None:
        self.options = options

    def client_round(self, round_: ClientRound, call_next: ClientFn, task: PersonalTask) -> ClientUpdate:
        raise NotImplementedError

    def fit_terms(self, round_: ClientRound) -> tuple[LossTerm, ...]:
        """Extra loss terms of an unseen client's fit (none by default)."""
        return ()

    def fit_unseen(self, round_: ClientRound, call_next: ClientFn, task: PersonalTask) -> ClientUpdate:
        """An unseen client: from the global model (its personal part at the build-time
        values), train the `unseen_fit` keys for the round's steps, then evaluate."""
        start = round_.global_state
        if self.unseen_fit == "none":
            update = ClientUpdate(round_.data.client_id, round_.task.tier.name, dict(start), len(round_.y_train),
                                  1, round_.task.forward_cap, None, None)
        else:
            keys = task.personal if self.unseen_fit == "personal" else tuple(start)
            update = phase(round_, call_next, start, keys, terms=self.fit_terms(round_))
        return with_metrics(update, personal_metrics(round_, update.state, task))


_ALGORITHMS: dict[str, type[PersonalAlgorithm]] = {}


def register_personalization(name: str, *, replace: bool = False) -> Callable[[type[PersonalAlgorithm]], type[PersonalAlgorithm]]:
    """Class decorator registering a `PersonalAlgorithm` under `name` (the value of
    `personalization.algorithm`); ValueError if the name is taken, unless `replace`."""

    def decorate(cls: type[PersonalAlgorithm]) -> type[PersonalAlgorithm]:
        if name == "none" or (name in _ALGORITHMS and not replace):
            raise ValueError(f"personalization algorithm {name!r} is already registered")
        if not (isinstance(cls, type) and issubclass(cls, PersonalAlgorithm)):
            raise TypeError(f"personalization algorithm {name!r} must subclass PersonalAlgorithm")
        _ALGORITHMS[name] = cls
        return cls

    return decorate


def algorithm_names() -> list[str]:
    return sorted(_ALGORITHMS)


def algorithm_class(name: str) -> type[PersonalAlgorithm]:
    if name not in _ALGORITHMS:
        raise ConfigError(f"personalization.algorithm: unknown choice {name!r}; valid choices: none, {', '.join(algorithm_names())}")
    return _ALGORITHMS[name]


def make_algorithm(task: PersonalTask) -> PersonalAlgorithm:
    cls = algorithm_class(task.algorithm)
    return cls(cls.Options.model_validate(task.options))


# --- steps the algorithms share -------------------------------------------------------


def stored(state: Mapping[str, Tensor] | None, prefix: str, like: Mapping[str, Tensor], keys: Collection[str]) -> dict[str, Tensor]:
    """`like`'s entries for `keys`, replaced by the client state's `prefix + key` entries
    where it holds them (on `like`'s device, in its dtype)."""
    state = state or {}
    return {
        k: state[prefix + k].to(like[k].device, like[k].dtype) if prefix + k in state else like[k]
        for k in keys
    }


def prefixed(prefix: str, tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {prefix + k: v.detach().clone() for k, v in tensors.items()}


@dataclasses.dataclass(frozen=True)
class Frozen(StepHook):
    """Drops the gradient of every parameter outside `trained` before the optimiser step,
    so the step leaves it unchanged (torch's SGD skips a parameter without a gradient:
    no decay, no momentum). The gradients are still computed: freezing by `requires_grad`
    instead crashes torch 2.13's CPU GroupNorm backward on an input without gradient."""

    trained: frozenset[str]

    def before_update(self, step: LocalStep) -> None:
        for name, param in step.params.items():
            if name not in self.trained:
                param.grad = None


def phase(
    round_: ClientRound,
    call_next: ClientFn,
    start: Mapping[str, Tensor],
    train: Collection[str],
    *,
    epochs: int | None = None,
    terms: tuple[LossTerm, ...] = (),
) -> ClientUpdate:
    """One local training phase: from `start`, only the parameters in `train` updated
    (`Frozen`), for `epochs` local epochs (None: the round's own steps), with `terms` added
    to the round's loss terms."""
    task = round_.task
    if epochs is not None:
        task = dataclasses.replace(task, tier=task.tier.model_copy(update={"local_epochs": epochs, "local_steps": None}))
    return call_next(round_.replace(
        global_state=dict(start), task=task, loss_terms=(*round_.loss_terms, *terms),
        step_hooks=(*round_.step_hooks, Frozen(frozenset(train))),
    ))


def combined(main: ClientUpdate, *others: ClientUpdate) -> ClientUpdate:
    """`main` with the work units and compute seconds of `others` added (the simulated
    clock times every phase of the round)."""
    metrics = dict(main.metrics)
    for key in ("work_units", "compute_seconds"):
        metrics[key] = metrics.get(key, 0.0) + sum(o.metrics.get(key, 0.0) for o in others)
    return dataclasses.replace(main, metrics=metrics)


def kept_with(update: ClientUpdate, kept: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The client state after the round: `update`'s (other mods' entries, e.g. a warm-start
    cache) with the algorithm's `kept` entries written over it."""
    return {**(update.client_state or {}), **kept}


def with_metrics(update: ClientUpdate, metrics: Mapping[str, float]) -> ClientUpdate:
    return dataclasses.replace(update, metrics={**update.metrics, **metrics})


def travelling(state: Mapping[str, Tensor], task: PersonalTask) -> dict[str, Tensor]:
    """The entries of `state` that travel (all but `task.local`)."""
    local = set(task.local)
    return {k: v for k, v in state.items() if k not in local}


def test_rows(round_: ClientRound, task: PersonalTask) -> np.ndarray:
    """The client's test split (`deqfl.fl.personal.test_split`)."""
    labels = round_.dataset.y_train[round_.data.train_indices]
    return client_test_rows(round_.dataset.y_test, labels, task.test_rows, round_.task.seed, round_.data.client_id)


def personal_metrics(round_: ClientRound, state: Mapping[str, Tensor], task: PersonalTask) -> dict[str, float]:
    """`personal_accuracy` and `personal_loss` of the model holding `state` on the
    client's test split, at the client's forward cap and tolerance."""
    model = round_.model
    load_federated_state(model, dict(state))
    rows = test_rows(round_, task)
    x = round_.dataset.normalise(round_.dataset.x_test[rows])
    y = torch.as_tensor(round_.dataset.y_test[rows])
    result = evaluate(model, x, y, round_.task.forward_cap, round_.task.tier.tol, EVAL_BATCH)
    return {"personal_accuracy": result.accuracy, "personal_loss": result.loss}
