"""Central (non-federated) training of one model: the check of what a model reaches when
all the data sits in one place, resumable and bitwise-reproducible (`deqfl central`).

A central run trains `model` on the whole training set (`data.train_subset` rows when
set) for `epochs` epochs of `ceil(n / batch_size)` steps, with one optimiser
(`train.optimizer`, kept across epochs) whose rate follows `train.lr_schedule` over epochs
(`deqfl.fl.lr_schedule`, an epoch in a round's part: epoch e trains at lr_e), on batches
augmented by `data.augment`, every DEQ at `forward_cap`, `tol` and gradient mode
`backward`. The loss is the federated client's default loss (`default_loss_terms`: the
task loss, the Jacobian penalty of a DEQ built with `jac_reg_samples` > 0, and fixed-point
correction when `train.fixed_point_correction` > 0).

Randomness is seeded by position only: the model's initial values by `seed`, epoch e's
batch order by (seed, e), the augmentation and Jacobian-probe draws of step s of epoch e
by (seed, e, s, tag). The state after step s is thus the model, the optimiser's state and
the step count, so a run resumed from any checkpoint continues bitwise as it would have
(on the same device, torch and thread count).

Files in the run directory:

    central.json      the config (`CentralConfig`), written when the run starts
    checkpoints/      verified checkpoints (`deqfl.fl.checkpoint`) every `checkpoint_steps`
                      steps and at the end of every epoch: "round" NNNNN is the global step,
                      the model's `state_dict` is the model, the optimiser's tensors are
                      kept where a federated run keeps its fusion rule's state, and its
                      other values (param groups, scalar state) in `extra`
    metrics.jsonl     one row per evaluated epoch (`EpochRow`)
    model.safetensors the final model's `state_dict`, once the last epoch is done

On resume the run's own `central.json` is used, the newest checkpoint that passes every
check is loaded, and rows of `metrics.jsonl` past that checkpoint are dropped.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import Field, ValidationError, field_validator, model_validator
from safetensors.torch import save_file
from torch import nn

from deqfl.data import DatasetArrays, load_dataset
from deqfl.data.augment import batch_augmentation
from deqfl.deq.budget import deq_layers, solver_budget
from deqfl.devices import check_device_name, prepare_device
from deqfl.errors import ConfigError
from deqfl.experiments.config import DataSection, ModelSection, TrainSection, _Section
from deqfl.fl.checkpoint import json_digest, latest_checkpoint_round, load_latest_checkpoint, save_checkpoint
from deqfl.fl.client.gradient_mode import tier_backward
from deqfl.fl.client.loss_terms import LossInputs, check_deq_terms, default_loss_terms, total_loss
from deqfl.fl.client.optimizers import make_client_optimizer
from deqfl.fl.client.task import TrainOptions
from deqfl.fl.profiles import TierConfig
from deqfl.models import build_model

CONFIG_FILE = "central.json"
METRICS_FILE = "metrics.jsonl"
MODEL_FILE = "model.safetensors"
_ORDER_TAG, _AUGMENT_TAG, _PROBE_TAG, _EVAL_TAG = 0x0D3, 0xA06, 0x1AC0B, 0xE7A1


class CentralConfig(_Section):
    """A central run: the data, model and training sections of an experiment config (their
    federated keys, e.g. `data.num_clients` or `train.proximal_mu`, are ignored), plus the
    central loop's own keys."""

    data: DataSection = Field(default_factory=DataSection)
    model: ModelSection = Field(default_factory=ModelSection)
    train: TrainSection = Field(default_factory=TrainSection)
    epochs: int = Field(1, gt=0, description="Passes over the training set.")
    seed: int = Field(0, ge=0, le=2**63 - 1, description="Seed of every random choice.")
    device: str = Field("cpu", description="auto, cpu, cuda or cuda:N (`deqfl.devices`).")
    threads: int = Field(1, gt=0, description="torch intra-op threads.")
    forward_cap: int = Field(18, gt=0, description="Forward iteration cap of every DEQ, in training and evaluation.")
    tol: float = Field(1e-3, gt=0, description="Forward solver relative-residual tolerance.")
    backward: str = Field("jfb", description="Gradient mode of every DEQ (jfb, ift, phantom, unrolled).")
    checkpoint_steps: int = Field(0, ge=0, description="Also checkpoint every N steps within an epoch (0: at epoch ends only).")
    eval_every: int = Field(1, gt=0, description="Evaluate every N epochs (and after the last).")

    @field_validator("device")
    @classmethod
    def _device(cls, name: str) -> str:
        return check_device_name(name)

    @model_validator(mode="after")
    def _schedule_fits(self) -> CentralConfig:
        if self.train.lr_warmup_rounds >= self.epochs:
            raise ValueError(
                f"train.lr_warmup_rounds ({self.train.lr_warmup_rounds}) counts epochs here and must be "
                f"fewer than epochs ({self.epochs})"
            )
        return self

    def solver_tier(self) -> TierConfig:
        """The DEQ solver settings as a tier (for its gradient mode)."""
        return TierConfig(name="central", share=1.0, forward_cap=self.forward_cap, tol=self.tol, backward=self.backward)


def central_config(settings: dict[str, Any]) -> CentralConfig:
    """`settings` checked into a `CentralConfig`; ConfigError naming every bad key."""
    try:
        return CentralConfig.model_validate(settings)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'config'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid central training settings: {problems}") from None


@dataclass(frozen=True)
class EpochRow:
    """One evaluated epoch of `metrics.jsonl`. Iterations are the mean forward iterations
    per sample of the DEQ solves (0 for an explicit model); test figures are on the whole
    test set, or on `data.eval_subset` seeded rows when set."""

    epoch: int
    step: int
    lr: float
    train_loss: float
    train_accuracy: float
    train_iterations: float
    test_accuracy: float
    test_loss: float
    test_iterations: float
    test_residual: float | None
    seconds: float
    """Wall seconds of training so far (resumed runs included)."""


@dataclass(frozen=True)
class CentralResult:
    rows: list[EpochRow]
    final_accuracy: float
    steps: int


def train_central(
    config: CentralConfig,
    out: Path,
    *,
    resume: bool = False,
    on_step: Callable[[int, int], None] | None = None,
    on_epoch: Callable[[EpochRow], None] | None = None,
) -> CentralResult:
    """Train `config` centrally into `out` (module docstring). `resume`: continue the run
    in `out` from its newest valid checkpoint (`config` must be the run's own: the
    checkpoint's config hash is checked). `on_step(step, total_steps)` is called after
    every optimiser step (progress; an exception it raises stops the run as a crash would),
    `on_epoch(row)` with every row as it is logged.
    ConfigError before any work for a bad setting or an `out` that holds another run."""
    out = Path(out)
    if not resume and latest_checkpoint_round(out) is not None:
        raise ConfigError(f"{out} already holds a central run with checkpoints: resume it (--resume {out}) or choose another --out")
    torch.set_num_threads(config.threads)
    device = prepare_device(config.device)
    data = config.data
    dataset = load_dataset(data.dataset, data_dir=data.data_dir, cache_dir=data.cache_dir)
    rows = len(dataset.y_train) if not data.train_subset else min(data.train_subset, len(dataset.y_train))
    batch = config.train.batch_size
    torch.manual_seed(config.seed)
    with torch.device("cpu"):
        model = build_model(config.model.name, input_shape=dataset.input_shape,
                            num_classes=dataset.num_classes, **config.model.options)
    model.to(device)
    backward = tier_backward(config.solver_tier(), model)
    check_deq_terms(config.train.fixed_point_correction, model, config.model.name)
    options = _train_options(config)
    params = {k: p for k, p in model.named_parameters() if p.requires_grad}
    optimizer = make_client_optimizer(list(params.values()), options)
    loss_terms = default_loss_terms(options, model)
    schedule = config.train.lr_schedule_over(config.epochs)
    steps_per_epoch = math.ceil(rows / batch)
    total = steps_per_epoch * config.epochs
    config_hash = json_digest(config.model_dump(mode="json", exclude_defaults=True))  # keys added later keep old hashes

    out.mkdir(parents=True, exist_ok=True)
    step, seconds = 0, 0.0
    epoch_stats: dict[str, list[float]] = {"loss": [], "correct": [], "iterations": []}
    if resume:
        saved = load_latest_checkpoint(out, reference=_cpu_state(model), config_hash=config_hash)
        if saved is not None:
            model.load_state_dict(saved.state)
            optimizer.load_state_dict(_optimizer_state(saved.fusion_state, saved.extra["optimizer"]))
            step, seconds = saved.round, float(saved.extra["seconds"])
            epoch_stats = {k: list(v) for k, v in saved.extra["epoch_stats"].items()}
    else:
        (out / CONFIG_FILE).write_text(json.dumps(config.model_dump(mode="json"), indent=1) + "\n")
    history = _kept_rows(out / METRICS_FILE, step)

    eval_x, eval_y = _eval_rows(dataset, data.eval_subset, config.seed)
    has_deq = bool(deq_layers(model))
    started = time.perf_counter() - seconds
    while step < total:
        epoch, index = divmod(step, steps_per_epoch)
        order = torch.randperm(rows, generator=_generator(config.seed, epoch + 1, _ORDER_TAG))
        lr = schedule.lr(epoch + 1, config.train.lr)
        for group in optimizer.param_groups:
            group["lr"] = lr
        model.train()
        for index in range(index, steps_per_epoch):
            picked = order[index * batch : (index + 1) * batch].numpy()
            x = dataset.normalise(dataset.x_train[picked], device)
            y = torch.as_tensor(dataset.y_train[picked], device=device)
            augment = batch_augmentation(data.augment, dataset, _generator(config.seed, epoch + 1, index, _AUGMENT_TAG), device)
            if augment is not None:
                x = augment(x)
            probe = _generator(config.seed, epoch + 1, index, _PROBE_TAG)
            with solver_budget(model, config.forward_cap, config.tol, backward, probe,
                               correction_points=options.active_correction_points) as solves:
                logits = model(x)
            loss, terms = total_loss(loss_terms, LossInputs(logits, y, params, {}, solves, None, x))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            epoch_stats["loss"].append(terms["task"])
            epoch_stats["correct"].append(float((logits.argmax(1) == y).float().mean()))
            if has_deq:
                epoch_stats["iterations"].append(solves.mean_iterations)
            last = index == steps_per_epoch - 1
            if last and ((epoch + 1) % config.eval_every == 0 or epoch + 1 == config.epochs):
                row = _epoch_row(model, dataset, config, epoch + 1, step, lr, epoch_stats, eval_x, eval_y,
                                 time.perf_counter() - started)
                history.append(row)
                with open(out / METRICS_FILE, "a") as fh:  # before the checkpoint: a crash in between redoes the epoch's end
                    fh.write(json.dumps(asdict(row)) + "\n")
                if on_epoch is not None:
                    on_epoch(row)
            if last:
                epoch_stats = {"loss": [], "correct": [], "iterations": []}
            if last or (config.checkpoint_steps and step % config.checkpoint_steps == 0):
                _checkpoint(out, step, model, optimizer, time.perf_counter() - started, config_hash, epoch_stats)
            if on_step is not None:
                on_step(step, total)
    save_file(_cpu_state(model), str(out / MODEL_FILE))
    final = history[-1].test_accuracy if history else float("nan")
    return CentralResult(history, final, step)


def _train_options(config: CentralConfig) -> TrainOptions:
    t = config.train
    return TrainOptions(
        lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay, batch_size=t.batch_size, proximal_mu=0.0,
        residual_samples=t.residual_samples, optimizer=t.optimizer, optimizer_options=dict(t.optimizer_options),
        augment=config.data.augment, fixed_point_correction=t.fixed_point_correction,
        correction_points=t.correction_points,
    )


def _generator(seed: int, *position: int) -> torch.Generator:
    """A CPU generator seeded by (seed, *position) only."""
    return torch.Generator().manual_seed(int(np.random.default_rng([seed, *position]).integers(2**62)))


def _eval_rows(dataset: DatasetArrays, subset: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The test rows evaluated each epoch: all, or `subset` seeded rows (sorted)."""
    x, y = dataset.x_test, dataset.y_test
    if subset and subset < len(y):
        rows = np.sort(np.random.default_rng([seed, _EVAL_TAG]).choice(len(y), subset, replace=False))
        x, y = x[rows], y[rows]
    return x, y


def _epoch_row(model: nn.Module, dataset: DatasetArrays, config: CentralConfig, epoch: int, step: int, lr: float,
               stats: dict[str, list[float]], x: np.ndarray, y: np.ndarray, seconds: float) -> EpochRow:
    """Test accuracy, loss, iterations and residual at the forward cap, in batches of 500."""
    device = next(model.parameters()).device
    model.eval()
    correct, loss_sum, iterations, residuals = 0, 0.0, [], []
    with torch.no_grad():
        for start in range(0, len(y), 500):
            xb = dataset.normalise(x[start : start + 500], device)
            yb = torch.as_tensor(y[start : start + 500], device=device)
            with solver_budget(model, config.forward_cap, config.tol) as solves:
                logits = model(xb)
            correct += int((logits.argmax(1) == yb).sum())
            loss_sum += float(nn.functional.cross_entropy(logits, yb, reduction="sum"))
            if solves.calls:
                iterations.append(solves.mean_iterations * len(yb))
                residuals.append(solves.mean_rel_residual * len(yb))
    n = len(y)
    mean = lambda v: float(np.mean(v)) if v else 0.0  # noqa: E731
    return EpochRow(
        epoch=epoch, step=step, lr=lr, train_loss=mean(stats["loss"]), train_accuracy=mean(stats["correct"]),
        train_iterations=mean(stats["iterations"]), test_accuracy=correct / n, test_loss=loss_sum / n,
        test_iterations=sum(iterations) / n if iterations else 0.0,
        test_residual=sum(residuals) / n if residuals else None, seconds=seconds,
    )


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def _checkpoint(out: Path, step: int, model: nn.Module, optimizer: torch.optim.Optimizer, seconds: float,
                config_hash: str, epoch_stats: dict[str, list[float]]) -> None:
    """The state after `step` steps (module docstring): the optimiser's tensors as the
    checkpoint's second tensor file, everything else as JSON in `extra`."""
    tensors, values = _split_optimizer_state(optimizer.state_dict())
    extra = {"seconds": seconds, "optimizer": values, "epoch_stats": epoch_stats}
    save_checkpoint(out, step, _cpu_state(model), extra, fusion_state=tensors, config_hash=config_hash)


def _split_optimizer_state(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimiser's `state_dict` as tensors named "<param>.<key>" and the JSON rest."""
    tensors, scalars = {}, {}
    for param, entries in state["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{param}.{key}"] = value
            else:
                scalars.setdefault(str(param), {})[key] = value
    return tensors, {"scalars": scalars, "param_groups": state["param_groups"]}


def _optimizer_state(tensors: dict[str, torch.Tensor], values: dict[str, Any]) -> dict[str, Any]:
    """The inverse of `_split_optimizer_state`."""
    state: dict[int, dict[str, Any]] = {int(p): dict(v) for p, v in values["scalars"].items()}
    for name, tensor in tensors.items():
        param, key = name.split(".", 1)
        state.setdefault(int(param), {})[key] = tensor
    return {"state": state, "param_groups": values["param_groups"]}


def _kept_rows(path: Path, step: int) -> list[EpochRow]:
    """The rows of `metrics.jsonl` up to `step` (rewritten without the later ones)."""
    if not path.exists():
        return []
    rows = [EpochRow(**json.loads(line)) for line in path.read_text().splitlines() if line.strip()]
    kept = [r for r in rows if r.step <= step]
    path.write_text("".join(json.dumps(asdict(r)) + "\n" for r in kept))
    return kept
