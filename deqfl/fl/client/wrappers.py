"""The built-in client mods: what a client does besides honest training.

* `width_slicing` (a tier `width` r < 1, the HeteroFL baseline): the round trains the
  width-r sub-model on the leading slices of the global state and returns the sub-model's
  state; its work units are scaled by the sub-model's share of the multiply-accumulates.
* `attack` (a malicious client, `deqfl.fl.attacks`): label flips before training, the
  hostile reply (`tamper_update`) after it.
* `local_dp` (local DP, `deqfl.fl.privacy`): the update is clipped and noised.
* `crash` (an injected fault, `deqfl.fl.faults`): a step hook raises `ClientCrash` at the
  start of local step `crash_step(crash_at, steps)`.

`builtin_mods(task)` lists the ones a task asks for, outermost first: width slicing,
attack, local DP, crash (so the attack tampers with the privatised update, and both see
the sliced global state), warm starts (`deqfl.fl.client.warm_start`,
`task.options.warm_start`: inside width slicing, so it hooks the model that trains), then
the algorithm's own mod, innermost, next to honest training: SCAFFOLD's
(`deqfl.fl.client.scaffold`, `task.control_variates == "scaffold"`) or the personalised
algorithm's (`deqfl.fl.personal.mod.personalize`, `task.personalization`).
"""

from __future__ import annotations

import dataclasses

from deqfl.fl.attacks import attack_generator, flip_labels, tamper_update
from deqfl.fl.client.hooks import LocalStep, StepHook
from deqfl.fl.client.mods import ClientFn, ClientMod, ClientRound
from deqfl.fl.client.scaffold import scaffold
from deqfl.fl.client.task import ClientTask
from deqfl.fl.client.warm_start import warm_start
from deqfl.fl.faults import ClientCrash, crash_step
from deqfl.fl.personal.mod import personalize
from deqfl.fl.privacy import privatize_local
from deqfl.fl.update import ClientUpdate
from deqfl.models.width import multiply_accumulates, narrow_model, slice_state, sub_shapes


def width_slicing(round_: ClientRound, call_next: ClientFn) -> ClientUpdate:
    full = round_.model
    model = narrow_model(full, round_.task.tier.width)
    shape = tuple(round_.dataset.input_shape)
    share = multiply_accumulates(model, shape) / multiply_accumulates(full, shape)
    sliced = slice_state(round_.global_state, sub_shapes(model))
    update = call_next(round_.replace(model=model, global_state=sliced))
    metrics = {**update.metrics, "work_units": update.metrics["work_units"] * share}
    return dataclasses.replace(update, metrics=metrics)


def attack(round_: ClientRound, call_next: ClientFn) -> ClientUpdate:
    task, config = round_.task, round_.task.attack
    if config.kind == "label-flip":
        round_ = round_.replace(y_train=flip_labels(round_.y_train, round_.dataset.num_classes))
    update = call_next(round_)
    generator = attack_generator(task.seed, task.round, round_.data.client_id)
    return tamper_update(update, round_.global_state, config, generator)


def local_dp(round_: ClientRound, call_next: ClientFn) -> ClientUpdate:
    task = round_.task
    return privatize_local(call_next(round_), round_.global_state, task.local_dp, task.seed, task.round)


@dataclasses.dataclass(frozen=True)
class CrashAt(StepHook):
    """Raises ClientCrash at the start of local step crash_step(share, steps)."""

    share: float
    client_id: int

    def start(self, step: LocalStep) -> None:
        if step.index == crash_step(self.share, step.total):
            raise ClientCrash(f"injected crash of client {self.client_id} at local step {step.index}/{step.total}")


def crash(round_: ClientRound, call_next: ClientFn) -> ClientUpdate:
    hook = CrashAt(round_.task.crash_at, round_.data.client_id)
    return call_next(round_.replace(step_hooks=(*round_.step_hooks, hook)))


def builtin_mods(task: ClientTask) -> list[ClientMod]:
    """The wrappers `task` asks for, outermost first (module docstring)."""
    mods: list[ClientMod] = []
    if task.tier.width < 1:
        mods.append(width_slicing)
    if task.attack is not None:
        mods.append(attack)
    if task.local_dp is not None and task.local_dp.mode == "local":
        mods.append(local_dp)
    if task.crash_at is not None:
        mods.append(crash)
    if task.options.warm_start:
        mods.append(warm_start)
    if task.control_variates == "scaffold":
        mods.append(scaffold)
    if task.personalization is not None:
        mods.append(personalize)
    return mods
