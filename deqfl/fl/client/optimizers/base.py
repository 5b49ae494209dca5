"""Client optimisers: `train.optimizer` names one, `train.optimizer_options` holds its
typed options.

An entry is a function `build(params, options, typed) -> torch.optim.Optimizer`: the
trainable parameters, the round's `TrainOptions` (its `lr` is the round's rate from the
server's schedule; `weight_decay` and `momentum` are the flat `train` keys) and the
entry's validated options (a `ClientOptimizerOptions` subclass declared in its file).
A client builds a fresh optimiser every round, so no optimiser state (momentum buffers,
Adam's moments) carries over from one round to the next: the usual federated choice, and
the one that keeps a client's round a function of the global model and its task alone.

`heavy_ball` declares that a local step is SGD with heavy-ball momentum
(b <- momentum * b + g, w <- w - lr * b), which FedNova's normaliser and SCAFFOLD's control
variate assume; the config refuses those with an optimiser that does not declare it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, ValidationError
from torch import Tensor

from deqfl.errors import ConfigError
from deqfl.fl.client.task import TrainOptions


class ClientOptimizerOptions(BaseModel):
    """Base of every client optimiser's typed options (unknown keys are errors); an
    optimiser registered without options gets this model, which has no fields."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


Build = Callable[[list[Tensor], TrainOptions, Any], torch.optim.Optimizer]


@dataclass(frozen=True)
class ClientOptimizer:
    """A registered client optimiser."""

    build: Build
    options: type[ClientOptimizerOptions]
    heavy_ball: bool


_OPTIMIZERS: dict[str, ClientOptimizer] = {}


def register_client_optimizer(
    name: str, *, options: type[ClientOptimizerOptions] = ClientOptimizerOptions, heavy_ball: bool = False,
    replace: bool = False,
) -> Callable[[Build], Build]:
    """Decorator registering `build` under `name` with its typed `options`; ValueError if
    the name is taken, unless `replace`."""

    def decorate(build: Build) -> Build:
        if name in _OPTIMIZERS and not replace:
            raise ValueError(f"client optimizer {name!r} is already registered")
        _OPTIMIZERS[name] = ClientOptimizer(build, options, heavy_ball)
        return build

    return decorate


def client_optimizer_names() -> list[str]:
    return sorted(_OPTIMIZERS)


def client_optimizer(name: str) -> ClientOptimizer:
    """The entry named `name`; ConfigError naming the choices otherwise."""
    if name not in _OPTIMIZERS:
        raise ConfigError(f"train.optimizer: unknown choice {name!r}; valid choices: {', '.join(client_optimizer_names())}")
    return _OPTIMIZERS[name]


def canonical_options(name: str, table: Mapping[str, Any]) -> dict[str, Any]:
    """`table` checked by optimiser `name`'s options model and reduced to the values that
    differ from its defaults (a config spelling out a default keeps the run's identity);
    ValueError naming each bad key and the options `name` takes."""
    model = client_optimizer(name).options
    try:
        typed = model.model_validate(dict(table))
    except ValidationError as exc:
        problems = "; ".join(
            f"train.optimizer_options.{'.'.join(str(p) for p in err['loc'])}: "
            + ("unknown option" if err["type"] == "extra_forbidden" else f"{err['msg']} (got {err['input']!r})")
            for err in exc.errors()
        )
        takes = ", ".join(model.model_fields) or "none"
        raise ValueError(f"{problems} (optimizer '{name}' takes options: {takes})") from None
    return typed.model_dump(exclude_defaults=True)


def make_client_optimizer(params: list[Tensor], options: TrainOptions) -> torch.optim.Optimizer:
    """A fresh optimiser of `options.optimizer` over `params` at the round's `options.lr`."""
    entry = client_optimizer(options.optimizer)
    return entry.build(params, options, entry.options.model_validate(options.optimizer_options))
