"""Honest local training, and `train_client`: the round with the task's mods around it.

`local_training` loads the global state, runs `local_steps` steps of a fresh client
optimiser (`deqfl.fl.client.optimizers`, default SGD with momentum and weight decay, at
the round's rate) minimising the sum of the round's loss terms
(`deqfl.fl.client.loss_terms`) on batches augmented by the task's `augment`
(`deqfl.data.augment`), with every DEQ at the tier's forward cap, tolerance and gradient
mode (`deqfl.fl.client.gradient_mode`), calling the step hooks (`deqfl.fl.client.hooks`)
at their points of each step, then reports:

- `num_examples`: its training samples; `local_steps`; mean forward iterations;
- `residual` r_k: mean relative residual ||f(z)-z|| / ||f(z)|| that the *returned* model
  reaches at the reference budget (the strongest tier's cap) on up to
  `residual_samples` of its own training samples (DEQ models only);
- training loss (the task term), loss and accuracy on its held-back slice (at its own
  budget), and `loss_<name>` for every other term that contributed;
- measured compute seconds (reported, never acted on) and work units for the simulated
  clock (`deqfl.fl.clock`): the DEQ layers' cell evaluations, or for an explicit model
  EXPLICIT_STEP_UNITS per training sample plus one per holdout sample.

Randomness comes from generators seeded by (seed, round, client id) only: the batch
order from one, the Jacobian penalty's probes from another, the augmentation's draws from
a third (drawn from only when augmentation is on), so a client's work does not depend on
which other clients ran before it in the same process.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from deqfl.data import DatasetArrays
from deqfl.data.augment import batch_augmentation
from deqfl.deq.backward import BackwardMode
from deqfl.deq.budget import deq_layers, solver_budget
from deqfl.devices import module_device
from deqfl.fl.client.gradient_mode import tier_backward
from deqfl.fl.client.hooks import LocalStep
from deqfl.fl.client.loss_terms import LossInputs, default_loss_terms, total_loss
from deqfl.fl.client.mods import ClientMod, ClientRound, chain
from deqfl.fl.client.optimizers import make_client_optimizer
from deqfl.fl.client.task import ClientData, ClientTask, client_generator, local_step_count
from deqfl.fl.client.wrappers import builtin_mods
from deqfl.fl.clock import EXPLICIT_STEP_UNITS
from deqfl.fl.update import ClientUpdate
from deqfl.models import federated_state, load_federated_state

_PROBE_TAG = 0x1AC0B
_AUGMENT_TAG = 0xA06


def train_client(
    model: nn.Module,
    global_state: dict[str, torch.Tensor],
    task: ClientTask,
    dataset: DatasetArrays,
    data: ClientData,
    *,
    mods: Sequence[ClientMod] = (),
    client_state: dict[str, torch.Tensor] | None = None,
    server_extras: dict[str, torch.Tensor] | None = None,
) -> ClientUpdate:
    """One client's round: `local_training` wrapped in the task's built-in mods
    (`deqfl.fl.client.wrappers.builtin_mods`, outermost) and then `mods` (innermost, in
    order). Starts with the default loss terms and no step hooks; mods may add both.
    `client_state` is the client's persistent state, returned (as the mods leave it) in
    `ClientUpdate.client_state`; `server_extras` is what the server broadcast besides the
    model (`ClientRound.server_extras`). The global state is taken in sorted key order, so draws
    made key by key (local DP noise, attacks) do not depend on the order it was decoded in
    (safetensors decodes in an order that varies between processes). The client's rows and
    its state are copied to the model's device (a new dict: read the state back from the
    update)."""
    device = module_device(model)
    round_ = ClientRound(
        model=model,
        global_state=dict(sorted(global_state.items())),
        task=task,
        dataset=dataset,
        data=data,
        x_train=dataset.normalise(dataset.x_train[data.train_indices], device),
        y_train=torch.as_tensor(dataset.y_train[data.train_indices], device=device),
        loss_terms=default_loss_terms(task.options, model),
        step_hooks=(),
        client_state=None if client_state is None else {k: v.to(device) for k, v in client_state.items()},
        server_extras={k: v.to(device) for k, v in (server_extras or {}).items()},
    )
    return chain([*builtin_mods(task), *mods], local_training)(round_)


@dataclass
class _Trained:
    steps: int
    batch_size: int
    losses: dict[str, list[float]] = field(default_factory=dict)
    iterations: list[float] = field(default_factory=list)


def local_training(round_: ClientRound) -> ClientUpdate:
    """Honest local training of `round_` (module docstring)."""
    start = time.perf_counter()
    model, task, data = round_.model, round_.task, round_.data
    load_federated_state(model, round_.global_state)
    layers = deq_layers(model)
    for _, deq in layers:
        deq.reset_counters()
    trained = _train(round_, tier_backward(task.tier, model))
    model.eval()
    residual = None
    if layers:
        rows = round_.x_train[: task.options.residual_samples]
        with torch.no_grad(), solver_budget(model, task.reference_cap, task.reference_tol) as solves:
            model(rows)
        residual = solves.mean_rel_residual
    holdout_loss, holdout_accuracy = _holdout(model, round_.dataset, data, task)
    samples_seen = trained.steps * trained.batch_size
    work = (
        float(sum(deq.cell_evals for _, deq in layers))
        if layers
        else float(EXPLICIT_STEP_UNITS * samples_seen + len(data.holdout_indices))
    )
    extra = {f"loss_{name}": float(np.mean(v)) for name, v in trained.losses.items() if name != "task"}
    return ClientUpdate(
        client_id=data.client_id,
        tier=task.tier.name,
        state=federated_state(model),
        num_examples=len(round_.y_train),
        local_steps=trained.steps,
        forward_cap=task.forward_cap if layers else 0,
        residual=residual,
        holdout_loss=holdout_loss,
        momentum=task.options.momentum,
        metrics={
            "train_loss": float(np.mean(trained.losses["task"])),
            "holdout_accuracy": holdout_accuracy,
            "iterations": float(np.mean(trained.iterations)) if trained.iterations else 0.0,
            "work_units": work,
            "compute_seconds": time.perf_counter() - start,
            **extra,
        },
        client_state=round_.client_state,
    )


def _train(round_: ClientRound, backward: BackwardMode) -> _Trained:
    """The local loop: batches drawn without replacement, reshuffled when exhausted."""
    model, task, opts = round_.model, round_.task, round_.task.options
    tier, cid, n = task.tier, round_.data.client_id, len(round_.y_train)
    batch_size = tier.batch_size or opts.batch_size
    trained = _Trained(local_step_count(tier, n, batch_size), batch_size)
    order_gen, probe_gen = client_generator(task, cid), client_generator(task, cid, _PROBE_TAG)
    params = {k: p for k, p in model.named_parameters() if p.requires_grad}
    anchor = {k: p.detach().clone() for k, p in params.items()}
    optimizer = make_client_optimizer(list(params.values()), opts)
    augment = batch_augmentation(
        opts.augment, round_.dataset, client_generator(task, cid, _AUGMENT_TAG), round_.x_train.device
    )
    model.train()
    has_deq = bool(deq_layers(model))
    order, cursor = _shuffled(n, order_gen, round_.y_train.device), 0
    for index in range(trained.steps):
        step = LocalStep(index, trained.steps, model, params, anchor, optimizer, round_.client_state)
        for hook in round_.step_hooks:
            hook.start(step)
        if cursor + trained.batch_size > len(order) and cursor > 0:
            order, cursor = _shuffled(n, order_gen, round_.y_train.device), 0
        batch = order[cursor : cursor + trained.batch_size]
        cursor += trained.batch_size
        x = round_.x_train[batch] if augment is None else augment(round_.x_train[batch])
        step.batch = batch
        for hook in round_.step_hooks:
            hook.before_forward(step)
        with solver_budget(model, task.forward_cap, tier.tol, backward, probe_gen, keep_fixed_points=True) as solves:
            logits = model(x)
        inputs = LossInputs(logits, round_.y_train[batch], params, anchor, solves, round_.client_state)
        loss, step.losses = total_loss(round_.loss_terms, inputs)
        step.solves = solves
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for hook in round_.step_hooks:
            hook.before_update(step)
        optimizer.step()
        for hook in round_.step_hooks:
            hook.after_update(step)
        for name, value in step.losses.items():
            trained.losses.setdefault(name, []).append(value)
        if has_deq:
            trained.iterations.append(solves.mean_iterations)
    return trained


def _shuffled(n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """A permutation of range(n) drawn on the generator's device (the same order on every
    device), placed on `device`."""
    return torch.randperm(n, generator=generator, device=generator.device).to(device)


def _holdout(model: nn.Module, dataset: DatasetArrays, data: ClientData, task: ClientTask):
    if len(data.holdout_indices) == 0:
        return None, None
    device = module_device(model)
    x = dataset.normalise(dataset.x_train[data.holdout_indices], device)
    y = torch.as_tensor(dataset.y_train[data.holdout_indices], device=device)
    with torch.no_grad(), solver_budget(model, task.forward_cap, task.tier.tol):
        logits = model(x)
    loss = float(nn.functional.cross_entropy(logits, y))
    accuracy = float((logits.argmax(1) == y).float().mean())
    return loss, accuracy
