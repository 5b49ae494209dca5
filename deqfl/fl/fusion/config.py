"""`FusionConfig`: the typed, validated choice of weighting, aggregator, server optimiser,
their options and the validation limits.

Each rule's parameters sit in its own options table, checked by the chosen entry's typed
model (`deqfl.fl.fusion.options`; old flat keys such as `fusion.quality` still accepted)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from deqfl.errors import ConfigError
from deqfl.fl.fusion.base import RuleOptions
from deqfl.fl.fusion.optimizer.base import OptimizerOptions
from deqfl.fl.fusion.options import canonical_tables, fold_legacy_keys
from deqfl.fl.fusion.registry import AGGREGATORS, OPTIMIZERS, WEIGHTINGS
from deqfl.fl.validation import ValidationLimits


LEGACY_LR_OPTIMIZER = "sgd"
"""The server optimiser whose step size is the historical key `fusion.server_lr`."""


class FusionConfig(BaseModel):
    """How the server fuses a round's client updates (unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    weighting: str = Field(
        "quality",
        description="How client weights are formed: 'examples' (FedAvg, w_k ~ n_k), "
        "'uniform' (w_k = 1/K), 'quality' (w_k ~ n_k q_k), or a registered name.",
    )
    weighting_options: dict[str, Any] = Field(
        default_factory=dict,
        description="Parameters of the chosen weighting, checked by its own model "
        "(docs/FUSION.md): quality source ('residual' q_k = 1/(1 + r_k / median r), 'budget' "
        "q_k = cap_k / reference_cap, 'loss' q_k = 1/(1 + L_k / median L); default residual); "
        "examples, uniform none. Old key still accepted: fusion.quality (= source).",
    )
    residual_floor: float = Field(
        1e-6, gt=0, description="Reported residuals below this are raised to it."
    )
    residual_cap: float = Field(
        10.0, gt=0, description="Reported residuals above this (or infinite) are lowered to it."
    )
    aggregator: str = Field(
        "mean",
        description="How weighted deltas are combined: 'mean', 'fednova', 'heterofl' (needed by "
        "width-sliced tiers), 'median', 'trimmed-mean', 'krum', 'multi-krum', or a registered name.",
    )
    aggregator_options: dict[str, Any] = Field(
        default_factory=dict,
        description="Parameters of the chosen aggregator, checked by its own model "
        "(docs/FUSION.md): trimmed-mean trim_fraction (in [0, 0.5), default 0.1); krum "
        "byzantine (f >= 0, default 1); multi-krum byzantine, select (m >= 1, default null: "
        "K - f); mean, median, fednova, heterofl none. Old keys still accepted: "
        "fusion.trim_fraction, fusion.krum_byzantine (= byzantine), fusion.krum_select (= select).",
    )
    server_lr: float = Field(
        1.0,
        gt=0,
        description="Step size of server_optimizer='sgd': x_new = x + server_lr * fused delta "
        "(other optimisers take lr from server_optimizer_options; leave this at 1).",
    )
    server_optimizer: str = Field(
        "sgd",
        description="How the fused delta moves the global model: 'sgd' (x + server_lr * delta), "
        "'fedavgm', 'fedadam', 'fedyogi', 'fedadagrad' (Reddi et al., ICLR 2021; stateful, "
        "kept in checkpoints), or a registered name. See docs/FUSION.md.",
    )
    server_optimizer_options: dict[str, Any] = Field(
        default_factory=dict,
        description="Parameters of the chosen server optimiser, checked by its own model "
        "(docs/FUSION.md): fedavgm lr, momentum; fedadam lr, beta_1, beta_2, tau, "
        "bias_correction; fedyogi lr, beta_1, beta_2, tau; fedadagrad lr, beta_1, tau; sgd none.",
    )
    control_variates: Literal["none", "scaffold"] = Field(
        "none",
        description="'scaffold': SCAFFOLD (Karimireddy et al., ICML 2020, option II) around the "
        "chosen rule: clients correct their gradients with control variates, which travel with "
        "the model and the updates (counted in bytes); each client's own control variate is kept "
        "in the run's client-state store (Flower: on its node). Not with privacy or width-sliced "
        "tiers. See docs/FUSION.md.",
    )
    max_norm_factor: float | None = Field(
        10.0,
        ge=1,
        description="Reject an update whose delta norm exceeds this multiple of the "
        "round's median delta norm; null disables the bound.",
    )
    min_updates: int = Field(
        1, ge=1, description="Fewer valid updates than this: the round is skipped."
    )

    @model_validator(mode="before")
    @classmethod
    def _rule_options(cls, data: Any) -> Any:
        """Old flat keys into the chosen entries' tables, then each table checked and kept
        canonical (`deqfl.fl.fusion.options`)."""
        if not isinstance(data, Mapping):
            return data
        defaults = {kind: cls.model_fields[kind].default for kind in ("weighting", "aggregator")}
        folded = fold_legacy_keys(data, defaults, reserved=set(cls.model_fields))
        return canonical_tables(folded, defaults)

    @field_validator("weighting")
    @classmethod
    def _known_weighting(cls, name: str) -> str:
        if name not in WEIGHTINGS.names():
            raise ValueError(WEIGHTINGS.unknown(name))
        return name

    @field_validator("aggregator")
    @classmethod
    def _known_aggregator(cls, name: str) -> str:
        if name not in AGGREGATORS.names():
            raise ValueError(AGGREGATORS.unknown(name))
        return name

    @field_validator("server_optimizer")
    @classmethod
    def _known_optimizer(cls, name: str) -> str:
        if name not in OPTIMIZERS.names():
            raise ValueError(OPTIMIZERS.unknown(name))
        return name

    @model_validator(mode="after")
    def _optimizer_options_fit(self) -> FusionConfig:
        if self.server_optimizer != LEGACY_LR_OPTIMIZER and self.server_lr != 1.0:
            raise ValueError(
                f"server_lr={self.server_lr} applies to server_optimizer='{LEGACY_LR_OPTIMIZER}' only; "
                f"set fusion.server_optimizer_options.lr for '{self.server_optimizer}'"
            )
        if self.server_optimizer == LEGACY_LR_OPTIMIZER and self.server_optimizer_options:
            raise ValueError(
                f"server_optimizer_options: '{LEGACY_LR_OPTIMIZER}' takes no options (its step size "
                f"is fusion.server_lr); got {sorted(self.server_optimizer_options)}"
            )
        try:
            self.optimizer_options()
        except ValidationError as exc:
            problems = "; ".join(
                f"server_optimizer_options.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                for e in exc.errors()
            )
            raise ValueError(f"server_optimizer '{self.server_optimizer}': {problems}") from None
        return self

    @model_validator(mode="after")
    def _floor_below_cap(self) -> FusionConfig:
        if self.residual_floor >= self.residual_cap:
            raise ValueError(
                f"residual_floor ({self.residual_floor}) must be below "
                f"residual_cap ({self.residual_cap})"
            )
        return self

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], prefix: str = "fusion") -> FusionConfig:
        """Build from a mapping (e.g. a TOML table); ConfigError naming each bad key."""
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            lines = []
            for err in exc.errors():
                key = ".".join([prefix, *(str(p) for p in err["loc"])])
                lines.append(f"{key}: {err['msg']}")
            raise ConfigError("invalid fusion config:\n  " + "\n  ".join(lines)) from None

    def __hash__(self) -> int:  # the options tables are dicts
        return hash(self.model_dump_json())

    def optimizer_options(self) -> OptimizerOptions:
        """The chosen server optimiser's typed options (sgd: lr = server_lr)."""
        options = dict(self.server_optimizer_options)
        if self.server_optimizer == LEGACY_LR_OPTIMIZER:
            options["lr"] = self.server_lr
        return OPTIMIZERS.get(self.server_optimizer).Options.model_validate(options)

    def weighting_params(self) -> RuleOptions:
        """The chosen weighting's typed options (from `weighting_options`)."""
        return WEIGHTINGS.options(self.weighting).model_validate(self.weighting_options)

    def aggregator_params(self) -> RuleOptions:
        """The chosen aggregator's typed options (from `aggregator_options`)."""
        return AGGREGATORS.options(self.aggregator).model_validate(self.aggregator_options)

    def limits(self) -> ValidationLimits:
        """The bounds `deqfl.fl.validation` applies under this config."""
        return ValidationLimits(
            residual_floor=self.residual_floor,
            residual_cap=self.residual_cap,
            max_norm_factor=self.max_norm_factor,
        )
