"""One experiment = one validated config: a TOML file plus `--set section.key=value` overrides.

Every section is a pydantic model with `extra="forbid"`: unknown keys and invalid values
fail before any work starts, with a message naming the key and the valid choices or range.
`docs/CONFIG.md` is generated from these types (`python -m deqfl.experiments.config_docs`).
"""

from __future__ import annotations

import copy
import os
import tomllib
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar, Literal

import pydantic
import tomli_w
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from deqfl.aliases import reject_both_names, rename_old_keys, renamed_field
from deqfl.data.augment import augmentation_names
from deqfl.devices import check_device_name
from deqfl.errors import ConfigError
from deqfl.experiments.config_checks import CROSS_SECTION_CHECKS
from deqfl.fl.attacks import AttackConfig
from deqfl.fl.client.optimizers import canonical_options, client_optimizer_names
from deqfl.fl.faults import FaultsConfig
from deqfl.fl.lr_schedule import LrSchedule
from deqfl.fl.fusion import FusionConfig
from deqfl.fl.personal import algorithm_class, algorithm_names
from deqfl.fl.privacy import PrivacyConfig
from deqfl.fl.profiles import FleetConfig


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, not the machine's count)."""
    return len(os.sched_getaffinity(0))


FLOAT32_MAX = 3.4028234663852886e38
"""The largest float32: client hyperparameters multiply float32 tensors, so a larger one
cannot even be stored in the optimiser."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)
    renamed: ClassVar[dict[str, str]] = {}
    """Old key -> new key, old names still accepted (`deqfl.aliases`)."""

    @model_validator(mode="before")
    @classmethod
    def _renamed_keys(cls, data: Any) -> Any:
        return reject_both_names(data, cls.renamed)


class ExperimentSection(_Section):
    name: str = Field("default", description="A label for the run, kept in the results.")
    seed: int = Field(0, ge=0, le=2**63 - 1, description="Seed of every random choice of the run (0 to 2^63 - 1).")
    rounds: int = Field(20, gt=0, description="Federated rounds.")
    engine: Literal["embedded", "flower-sim", "flower"] = Field(
        "embedded",
        description="Execution engine: embedded (in-process), flower-sim (Flower simulation, Ray), "
        "flower (a running Flower SuperLink, see [flower] and docs/DEPLOYMENT.md).",
    )
    threads: int = Field(1, gt=0, description="torch intra-op threads, fixed for determinism. 1 is the default: the models' small convolutions gain little from a second thread, and two threads slow down by an order of magnitude when anything else runs on a 2-core machine.")
    checkpoint_every: int = Field(1, ge=0, description="Checkpoint every N rounds (0: never).")
    tensorboard: bool = Field(False, description="Write TensorBoard event files of every round metric to RUN_DIR/tensorboard (`tensorboard --logdir RUN_DIR/tensorboard`); needs `pip install 'deqfl[tracking]'`.")
    workers: int | None = Field(
        None, gt=0,
        description="engine=embedded: worker processes that train a round's clients and run the server's evaluation in parallel (started once per run), "
        "each with `threads` torch threads; 1 trains them one after another in this process. Unset: the usable CPU cores "
        "(os.sched_getaffinity); `deqfl reproduce --parallel K` gives each of its K simultaneous runs max(1, cores // K). "
        "Results are bitwise the same for any value; memory grows with it (a model and one client's data per worker), "
        "not with the registered clients.",
    )

    device: str = Field(
        "auto",
        description="Where the model, client batches and every tensor of a round live: auto (CUDA when torch sees it, "
        "else the CPU), cpu, cuda, or cuda:N. Checked before any data loads (CUDA asked for where torch has none is an "
        "error). On CUDA deqfl turns on torch's deterministic algorithms (warn_only), sets CUBLAS_WORKSPACE_CONFIG and "
        "turns TF32 off; what is still not bitwise on a GPU is in README, \"GPU\". Not part of the run's identity: a run "
        "may be resumed on another device.",
    )

    @field_validator("device")
    @classmethod
    def _device_name(cls, value: str) -> str:
        return check_device_name(value)

    def resolved_workers(self) -> int:
        """`workers`, or when unset the usable CPU cores."""
        return self.workers if self.workers is not None else usable_cores()


class DataSection(_Section):
    dataset: str = Field("mnist", description="Data source: mnist, fashion-mnist, cifar10, digits, synthetic, or a registered one.")
    data_dir: str | None = Field(None, description="Directory (or archive) with the data set's files; default: the packaged source.")
    cache_dir: str | None = Field(None, description="Decoded-array cache (default $DEQFL_CACHE_DIR or ~/.cache/deqfl).")
    num_clients: int = Field(20, gt=0, description="Registered clients the training set is split across.")
    partition: Literal["iid", "dirichlet", "pathological", "shards", "quantity-skew"] = Field(
        "dirichlet", description="How the training set is split across clients."
    )
    alpha: float = Field(0.5, gt=0, description="Dirichlet concentration (dirichlet: label shares; quantity-skew: client sizes; small = skewed).")
    classes_per_client: int = Field(2, gt=0, description="Classes per client (pathological only).")
    shards_per_client: int = Field(2, gt=0, description="Shards per client (shards only).")
    holdout_fraction: float = Field(0.1, ge=0, lt=1, description="Share of each client's data held back for its local evaluation.")
    train_subset: int = Field(0, ge=0, description="Use only the first N training rows (0: all); for quick runs.")
    eval_subset: int = Field(0, ge=0, description="Per-round evaluation on a fixed seeded subset of N test rows (0: all). The final evaluation always uses the whole test set.")
    augment: str = Field(
        "none",
        description="Augmentation of each client's training batches, drawn from a generator seeded by (seed, round, client) "
        "(deqfl/data/augment.py): none, crop-flip (pad 4 black pixels, random crop back to size, random horizontal flip: "
        "the standard CIFAR-10 augmentation; a mirrored digit is another shape, so leave it off for the MNIST-like sets), "
        "or a registered name. Never applied to evaluation or the residual probe.",
    )

    @field_validator("augment")
    @classmethod
    def _known_augmentation(cls, name: str) -> str:
        if name not in augmentation_names():
            raise ValueError(f"unknown augmentation {name!r}; valid choices: {', '.join(augmentation_names())}")
        return name


class ModelSection(_Section):
    name: str = Field("deq-mnist", description="Model name (see `deqfl models`).")
    options: dict[str, Any] = Field(default_factory=dict, description="Keyword options passed to the model builder.")


class TrainSection(_Section):
    optimizer: str = Field(
        "sgd",
        description="Client optimiser, built afresh every round (no optimiser state carries over between rounds): "
        "sgd (momentum, weight_decay), adam, adamw (Adam with decoupled weight decay), or a registered name "
        "(deqfl/fl/client/optimizers/). FedNova and SCAFFOLD need sgd.",
    )
    optimizer_options: dict[str, Any] = Field(
        default_factory=dict,
        description="Options of the chosen optimiser, checked by its own model: adam and adamw beta_1 (0.9), "
        "beta_2 (0.999), eps (1e-8); sgd none (its momentum and weight decay are train.momentum, train.weight_decay).",
    )
    lr: float = Field(0.05, gt=0, le=FLOAT32_MAX, description="Client learning rate (a float32: at most 3.4e38); the base rate of lr_schedule.")
    lr_schedule: Literal["constant", "cosine", "step"] = Field(
        "constant",
        description="The clients' rate over rounds, decided by the server and sent in each task (deqfl/fl/lr_schedule.py): "
        "constant; cosine from lr down towards lr_min over the rounds after warmup; step (times lr_step_factor every "
        "lr_step_rounds rounds). Each round's rate is in its record (`lr`).",
    )
    lr_min: float = Field(0.0, ge=0, le=FLOAT32_MAX, description="lr_schedule=cosine: the rate it falls to at the end of the last round (at most lr).")
    lr_warmup_rounds: int = Field(0, ge=0, description="Rounds of linear warmup before the schedule: round r <= W trains at lr * r / (W + 1); fewer than experiment.rounds.")
    lr_step_rounds: int = Field(1, gt=0, description="lr_schedule=step: rounds between two steps.")
    lr_step_factor: float = Field(0.1, gt=0, le=1, description="lr_schedule=step: the factor of each step.")
    momentum: float = Field(0.9, ge=0, lt=1, description="Client SGD momentum (optimizer=sgd).")
    weight_decay: float = Field(0.0, ge=0, le=FLOAT32_MAX, description="Client weight decay (at most 3.4e38): L2 added to the gradient (sgd, adam), decoupled (adamw).")
    batch_size: int = Field(32, gt=0, description="Client batch size (a tier may override).")
    proximal_mu: float = Field(0.0, ge=0, le=FLOAT32_MAX, description="FedProx proximal term mu (0: plain local SGD; at most 3.4e38).")
    residual_samples: int = Field(256, gt=0, description="Own samples on which a client measures its residual r_k.")
    warm_start: bool = Field(False, description="Start each training solve from the sample's fixed point of the last time its client trained on it (a cache in the client's state: kept across rounds and in checkpoints, never uploaded; misses start cold). DEQ models only.")
    warm_start_dtype: Literal["float16", "float32"] = Field("float16", description="Storage dtype of the warm-start cache: per client, training rows x (fixed-point values x 2 or 4 bytes + 9) bytes, e.g. 6.3 KB a row for deq-mnist in float16.")

    fixed_point_correction: float = Field(0.0, ge=0, le=FLOAT32_MAX, description="Weight of the DEQ's fixed-point correction loss (Bai et al. 2022): the task loss of the logits at `correction_points` intermediate solver outputs, at steps floor(i * cap / (points + 1)) of the client's forward cap, averaged and weighted (0: off). Costs one cell application and vjp per point and sample, counted by the simulated clock.")
    correction_points: int = Field(2, ge=1, le=64, description="Intermediate solver outputs fixed-point correction trains on (used when `fixed_point_correction` > 0; steps at or beyond the cap are dropped).")

    def lr_schedule_over(self, periods: int) -> LrSchedule:
        """The rate schedule these settings give over `periods` rounds (or epochs)."""
        return LrSchedule(self.lr_schedule, periods, self.lr_min, self.lr_warmup_rounds, self.lr_step_rounds,
                          self.lr_step_factor)

    @model_validator(mode="before")
    @classmethod
    def _optimizer_options(cls, data: Any) -> Any:
        """The options table checked by the chosen optimiser's model and kept canonical
        (`deqfl.fl.client.optimizers.canonical_options`)."""
        if not isinstance(data, Mapping):
            return data
        name, table = data.get("optimizer", "sgd"), data.get("optimizer_options", {})
        if not isinstance(name, str) or name not in client_optimizer_names() or not isinstance(table, Mapping):
            return data
        return {**data, "optimizer_options": canonical_options(name, table)}

    @field_validator("optimizer")
    @classmethod
    def _known_optimizer(cls, name: str) -> str:
        if name not in client_optimizer_names():
            raise ValueError(f"unknown client optimizer {name!r}; valid choices: {', '.join(client_optimizer_names())}")
        return name

    @model_validator(mode="after")
    def _lr_min_below_lr(self) -> TrainSection:
        if self.lr_schedule == "cosine" and self.lr_min > self.lr:
            raise ValueError(f"lr_min ({self.lr_min:g}) must be at most lr ({self.lr:g}): cosine falls from lr to lr_min")
        return self


class SamplingSection(_Section):
    renamed: ClassVar[dict[str, str]] = {"min_cap": "min_forward_cap"}
    fraction: float = Field(0.5, gt=0, le=1, description="Fraction of registered clients sampled per round.")
    min_clients: int = Field(2, gt=0, description="At least this many clients sampled per round.")
    rule: Literal["uniform", "drop-weak"] = Field("uniform", description="uniform: any client; drop-weak: never sample tiers whose forward_cap is below `min_forward_cap`.")
    min_forward_cap: int = renamed_field("min_forward_cap", "min_cap", 16, gt=0, description="drop-weak: smallest forward cap still sampled (old name, still accepted: min_cap).")
    deadline_seconds: float | None = Field(None, gt=0, description="Simulated round deadline; slower clients are stragglers and dropped.")


class EvaluationSection(_Section):
    renamed: ClassVar[dict[str, str]] = {"anytime_budgets": "anytime_forward_caps"}
    anytime_every: int = Field(5, ge=0, description="Anytime curve every N rounds (and at the end; 0: only at the end).")
    anytime_forward_caps: list[int] = renamed_field("anytime_forward_caps", "anytime_budgets", [1, 2, 4, 8, 16, 32], min_length=1, description="Forward caps of the anytime curve, each > 0 (old name, still accepted: anytime_budgets).")
    batch_size: int = Field(500, gt=0, description="Evaluation batch size.")

    @field_validator("anytime_forward_caps")
    @classmethod
    def _positive_caps(cls, caps: list[int]) -> list[int]:
        if any(cap <= 0 for cap in caps):
            raise ValueError(f"every forward cap must be > 0, got {caps}")
        return caps


class TransportSection(_Section):
    dtype: Literal["float32", "float16"] = Field("float32", description="Dtype of floating tensors on the wire.")


# --- Flower engines (issue 5): settings read only by deqfl.engines.flower ---
class FlowerSection(_Section):
    superlink: str | None = Field(None, description="engine=flower: address HOST:PORT of the SuperLink's API (the `--port` of flower-superlink).")
    root_certificates: str | None = Field(None, description="engine=flower: CA certificate (PEM) of the SuperLink; unset: plain connection (insecure).")
    round_timeout: float = Field(600.0, gt=0, description="Seconds the server waits for a round's replies; a node silent past it costs that round its update.")
    connect_timeout: float = Field(120.0, gt=0, description="engine=flower: seconds to wait for SuperNodes hosting every client id before the first round.")
    client_cpus: float = Field(1.0, gt=0, description="engine=flower-sim: CPUs Ray reserves per virtual client (2 cores: 1 runs two clients at once).")
    client_gpus: float = Field(0.25, gt=0, le=1, description="engine=flower-sim on CUDA (experiment.device): the share of a GPU Ray reserves per virtual client (0.25: up to four clients share a GPU at once; ignored on the CPU). Ray shows each virtual client only the GPU it assigns, as cuda:0: use device = 'auto' or 'cuda' there.")
# --- end Flower engines ---


# --- Personalisation (issue 17): read by deqfl.fl.personal through the runner ---
class PersonalizationSection(_Section):
    algorithm: str = Field(
        "none",
        description="Personalised federated learning (deqfl.fl.personal, docs/EXTENDING.md): none (plain federated "
        "learning, no personal part), fedavg (FedAvg evaluated per client), fedavg-ft (the global model fine-tuned "
        "before evaluation), local (no communication), fedper, fedrep, ditto, fedeq (FeDEQ's ADMM consensus), or a "
        "registered name. Personal parts and duals live in the client state; only shared parts travel.",
    )
    personal: Literal["head", "norm", "head+norm"] = Field(
        "head",
        description="The personal part of the model split (fedper, fedrep, fedeq): the model's head (its "
        "`personal_modules`, else its `head`, else its last linear layer), its normalisation layers (FedBN), or both.",
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="Parameters of the chosen algorithm, checked by its own model: fedavg-ft finetune_steps (10); "
        "fedrep head_epochs (1); ditto lam (0.1), personal_epochs (null: the round's steps); fedeq rho (0.01), "
        "dual_step (null: rho), head_epochs (1); fedavg, local, fedper none.",
    )
    test_rows: int = Field(200, gt=0, description="Rows of each client's own test split, drawn from the test set by the client's training label distribution.")
    unseen_fraction: float = Field(0.0, ge=0, lt=1, description="Share of the clients held out of training (seeded); after the last round each fits its personalised model and is evaluated on its own test split.")
    unseen_steps: int = Field(20, gt=0, description="Local steps an unseen client fits its personalised model for.")

    @field_validator("algorithm")
    @classmethod
    def _known_algorithm(cls, value: str) -> str:
        if value != "none" and value not in algorithm_names():
            raise ValueError(f"unknown algorithm {value!r}; valid choices: none, {', '.join(algorithm_names())}")
        return value

    @model_validator(mode="before")
    @classmethod
    def _canonical_options(cls, data: Any) -> Any:
        """The options table checked by the chosen algorithm's model and reduced to the
        values that differ from its defaults (a spelled-out default keeps the run's id)."""
        if not isinstance(data, dict) or not isinstance(data.get("options", {}), dict):
            return data
        name, table = data.get("algorithm", "none"), data.get("options", {})
        if name == "none" or name not in algorithm_names():
            if table and name == "none":
                raise ValueError(f"personalization.options {sorted(table)} given, but personalization.algorithm is 'none'")
            return data
        model = algorithm_class(name).Options
        try:
            typed = model.model_validate(table)
        except pydantic.ValidationError as exc:
            problems = "; ".join(f"options.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise ValueError(f"{problems} (algorithm '{name}' takes options: {', '.join(model.model_fields) or 'none'})") from None
        return {**data, "options": typed.model_dump(exclude_defaults=True)}
# --- end Personalisation ---


class ExperimentConfig(_Section):
    experiment: ExperimentSection = Field(default_factory=ExperimentSection)
    data: DataSection = Field(default_factory=DataSection)
    model: ModelSection = Field(default_factory=ModelSection)
    train: TrainSection = Field(default_factory=TrainSection)
    fleet: FleetConfig = Field(default_factory=FleetConfig)
    sampling: SamplingSection = Field(default_factory=SamplingSection)
    fusion: FusionConfig = Field(default_factory=FusionConfig)
    evaluation: EvaluationSection = Field(default_factory=EvaluationSection)
    transport: TransportSection = Field(default_factory=TransportSection)
    flower: FlowerSection = Field(default_factory=FlowerSection)
    attack: AttackConfig = Field(default_factory=AttackConfig)
    faults: FaultsConfig = Field(default_factory=FaultsConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    personalization: PersonalizationSection = Field(default_factory=PersonalizationSection)

    def to_toml(self) -> str:
        return tomli_w.dumps(self.model_dump(mode="json", exclude_none=True))


def default_config_text() -> str:
    return resources.files("deqfl.presets").joinpath("default.toml").read_text()


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> ExperimentConfig:
    """The default experiment, updated by the TOML file at `path`, then by `overrides`."""
    raw = tomllib.loads(default_config_text())
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            user = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
        raw = _merge(raw, _new_key_names(user, str(path)))
    for item in overrides or []:
        _apply_override(raw, item)
    return validate_config(raw, source=str(path) if path else "default config")


def validate_config(raw: dict[str, Any], source: str = "config") -> ExperimentConfig:
    try:
        config = ExperimentConfig.model_validate(raw)
    except pydantic.ValidationError as exc:
        lines = [_describe(err) for err in exc.errors()]
        raise ConfigError(f"invalid {source}:\n  " + "\n  ".join(lines)) from None
    for check in CROSS_SECTION_CHECKS:
        check(config, source)
    return config


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and key != "options":
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _section_renames(section: str) -> dict[str, str]:
    field = ExperimentConfig.model_fields.get(section)
    return getattr(field.annotation, "renamed", {}) if field is not None else {}


def _new_key_names(layer: dict[str, Any], source: str) -> dict[str, Any]:
    """A config layer with old key names replaced by new ones, so that a later layer's key
    replaces an earlier one whichever name either uses."""
    renamed = {}
    for section, value in layer.items():
        if not isinstance(value, dict):
            renamed[section] = value
            continue
        try:
            renamed[section] = rename_old_keys(value, _section_renames(section))
        except ValueError as exc:
            raise ConfigError(f"{source}: [{section}]: {exc}") from None
    return renamed


def _apply_override(raw: dict[str, Any], item: str) -> None:
    """Apply one `section.key=value`; the value is parsed as TOML (strings may be bare)."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected section.key=value, e.g. --set experiment.rounds=5")
    dotted, text = item.split("=", 1)
    keys = dotted.strip().split(".")
    if len(keys) < 2 or not all(keys):
        raise ConfigError(f"--set {item!r}: the key must be section.key, e.g. fusion.weighting")
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text
    if len(keys) == 2:
        keys[1] = _section_renames(keys[0]).get(keys[1], keys[1])
    node = raw
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {item!r}: '{key}' is not a section")
        node = child
    node[keys[-1]] = value


def _describe(err: dict[str, Any]) -> str:
    loc = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        valid = _valid_keys(err["loc"][:-1])
        return f"{loc}: unknown key; valid keys here: {', '.join(valid)}"
    return f"{loc}: {err['msg']} (got {err.get('input')!r})"


def _valid_keys(loc: tuple) -> list[str]:
    model: Any = ExperimentConfig
    for part in loc:
        if isinstance(part, int):
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        annotation = field.annotation
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        nested = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        if not nested:
            inner = [a for c in candidates for a in getattr(c, "__args__", ())]
            nested = [c for c in inner if isinstance(c, type) and issubclass(c, BaseModel)]
        if not nested:
            return []
        model = nested[0]
    return sorted(model.model_fields)
