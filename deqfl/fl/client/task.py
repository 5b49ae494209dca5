"""What the server hands a client for one round: its rows, its task, its local options."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from deqfl.fl.attacks import AttackConfig
from deqfl.fl.privacy import PrivacyConfig
from deqfl.fl.profiles import TierConfig


@dataclass(frozen=True)
class ClientData:
    """A client as the server keeps it until sampled: its row indices, nothing more."""

    client_id: int
    train_indices: np.ndarray
    holdout_indices: np.ndarray


@dataclass(frozen=True)
class TrainOptions:
    """Local training: the client optimiser `optimizer` (`deqfl.fl.client.optimizers`; sgd:
    SGD(lr, momentum, weight_decay)) with its `optimizer_options`, at the round's rate `lr`
    (the server's schedule, `deqfl.fl.lr_schedule`), on batches of `batch_size`, each
    augmented by `augment` (`deqfl.data.augment`; "none": as stored), FedProx's proximal
    weight `proximal_mu` (0: off), up to `residual_samples` rows for the residual probe, the
    weight of the DEQ's Jacobian penalty in the loss (used when the model's
    `jac_reg_samples` > 0), warm starts (`deqfl.fl.client.warm_start`: each training
    solve starts from the sample's cached fixed point, stored in `warm_start_dtype`), and
    fixed-point correction's weight (0: off) and points
    (`deqfl.fl.client.loss_terms.FixedPointCorrection`)."""

    lr: float
    momentum: float
    weight_decay: float
    batch_size: int
    proximal_mu: float
    residual_samples: int
    jacobian_weight: float = 1.0
    optimizer: str = "sgd"
    optimizer_options: dict[str, Any] = field(default_factory=dict)
    """The optimiser's options, as `train.optimizer_options` holds them (checked there)."""
    augment: str = "none"
    warm_start: bool = False
    warm_start_dtype: str = "float16"
    fixed_point_correction: float = 0.0
    correction_points: int = 2

    @property
    def active_correction_points(self) -> int:
        """Correction points a training forward keeps: `correction_points` when fixed-point
        correction is on, else 0."""
        return self.correction_points if self.fixed_point_correction > 0 else 0


@dataclass(frozen=True)
class PersonalTask:
    """A personalised round (`deqfl.fl.personal`): the algorithm, its validated options,
    the model's personal keys (`deqfl.fl.personal.split`), the keys that never travel (the
    download lacks them, the upload must too), the size of the client's test split, and
    whether the client is an unseen one."""

    algorithm: str
    options: dict
    personal: tuple[str, ...]
    local: tuple[str, ...]
    test_rows: int
    unseen: bool = False
    """A client held out of training: it fits its personalised model and is evaluated."""

    def __post_init__(self) -> None:  # JSON (Flower's task) turns tuples into lists
        object.__setattr__(self, "personal", tuple(self.personal))
        object.__setattr__(self, "local", tuple(self.local))


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
    control_variates: str = "none"
    """"scaffold": the client runs SCAFFOLD's mod (`deqfl.fl.client.scaffold`)."""
    personalization: PersonalTask | None = None
    """Set under `personalization.algorithm`: the client runs the algorithm's mod."""


def local_step_count(tier: TierConfig, num_train: int, batch_size: int) -> int:
    """Steps of one round: `local_steps`, or epochs * ceil(n / batch), times step_fraction."""
    full = tier.local_steps or tier.local_epochs * math.ceil(num_train / batch_size)
    return max(1, math.ceil(full * tier.step_fraction))


def client_generator(task: ClientTask, client_id: int, *tag: int) -> torch.Generator:
    """A generator seeded by (seed, round, client, *tag) only, so a client's draws never
    depend on which clients ran before it. No tag: the batch order's generator."""
    draw = np.random.default_rng([task.seed, task.round, client_id, *tag]).integers(2**62)
    return torch.Generator().manual_seed(int(draw))
