"""Clients held out of training, fitted and evaluated by the server after the last round.

Each unseen client (never sampled: `RoundSettings.held_out`) receives what travels of the
final global model, completed with the build-time values of what does not
(`deqfl.fl.personal.mod.complete_download`), runs its algorithm's `fit_unseen` for
`steps` local steps at its own tier's forward cap (`PersonalAlgorithm.unseen_fit`: the
personal part, everything, or nothing) and is evaluated on its own test split. The work is
seeded by (seed, round, client) as a training job is, and runs on the server's model copy,
whose state is restored afterwards, so every engine gives the same numbers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from deqfl.data import DatasetArrays
from deqfl.fl.client.task import ClientData, ClientTask
from deqfl.fl.client.train import train_client
from deqfl.fl.personal.mod import complete_download
from deqfl.fl.personal.summary import METRIC, accuracy_summary
from deqfl.fl.plan import RoundSettings, wire_state
from deqfl.fl.profiles import TierConfig

_SEED_TAG = 0x0115EE


def unseen_clients(num_clients: int, fraction: float, seed: int) -> list[int]:
    """The clients held out of training: round(fraction * num_clients) of them, drawn
    without replacement by `seed`, sorted."""
    count = round(fraction * num_clients)
    if count == 0:
        return []
    draw = np.random.default_rng([seed, _SEED_TAG])
    return sorted(int(c) for c in draw.choice(num_clients, size=count, replace=False))


def evaluate_unseen(
    model: nn.Module,
    dataset: DatasetArrays,
    clients: list[ClientData],
    tiers: list[TierConfig],
    settings: RoundSettings,
    global_state: Mapping[str, torch.Tensor],
    initial: Mapping[str, torch.Tensor],
    round_number: int,
    steps: int,
) -> dict[str, Any] | None:
    """The summary (`deqfl.fl.personal.summary.accuracy_summary`) of the unseen clients'
    personalised accuracy (module docstring); None when none is held out."""
    if not settings.held_out or settings.personalization is None:
        return None
    task = dataclasses.replace(settings.personalization, unseen=True)
    received = complete_download(wire_state(global_state, settings), initial, task)
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    values, names = [], []
    try:
        for cid in settings.held_out:
            tier = tiers[cid].model_copy(update={"local_steps": steps, "step_fraction": 1.0})
            client_task = ClientTask(
                round=round_number, seed=settings.seed, tier=tier, forward_cap=tier.forward_cap,
                reference_cap=settings.reference_cap, reference_tol=settings.reference_tol,
                options=settings.options, personalization=task,
            )
            draw = np.random.default_rng([settings.seed, round_number, cid, _SEED_TAG]).integers(2**62)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(draw))
                update = train_client(model, dict(received), client_task, dataset, clients[cid])
            values.append(update.metrics[METRIC])
            names.append(tier.name)
    finally:
        model.load_state_dict(saved)
    return accuracy_summary(values, names)
