"""The personalisation client mod and the two ends of the wire.

* `personalize(round_, call_next)`: the task's algorithm's `client_round` (the innermost
  built-in mod, `deqfl.fl.client.wrappers`), or its `fit_unseen` for an unseen client's
  task (`PersonalTask.unseen`).
* `local_keys(algorithm, split, keys)`: the model entries that never travel: none
  ("all"), the split's personal ones ("shared"), all ("none").
* `complete_download(received, initial, task)`: a client's download with the entries that
  did not travel filled in from the client's build-time model (`initial`; every engine
  builds the model from the run's seed, so every copy holds the same values); the
  algorithm then replaces them with the client's own. Without personalisation the
  download is returned as it is.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from deqfl.fl.client.mods import ClientFn, ClientRound
from deqfl.fl.client.task import PersonalTask
from deqfl.fl.personal.base import algorithm_class, make_algorithm
from deqfl.fl.personal.split import Split
from deqfl.fl.update import ClientUpdate


def personalize(round_: ClientRound, call_next: ClientFn) -> ClientUpdate:
    task = round_.task.personalization
    algorithm = make_algorithm(task)
    run = algorithm.fit_unseen if task.unseen else algorithm.client_round
    return run(round_, call_next, task)


def local_keys(algorithm: str, split: Split) -> tuple[str, ...]:
    wire = algorithm_class(algorithm).wire
    if wire == "all":
        return ()
    if wire == "shared":
        return split.personal
    return tuple(sorted(split.shared + split.personal))


def complete_download(
    received: Mapping[str, Tensor], initial: Mapping[str, Tensor], task: PersonalTask | None
) -> dict[str, Tensor]:
    """`received` with `task.local`'s entries from `initial` (module docstring)."""
    if task is None:
        return dict(received)
    return {**{k: initial[k] for k in task.local if k not in received}, **received}
