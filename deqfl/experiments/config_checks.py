"""Checks that span sections of an experiment config, run by `validate_config` after each
section has validated on its own: combinations no single field can reject (an optimiser
against the fusion rule that assumes another, a personalised algorithm against SCAFFOLD,
a client id outside the fleet, ...). Each check raises `ConfigError` naming the keys
involved and what to change; each is one function in `CROSS_SECTION_CHECKS`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from deqfl.errors import ConfigError
from deqfl.fl.client.optimizers import client_optimizer
from deqfl.fl.fusion.compat import coverage_aggregators
from deqfl.fl.personal.unseen import unseen_clients
from deqfl.fl.privacy import check_fusion
from deqfl.models import list_models, validate_model_options

if TYPE_CHECKING:
    from deqfl.experiments.config import ExperimentConfig


def check_client_training(config: ExperimentConfig, source: str) -> None:
    """FedNova's normaliser and SCAFFOLD's control variate assume heavy-ball SGD steps
    (`deqfl.fl.client.optimizers.base`); warmup ends before the last round."""
    train = config.train
    if not client_optimizer(train.optimizer).heavy_ball:
        users = {"fusion.aggregator = 'fednova'": config.fusion.aggregator == "fednova",
                 "fusion.control_variates = 'scaffold'": config.fusion.control_variates == "scaffold"}
        for setting, uses in users.items():
            if uses:
                raise ConfigError(
                    f"invalid {source}:\n  train.optimizer = '{train.optimizer}' does not run heavy-ball SGD steps, "
                    f"which {setting} assumes; use train.optimizer = 'sgd'"
                )
    rounds = config.experiment.rounds
    if train.lr_warmup_rounds >= rounds:
        raise ConfigError(
            f"invalid {source}:\n  train.lr_warmup_rounds = {train.lr_warmup_rounds} leaves no round after warmup "
            f"(experiment.rounds = {rounds}); use fewer warmup rounds"
        )


def check_personalization(config: ExperimentConfig, source: str) -> None:
    """A personalised algorithm runs without SCAFFOLD, privacy and width-sliced tiers
    (their updates assume the whole model travels), and an unseen share leaves both
    training and unseen clients."""
    p = config.personalization
    if p.algorithm == "none":
        if p.unseen_fraction > 0:
            raise ConfigError(f"invalid {source}:\n  personalization.unseen_fraction = {p.unseen_fraction:g} needs a "
                              "personalization.algorithm (e.g. 'fedavg' to evaluate the global model on unseen clients)")
        return
    sliced = [t.name for t in config.fleet.resolved_tiers() if t.width < 1]
    problems = {
        "fusion.control_variates": config.fusion.control_variates != "none",
        "privacy.mode": config.privacy.enabled,
        "fleet.tiers (a tier of width < 1)": bool(sliced),
    }
    for key, bad in problems.items():
        if bad:
            raise ConfigError(f"invalid {source}:\n  personalization.algorithm = '{p.algorithm}' is not supported "
                              f"with {key}: set one of them back to its default")
    unseen = len(unseen_clients(config.data.num_clients, p.unseen_fraction, config.experiment.seed))
    if p.unseen_fraction > 0 and not 0 < unseen < config.data.num_clients:
        raise ConfigError(f"invalid {source}:\n  personalization.unseen_fraction = {p.unseen_fraction:g} holds out "
                          f"{unseen} of data.num_clients = {config.data.num_clients}; it must hold out at least one and "
                          "leave at least one for training")


def check_model_options(config: ExperimentConfig, source: str) -> None:
    """`model.name` is registered and `model.options` fit its builder's typed options
    (`deqfl.models.options`), checked before any data loads."""
    if config.model.name not in list_models():
        raise ConfigError(f"invalid {source}:\n  model.name: unknown model {config.model.name!r}; "
                          f"registered models: {', '.join(list_models())}")
    try:
        validate_model_options(config.model.name, config.model.options)
    except ConfigError as exc:
        raise ConfigError(f"invalid {source}:\n  model.options: {exc}") from None


def check_width_slicing(config: ExperimentConfig, source: str) -> None:
    """Width-sliced tiers (HeteroFL) need the aggregator that averages each entry over the
    clients that trained it; the model's side is checked when the run builds it."""
    sliced = [t for t in config.fleet.resolved_tiers() if t.width < 1]
    if sliced and config.fusion.aggregator not in coverage_aggregators():
        choices = " or ".join(f"'{name}'" for name in coverage_aggregators())
        raise ConfigError(
            f"invalid {source}:\n  fleet.tiers '{sliced[0].name}': width {sliced[0].width:g} (a HeteroFL sub-model) "
            f"needs fusion.aggregator = {choices}, which averages each entry over the clients that trained it; "
            f"got '{config.fusion.aggregator}'"
        )


def check_control_variates(config: ExperimentConfig, source: str) -> None:
    """SCAFFOLD (`fusion.control_variates = "scaffold"`) runs without privacy and without
    width-sliced tiers (docs/FUSION.md says why)."""
    if config.fusion.control_variates == "none":
        return
    sliced = [t.name for t in config.fleet.resolved_tiers() if t.width < 1]
    problems = {
        "privacy.mode": (config.privacy.enabled,
                         f"is '{config.privacy.mode}'; the control variates are neither clipped nor noised, so no DP guarantee would hold"),
        "fleet.tiers": (bool(sliced), f"has tier '{sliced[0] if sliced else ''}' of width < 1; control variates "
                        "of width-sliced sub-models are not defined"),
    }
    for key, (bad, why) in problems.items():
        if bad:
            raise ConfigError(
                f"invalid {source}:\n  fusion.control_variates = 'scaffold' is not supported when {key} {why}"
            )


def check_reliability(config: ExperimentConfig, source: str) -> None:
    """Cross-section checks of [attack], [faults] and [privacy] (issue 7)."""
    n = config.data.num_clients
    lists = {
        "attack.clients": config.attack.clients or [],
        "faults.crash_clients": config.faults.crash_clients,
        "faults.straggler_clients": config.faults.straggler_clients,
    }
    for key, ids in lists.items():
        bad = [c for c in ids if not 0 <= c < n]
        if bad:
            raise ConfigError(f"invalid {source}:\n  {key}: client ids {bad} are not in 0..{n - 1} (data.num_clients={n})")
    try:
        check_fusion(config.privacy, config.fusion)
    except ConfigError as exc:
        raise ConfigError(f"invalid {source}:\n  {exc}") from None


CROSS_SECTION_CHECKS: tuple[Callable[[ExperimentConfig, str], None], ...] = (
    check_reliability, check_width_slicing, check_control_variates, check_model_options,
    check_client_training, check_personalization,
)
"""In the order `validate_config` runs them: the first failing one is reported."""
