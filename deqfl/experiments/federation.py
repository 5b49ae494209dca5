"""What a run builds from its config before the first round, and the settings every round
shares.

`build_federation(config)` loads the data, partitions it into clients (`client_partition`:
the same split on the server and on every deployed device), assigns device tiers, builds
the model (and each HeteroFL sub-model) and draws the evaluation rows; bad combinations
the config alone cannot show (a tier's gradient mode against the model, warm starts
without a DEQ, a client left without training rows) fail here, before any round.
`round_settings(fed)` is the `RoundSettings` every round of the run uses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from deqfl.data import DatasetArrays, load_dataset
from deqfl.data.clients import client_rows
from deqfl.devices import prepare_device
from deqfl.errors import ConfigError
from deqfl.experiments.config import ExperimentConfig
from deqfl.fl.attacks import malicious_clients
from deqfl.fl.client import ClientData, TrainOptions, tier_backward
from deqfl.fl.client.loss_terms import check_deq_terms
from deqfl.fl.client.task import PersonalTask
from deqfl.fl.client.warm_start import cache_bytes_per_sample
from deqfl.fl.personal.mod import local_keys
from deqfl.fl.personal.split import split_model
from deqfl.fl.personal.unseen import unseen_clients
from deqfl.fl.profiles import TierConfig, assign_tiers, reference_tier
from deqfl.fl.server import RoundSettings
from deqfl.models import build_model, find_deq
from deqfl.models.width import narrow_model, sub_shapes


@dataclass
class Federation:
    """Everything a run builds from its config before the first round."""

    config: ExperimentConfig
    device: torch.device
    """Where the model and every tensor of a round live (`experiment.device`, resolved)."""
    dataset: DatasetArrays
    clients: list[ClientData]
    tiers: list[TierConfig]
    reference: TierConfig
    model: torch.nn.Module
    eval_rows: np.ndarray | None
    """The test rows of the per-round evaluation, sorted (`data.eval_subset`; None: all)."""
    x_test: torch.Tensor
    y_test: torch.Tensor
    """The evaluation rows stay on the host; `evaluate` moves one batch at a time."""
    sub_models: dict[float, torch.nn.Module]
    """Width ratio -> the HeteroFL sub-model, for every tier `width` below 1."""


def build_federation(config: ExperimentConfig) -> Federation:
    exp, data = config.experiment, config.data
    torch.set_num_threads(exp.threads)
    device = prepare_device(exp.device)  # CUDA asked for where there is none fails before any data loads
    dataset = load_dataset(data.dataset, data_dir=data.data_dir, cache_dir=data.cache_dir)
    clients = client_partition(config, dataset)
    _check_training_rows(clients, data.holdout_fraction)
    tiers = assign_tiers(data.num_clients, config.fleet.resolved_tiers(), exp.seed)
    torch.manual_seed(exp.seed)
    with torch.device("cpu"):  # built from the CPU generator, so every device starts from the same values
        model = build_model(
            config.model.name, input_shape=dataset.input_shape, num_classes=dataset.num_classes,
            **config.model.options,
        )
    model.to(device)
    for tier in distinct_tiers(tiers):
        tier_backward(tier, model)  # a model option that contradicts a tier's gradient mode fails here
    if config.train.warm_start and find_deq(model) is None:
        raise ConfigError(f"train.warm_start = true needs a DEQ model, but model.name = '{config.model.name}' "
                          "has no DEQ layer: drop train.warm_start or choose a DEQ model (`deqfl models`)")
    check_deq_terms(config.train.fixed_point_correction, model, config.model.name)
    x_test = dataset.normalise(dataset.x_test)
    y_test = torch.as_tensor(dataset.y_test, device="cpu")
    eval_rows = None
    if data.eval_subset and data.eval_subset < len(y_test):
        draw = np.random.default_rng([exp.seed, 0xE7A1])
        eval_rows = np.sort(draw.choice(len(y_test), data.eval_subset, replace=False))
    sub_models = {}
    for tier in (t for t in distinct_tiers(tiers) if t.width < 1):
        try:
            sub_models[tier.width] = narrow_model(model, tier.width)
        except ConfigError as exc:
            raise ConfigError(f"fleet.tiers '{tier.name}' has width {tier.width:g}, but model.name = "
                              f"'{config.model.name}': {exc}") from None
    return Federation(
        config, device, dataset, clients, tiers, reference_tier(config.fleet.resolved_tiers()), model,
        eval_rows, x_test, y_test, sub_models,
    )


def _check_training_rows(clients: list[ClientData], holdout_fraction: float) -> None:
    """ConfigError when the hold-out share leaves some client no training row (it could
    not train: every round would go without it, or be skipped)."""
    empty = [c.client_id for c in clients if len(c.train_indices) == 0]
    if empty:
        sizes = sorted(len(c.train_indices) + len(c.holdout_indices) for c in clients)
        raise ConfigError(
            f"data.holdout_fraction = {holdout_fraction:g} leaves {len(empty)} client(s) without training rows "
            f"(e.g. client {empty[0]}; clients hold {sizes[0]} to {sizes[-1]} rows): lower data.holdout_fraction, "
            "use fewer clients (data.num_clients) or more rows (data.train_subset)"
        )


def client_partition(config: ExperimentConfig, dataset: DatasetArrays) -> list[ClientData]:
    """Every client's training and held-back rows, as the config's partition and seed make
    them (`deqfl.data.clients.client_rows`): the server and every deployed device compute
    the same split from the config."""
    data = config.data
    rows = client_rows(
        dataset.y_train, data.num_clients, data.partition, config.experiment.seed,
        holdout_fraction=data.holdout_fraction, train_subset=data.train_subset,
        alpha=data.alpha, classes_per_client=data.classes_per_client, shards_per_client=data.shards_per_client,
    )
    return [ClientData(r.client_id, r.train_indices, r.holdout_indices) for r in rows]


def round_settings(fed: Federation) -> RoundSettings:
    """The settings every round of the run shares, from its config and what it built."""
    c = fed.config
    return RoundSettings(
        seed=c.experiment.seed,
        fraction=c.sampling.fraction,
        min_clients=c.sampling.min_clients,
        rule=c.sampling.rule,
        min_forward_cap=c.sampling.min_forward_cap,
        deadline_seconds=c.sampling.deadline_seconds,
        transport_dtype=c.transport.dtype,
        reference_cap=fed.reference.forward_cap,
        reference_tol=fed.reference.tol,
        options=TrainOptions(
            lr=c.train.lr, momentum=c.train.momentum, weight_decay=c.train.weight_decay,
            batch_size=c.train.batch_size, proximal_mu=c.train.proximal_mu,
            residual_samples=c.train.residual_samples, optimizer=c.train.optimizer,
            optimizer_options=dict(c.train.optimizer_options), augment=c.data.augment,
            warm_start=c.train.warm_start, warm_start_dtype=c.train.warm_start_dtype,
            fixed_point_correction=c.train.fixed_point_correction, correction_points=c.train.correction_points,
        ),
        lr_schedule=c.train.lr_schedule_over(c.experiment.rounds),
        attack=c.attack if c.attack.active else None,
        malicious=tuple(malicious_clients(c.attack, c.data.num_clients, c.experiment.seed)),
        faults=c.faults,
        privacy=c.privacy if c.privacy.enabled else None,
        sub_shapes={width: sub_shapes(sub) for width, sub in fed.sub_models.items()},
        deq_model=find_deq(fed.model) is not None,
        jacobian_probes=getattr(find_deq(fed.model), "jac_reg_samples", 0),
        control_variates=c.fusion.control_variates,
        client_state_per_sample=(
            cache_bytes_per_sample(fed.model, fed.dataset.input_shape, c.train.warm_start_dtype)
            if c.train.warm_start else 0
        ),
        personalization=personal_task(fed),
        held_out=tuple(unseen_clients(c.data.num_clients, c.personalization.unseen_fraction, c.experiment.seed)),
    )


def personal_task(fed: Federation) -> PersonalTask | None:
    """The run's personalised algorithm as every task carries it (None: none)."""
    p = fed.config.personalization
    if p.algorithm == "none":
        return None
    split = split_model(fed.model, p.personal)
    return PersonalTask(p.algorithm, dict(p.options), split.personal, local_keys(p.algorithm, split), p.test_rows)


def distinct_tiers(tiers: list[TierConfig]) -> list[TierConfig]:
    """One tier of each name, in the order they first appear."""
    seen: dict[str, TierConfig] = {}
    for tier in tiers:
        seen.setdefault(tier.name, tier)
    return list(seen.values())
