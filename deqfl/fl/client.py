"""Client training under a device budget: what one device does in one round.

The client loads the global state, runs `local_steps` SGD steps (momentum, weight decay,
optional FedProx term mu/2 ||w - w_global||^2) with its tier's forward cap, tolerance and
gradient mode, then reports:

- `num_examples`: its training samples; `local_steps`; mean forward iterations;
- `residual` r_k: mean relative residual ||f(z)-z|| / ||f(z)|| that the *returned* model
  reaches at the reference budget (the strongest tier's cap) on up to
  `residual_samples` of its own training samples (DEQ models only);
- training loss, loss and accuracy on its held-back slice (at its own budget);
- measured compute seconds (reported, never acted on) and work units for the simulated
  clock (`deqfl.fl.clock`).

A tier of `width` r < 1 (the HeteroFL baseline) trains the width-r sub-model on the
leading slices of the global state and returns the sub-model's state; its work units are
scaled by the sub-model's share of the multiply-accumulates (`deqfl.models.width`).

Randomness (batch order) comes from a generator seeded by (seed, round, client id), so a
client's work does not depend on which other clients ran before it.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from deqfl.data import DatasetArrays
from deqfl.deq.backward import make_backward
from deqfl.fl.attacks import AttackConfig, attack_generator, flip_labels, tamper_update
from deqfl.fl.clock import EXPLICIT_STEP_UNITS
from deqfl.fl.faults import ClientCrash, crash_step
from deqfl.fl.privacy import PrivacyConfig, privatize_local
from deqfl.fl.profiles import TierConfig
from deqfl.fl.update import ClientUpdate
from deqfl.models import find_deq, federated_state, load_federated_state
from deqfl.models.width import multiply_accumulates, narrow_model, slice_state, sub_shapes


@dataclass(frozen=True)
class ClientData:
    """A client as the server keeps it until sampled: its row indices, nothing more."""

    client_id: int
    train_indices: np.ndarray
    holdout_indices: np.ndarray


@dataclass(frozen=True)
class TrainOptions:
    lr: float
    momentum: float
    weight_decay: float
    batch_size: int
    proximal_mu: float
    residual_samples: int


@dataclass(frozen=True)
class ClientTask:
    """Everything a client needs for one round besides the model and its data."""

    round: int
    seed: int
    tier: TierConfig
    forward_cap: int
    reference_cap: int
    reference_tol: float
    options: TrainOptions
    attack: AttackConfig | None = None
    """Set for a malicious client: what it does (`deqfl.fl.attacks`)."""
    crash_at: float | None = None
    """Set for an injected crash: the share of local steps done before it raises."""
    local_dp: PrivacyConfig | None = None
    """Set under local DP: the client clips and noises its update (`deqfl.fl.privacy`)."""


def local_step_count(tier: TierConfig, num_train: int, batch_size: int) -> int:
    """Steps of one round: `local_steps`, or epochs * ceil(n / batch), times step_fraction."""
    full = tier.local_steps or tier.local_epochs * math.ceil(num_train / batch_size)
    return max(1, math.ceil(full * tier.step_fraction))


def budget(model: nn.Module, cap: int | None, tol: float | None, tier: TierConfig | None = None):
    """Context in which the model's DEQ (if any) runs at forward cap `cap` and tolerance
    `tol`, with `tier`'s gradient mode when given; a no-op for explicit models."""
    deq = find_deq(model)
    if deq is None or cap is None:
        return contextlib.nullcontext()
    backward = tier_backward(tier) if tier is not None else None
    return deq.override(max_iter=cap, tol=tol, backward=backward)


def tier_backward(tier: TierConfig):
    """The tier's gradient mode: `backward_steps` is phantom's k or IFT's backward cap."""
    options = {
        "phantom": {"k": tier.backward_steps, "tau": tier.phantom_tau},
        "ift": {"max_iter": tier.backward_steps},
    }.get(tier.backward, {})
    return make_backward(tier.backward, **options)


def train_client(
    model: nn.Module,
    global_state: dict[str, torch.Tensor],
    task: ClientTask,
    dataset: DatasetArrays,
    data: ClientData,
) -> ClientUpdate:
    start = time.perf_counter()
    compute_share = 1.0
    if task.tier.width < 1:
        full, model = model, narrow_model(model, task.tier.width)
        global_state = slice_state(global_state, sub_shapes(model))
        shape = tuple(dataset.input_shape)
        compute_share = multiply_accumulates(model, shape) / multiply_accumulates(full, shape)
    load_federated_state(model, global_state)
    deq = find_deq(model)
    if deq is not None:
        deq.reset_counters()
    tier, opts = task.tier, task.options
    batch_size = tier.batch_size or opts.batch_size
    x_train = dataset.normalise(dataset.x_train[data.train_indices])
    y_train = torch.as_tensor(dataset.y_train[data.train_indices])
    if task.attack is not None and task.attack.kind == "label-flip":
        y_train = flip_labels(y_train, dataset.num_classes)
    steps = local_step_count(tier, len(y_train), batch_size)
    crash = crash_step(task.crash_at, steps)
    generator = torch.Generator().manual_seed(
        int(np.random.default_rng([task.seed, task.round, data.client_id]).integers(2**62))
    )
    params = [p for p in model.parameters() if p.requires_grad]
    anchor = [p.detach().clone() for p in params] if opts.proximal_mu > 0 else None
    optimizer = torch.optim.SGD(
        params, lr=opts.lr, momentum=opts.momentum, weight_decay=opts.weight_decay
    )
    model.train()
    losses, iterations = [], []
    order = torch.randperm(len(y_train), generator=generator)
    cursor = 0
    with budget(model, task.forward_cap, tier.tol, tier):
        for step in range(steps):
            if step == crash:
                raise ClientCrash(f"injected crash of client {data.client_id} at local step {step}/{steps}")
            if cursor + batch_size > len(order) and cursor > 0:
                order, cursor = torch.randperm(len(y_train), generator=generator), 0
            batch = order[cursor : cursor + batch_size]
            cursor += batch_size
            loss = nn.functional.cross_entropy(model(x_train[batch]), y_train[batch])
            losses.append(loss.item())
            if anchor is not None:
                prox = sum(((p - a) ** 2).sum() for p, a in zip(params, anchor))
                loss = loss + 0.5 * opts.proximal_mu * prox
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if deq is not None:
                iterations.append(float(deq.last_stats.mean_iterations))
    model.eval()
    residual = None
    if deq is not None:
        residual_rows = x_train[: opts.residual_samples]
        with torch.no_grad(), budget(model, task.reference_cap, task.reference_tol):
            model(residual_rows)
        residual = float(deq.last_stats.mean_rel_residual)
    holdout_loss, holdout_accuracy = _holdout(model, dataset, data, task)
    samples_seen = steps * batch_size
    work = (
        float(deq.cell_evals)
        if deq is not None
        else float(EXPLICIT_STEP_UNITS * samples_seen + len(data.holdout_indices)) * compute_share
    )
    update = ClientUpdate(
        client_id=data.client_id,
        tier=tier.name,
        state=federated_state(model),
        num_examples=len(y_train),
        local_steps=steps,
        forward_cap=task.forward_cap if deq is not None else 0,
        residual=residual,
        holdout_loss=holdout_loss,
        momentum=opts.momentum,
        metrics={
            "train_loss": float(np.mean(losses)),
            "holdout_accuracy": holdout_accuracy,
            "iterations": float(np.mean(iterations)) if iterations else 0.0,
            "work_units": work,
            "compute_seconds": time.perf_counter() - start,
        },
    )
    if task.local_dp is not None and task.local_dp.mode == "local":
        update = privatize_local(update, global_state, task.local_dp, task.seed, task.round)
    if task.attack is not None:
        generator = attack_generator(task.seed, task.round, data.client_id)
        update = tamper_update(update, global_state, task.attack, generator)
    return update


def _holdout(model: nn.Module, dataset: DatasetArrays, data: ClientData, task: ClientTask):
    if len(data.holdout_indices) == 0:
        return None, None
    x = dataset.normalise(dataset.x_train[data.holdout_indices])
    y = torch.as_tensor(dataset.y_train[data.holdout_indices])
    with torch.no_grad(), budget(model, task.forward_cap, task.tier.tol):
        logits = model(x)
    loss = float(nn.functional.cross_entropy(logits, y))
    accuracy = float((logits.argmax(1) == y).float().mean())
    return loss, accuracy
