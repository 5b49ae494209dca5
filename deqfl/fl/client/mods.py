"""Client mods: wrappers around a client's round, in the spirit of Flower's client mods.

A round is a function `ClientFn = (ClientRound) -> ClientUpdate`; honest local training
is one (`deqfl.fl.client.train.local_training`). A mod is a function

    mod(round: ClientRound, call_next: ClientFn) -> ClientUpdate

that may change the round before calling `call_next` (its model, data, loss terms, step
hooks, client state) and may change the update it gets back, or raise. `chain(mods, fn)`
nests them: the first mod is the outermost, so it sees the round first and the update
last. The built-in wrappers for what is not honest training live in
`deqfl.fl.client.wrappers`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from torch import Tensor, nn

from deqfl.data import DatasetArrays
from deqfl.fl.client.hooks import StepHook
from deqfl.fl.client.loss_terms import LossTerm
from deqfl.fl.client.task import ClientData, ClientTask
from deqfl.fl.update import ClientUpdate


@dataclass(frozen=True)
class ClientRound:
    """Everything one client's round works on; mods pass changed copies (`replace`)."""

    model: nn.Module
    global_state: dict[str, Tensor]
    """The global (anchor) state the client starts from, as received."""
    task: ClientTask
    dataset: DatasetArrays
    data: ClientData
    x_train: Tensor
    """The client's normalised training inputs."""
    y_train: Tensor
    """Their labels."""
    loss_terms: tuple[LossTerm, ...]
    step_hooks: tuple[StepHook, ...]
    client_state: dict[str, Tensor] | None
    """The client's persistent state as read from its store (None: the run keeps none);
    the state a round returns travels back in `ClientUpdate.client_state`."""
    server_extras: dict[str, Tensor] = field(default_factory=dict)
    """What the server broadcast besides the model (`deqfl.fl.transport.split_extras`),
    e.g. SCAFFOLD's "control/<key>" tensors; a mod's upload extras go in
    `ClientUpdate.extras`."""

    def replace(self, **changes) -> ClientRound:
        return dataclasses.replace(self, **changes)


ClientFn = Callable[[ClientRound], ClientUpdate]
ClientMod = Callable[[ClientRound, ClientFn], ClientUpdate]


def chain(mods: Sequence[ClientMod], fn: ClientFn) -> ClientFn:
    """`fn` wrapped in `mods`, the first one outermost."""
    for mod in reversed(mods):
        fn = _wrap(mod, fn)
    return fn


def _wrap(mod: ClientMod, call_next: ClientFn) -> ClientFn:
    return lambda round_: mod(round_, call_next)
