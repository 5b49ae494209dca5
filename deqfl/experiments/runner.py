"""Run one experiment end to end: data, partition, fleet, model, rounds, results.

`run_experiment(config, out_dir)` builds everything from the validated config, runs the
rounds on the chosen engine, evaluates the global model every round, checkpoints after
every round, and writes the results files (`deqfl.experiments.results`). `resume=True`
continues from the newest readable checkpoint; an interrupted and resumed run ends with
the same final model as an uninterrupted one (same machine and thread count).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from deqfl.data import DatasetArrays, load_dataset, partition_indices
from deqfl.engines.embedded import EmbeddedEngine
from deqfl.engines.spec import ModelSpec
from deqfl.errors import ConfigError
from deqfl.experiments import results as rf
from deqfl.experiments.config import ExperimentConfig, validate_config
from deqfl.fl import privacy as dp
from deqfl.fl.attacks import malicious_clients
from deqfl.fl.checkpoint import load_latest_checkpoint, save_checkpoint
from deqfl.fl.client import ClientData, TrainOptions
from deqfl.fl.evaluation import anytime_curve, evaluate
from deqfl.fl.fusion import Fusion
from deqfl.fl.profiles import TierConfig, assign_tiers, reference_tier
from deqfl.fl.server import Engine, RoundSettings, run_round
from deqfl.models import (
    build_model,
    federated_state,
    find_deq,
    load_federated_state,
    parameter_count,
    serialized_bytes,
)
from deqfl.models.width import narrow_model, slice_state, sub_shapes

log = logging.getLogger(__name__)

RoundCallback = Callable[[dict[str, Any]], None]


@dataclass
class Federation:
    """Everything a run builds from its config before the first round."""

    config: ExperimentConfig
    dataset: DatasetArrays
    clients: list[ClientData]
    tiers: list[TierConfig]
    reference: TierConfig
    model: torch.nn.Module
    x_eval: torch.Tensor
    y_eval: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    sub_models: dict[float, torch.nn.Module]
    """Width ratio -> the HeteroFL sub-model, for every tier `width` below 1."""


def build_federation(config: ExperimentConfig) -> Federation:
    exp, data = config.experiment, config.data
    torch.set_num_threads(exp.threads)
    dataset = load_dataset(data.dataset, data_dir=data.data_dir, cache_dir=data.cache_dir)
    clients = client_partition(config, dataset)
    tiers = assign_tiers(data.num_clients, config.fleet.resolved_tiers(), exp.seed)
    torch.manual_seed(exp.seed)
    model = build_model(
        config.model.name, input_shape=dataset.input_shape, num_classes=dataset.num_classes,
        **config.model.options,
    )
    x_test = dataset.normalise(dataset.x_test)
    y_test = torch.as_tensor(dataset.y_test)
    if data.eval_subset and data.eval_subset < len(y_test):
        rows = np.sort(np.random.default_rng([exp.seed, 0xE7A1]).choice(len(y_test), data.eval_subset, replace=False))
        x_eval, y_eval = x_test[rows], y_test[rows]
    else:
        x_eval, y_eval = x_test, y_test
    sub_models = {}
    for tier in (t for t in _distinct_tiers(tiers) if t.width < 1):
        try:
            sub_models[tier.width] = narrow_model(model, tier.width)
        except ConfigError as exc:
            raise ConfigError(f"fleet.tiers '{tier.name}' has width {tier.width:g}, but model.name = "
                              f"'{config.model.name}': {exc}") from None
    return Federation(
        config, dataset, clients, tiers, reference_tier(config.fleet.resolved_tiers()), model,
        x_eval, y_eval, x_test, y_test, sub_models,
    )


def client_partition(config: ExperimentConfig, dataset: DatasetArrays) -> list[ClientData]:
    """Every client's training and held-back rows, as the config's partition and seed make
    them: the server and every deployed device compute the same split from the config."""
    data, seed = config.data, config.experiment.seed
    rows = len(dataset.y_train) if data.train_subset == 0 else min(data.train_subset, len(dataset.y_train))
    parts = partition_indices(
        dataset.y_train[:rows], data.num_clients, data.partition, seed, **_partition_params(config)
    )
    return [_split_holdout(cid, idx, data.holdout_fraction, seed) for cid, idx in enumerate(parts)]


def _partition_params(config: ExperimentConfig) -> dict[str, Any]:
    data = config.data
    return {
        "dirichlet": {"alpha": data.alpha},
        "pathological": {"classes_per_client": data.classes_per_client},
        "shards": {"shards_per_client": data.shards_per_client},
    }.get(data.partition, {})


def _split_holdout(cid: int, indices: np.ndarray, fraction: float, seed: int) -> ClientData:
    """A seeded share `fraction` of a client's rows is held back (none if it has < 2 rows)."""
    count = int(round(fraction * len(indices))) if len(indices) >= 2 else 0
    order = np.random.default_rng([seed, cid, 0x40D]).permutation(len(indices))
    holdout = np.sort(indices[order[:count]])
    train = np.sort(indices[order[count:]])
    return ClientData(cid, train, holdout)


def _settings(fed: Federation) -> RoundSettings:
    c = fed.config
    return RoundSettings(
        seed=c.experiment.seed,
        fraction=c.sampling.fraction,
        min_clients=c.sampling.min_clients,
        rule=c.sampling.rule,
        min_cap=c.sampling.min_cap,
        deadline_seconds=c.sampling.deadline_seconds,
        transport_dtype=c.transport.dtype,
        reference_cap=fed.reference.max_iter,
        reference_tol=fed.reference.tol,
        options=TrainOptions(
            lr=c.train.lr, momentum=c.train.momentum, weight_decay=c.train.weight_decay,
            batch_size=c.train.batch_size, proximal_mu=c.train.proximal_mu,
            residual_samples=c.train.residual_samples,
        ),
        attack=c.attack if c.attack.active else None,
        malicious=tuple(malicious_clients(c.attack, c.data.num_clients, c.experiment.seed)),
        faults=c.faults,
        privacy=c.privacy if c.privacy.enabled else None,
        sub_shapes={width: sub_shapes(sub) for width, sub in fed.sub_models.items()},
    )


def evaluate_global(fed: Federation, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
    """Accuracy and loss at the reference budget, accuracy at each tier's budget (a
    width-sliced tier: its sub-model, sliced from the global model), and the mean relative
    residual at the reference budget (`global_residual`)."""
    batch = fed.config.evaluation.batch_size
    ref = evaluate(fed.model, x, y, fed.reference.max_iter, fed.reference.tol, batch)
    tier_accuracy = {}
    explicit = find_deq(fed.model) is None  # every budget gives the same numbers
    for tier in _distinct_tiers(fed.tiers):
        if tier.width < 1:
            sub = fed.sub_models[tier.width]
            load_federated_state(sub, slice_state(federated_state(fed.model), sub_shapes(sub)))
            tier_accuracy[tier.name] = evaluate(sub, x, y, None, None, batch).accuracy
        elif explicit or (tier.max_iter == fed.reference.max_iter and tier.tol == fed.reference.tol):
            tier_accuracy[tier.name] = ref.accuracy
        else:
            tier_accuracy[tier.name] = evaluate(fed.model, x, y, tier.max_iter, tier.tol, batch).accuracy
    return {
        "accuracy": ref.accuracy,
        "loss": ref.loss,
        "global_residual": ref.residual,
        "tier_accuracy": tier_accuracy,
    }


def _distinct_tiers(tiers: list[TierConfig]) -> list[TierConfig]:
    seen: dict[str, TierConfig] = {}
    for tier in tiers:
        seen.setdefault(tier.name, tier)
    return list(seen.values())


def _client_accuracy(record: dict[str, Any]) -> dict[str, float | None]:
    values = [c["holdout_accuracy"] for c in record["clients"] if c.get("holdout_accuracy") is not None]
    if not values:
        return {"mean": None, "p10": None}
    return {"mean": float(np.mean(values)), "p10": float(np.percentile(values, 10))}


def prepare_run_dir(out_dir: Path, config: ExperimentConfig, resume: bool) -> None:
    metrics = out_dir / "metrics.jsonl"
    if not resume and metrics.exists() and rf.read_jsonl(metrics):
        raise ConfigError(
            f"{out_dir} already holds a run; resume it with `deqfl run --resume {out_dir}` "
            "or choose another --out"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        rf.atomic_write_text(out_dir / "config.toml", config.to_toml())


def load_run_config(out_dir: Path) -> ExperimentConfig:
    import tomllib  # noqa: PLC0415

    path = out_dir / "config.toml"
    if not path.exists():
        raise ConfigError(f"{out_dir} is not a run directory: {path.name} is missing")
    return validate_config(tomllib.loads(path.read_text()), source=str(path))


EngineFactory = Callable[[Federation], Engine]


def embedded_engine(fed: Federation) -> Engine:
    """The embedded engine with `experiment.workers` worker processes (close it at the end)."""
    exp, model = fed.config.experiment, fed.config.model
    spec = ModelSpec(model.name, fed.dataset.input_shape, fed.dataset.num_classes, dict(model.options), exp.seed)
    return EmbeddedEngine(fed.model, fed.dataset, fed.config.transport.dtype,
                          workers=exp.resolved_workers(), model_spec=spec, threads=exp.threads)


def _closing(stack: contextlib.ExitStack, factory: EngineFactory) -> EngineFactory:
    """`factory`, with the engine's `close()` (if it has one) called when `stack` closes."""
    def build(fed: Federation) -> Engine:
        engine = factory(fed)
        if callable(getattr(engine, "close", None)):
            stack.callback(engine.close)
        return engine
    return build


def run_experiment(
    config: ExperimentConfig,
    out_dir: Path,
    resume: bool = False,
    on_round: RoundCallback | None = None,
    stop_after: int | None = None,
    engine_factory: EngineFactory = embedded_engine,
) -> dict[str, Any]:
    """Run (or resume) the experiment into `out_dir`; returns the summary.

    `engine_factory` builds the engine that runs the clients (default: embedded); every
    decision stays here and in `deqfl.fl`, so engines differ only in transport.
    `stop_after` ends the run after that round without the final evaluation (as an
    interruption would); used to test resumption.
    """
    prepare_run_dir(out_dir, config, resume)
    with _run_log(out_dir), contextlib.ExitStack() as engine_closer:
        return _run(config, out_dir, resume, on_round, stop_after, _closing(engine_closer, engine_factory))


def _run(config, out_dir, resume, on_round, stop_after, engine_factory) -> dict[str, Any]:
    started = time.perf_counter()
    rf.git_commit()  # the code this process runs, before anyone can move HEAD (cached)
    fed = build_federation(config)
    fusion = Fusion(config.fusion)
    settings = _settings(fed)
    engine = engine_factory(fed)
    state = federated_state(fed.model)
    first_round, wall_before = 1, 0.0
    metrics_path = out_dir / "metrics.jsonl"
    if resume:
        checkpoint = load_latest_checkpoint(out_dir)
        if checkpoint is not None:
            state = checkpoint.state
            first_round = checkpoint.round + 1
            wall_before = float(checkpoint.extra.get("wall_seconds", 0.0))
            log.info("resuming after round %d from %s", checkpoint.round, checkpoint.path)
        kept = [r for r in rf.read_jsonl(metrics_path) if r["round"] < first_round]
        rf.rewrite_jsonl(metrics_path, kept)
    rounds = config.experiment.rounds
    last = rounds if stop_after is None else min(rounds, stop_after)
    for round_number in range(first_round, last + 1):
        round_start = time.perf_counter()
        outcome = run_round(round_number, state, fed.clients, fed.tiers, settings, engine, fusion)
        state = outcome.state
        train_seconds = time.perf_counter() - round_start
        load_federated_state(fed.model, state)
        eval_start = time.perf_counter()
        record = outcome.record
        record.update(evaluate_global(fed, fed.x_eval, fed.y_eval))
        record["client_accuracy"] = _client_accuracy(record)
        every = config.evaluation.anytime_every
        if find_deq(fed.model) is not None and every and round_number % every == 0 and round_number != rounds:
            record["anytime"] = _anytime(fed, fed.x_eval, fed.y_eval)
        record["train_seconds"] = train_seconds
        record["eval_seconds"] = time.perf_counter() - eval_start
        record["wall_seconds"] = wall_before + time.perf_counter() - started
        rf.append_jsonl(metrics_path, record)
        if config.experiment.checkpoint_every and (
            round_number % config.experiment.checkpoint_every == 0 or round_number == rounds
        ):
            save_checkpoint(out_dir, round_number, state, {"wall_seconds": record["wall_seconds"]})
        if on_round:
            on_round(record)
    if last < rounds:
        return {}
    return finish(fed, out_dir, state, wall_before + time.perf_counter() - started)


def _anytime(fed: Federation, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    budgets = fed.config.evaluation.anytime_budgets
    curve = anytime_curve(fed.model, x, y, budgets, fed.reference.tol, fed.config.evaluation.batch_size)
    return {str(k): v for k, v in curve.items()}


def finish(fed: Federation, out_dir: Path, state: dict[str, torch.Tensor], wall: float) -> dict[str, Any]:
    """Final evaluation on the whole test set, final model, summary and plots."""
    from deqfl.experiments.model_io import save_model  # noqa: PLC0415
    from deqfl.experiments.plots import plot_run  # noqa: PLC0415

    config = fed.config
    load_federated_state(fed.model, state)
    final = evaluate_global(fed, fed.x_test, fed.y_test)
    anytime = _anytime(fed, fed.x_test, fed.y_test) if find_deq(fed.model) is not None else {}
    records = rf.read_jsonl(out_dir / "metrics.jsonl")
    save_model(out_dir, fed.model, config, fed.reference)
    summary = {
        "dataset": config.data.dataset,
        "model": config.model.name,
        "engine": config.experiment.engine,
        "rounds": config.experiment.rounds,
        "num_clients": config.data.num_clients,
        "seed": config.experiment.seed,
        "parameters": parameter_count(fed.model),
        "model_bytes": serialized_bytes(fed.model),
        "fusion": config.fusion.model_dump(mode="json"),
        "fleet": {t.name: sum(1 for x in fed.tiers if x.name == t.name) for t in _distinct_tiers(fed.tiers)},
        "final_accuracy": final["accuracy"],
        "final_loss": final["loss"],
        "best_accuracy": max([r["accuracy"] for r in records] + [final["accuracy"]]),
        "global_residual": final["global_residual"],
        "tier_accuracy": final["tier_accuracy"],
        "anytime": anytime,
        "bytes_up": sum(r["bytes_up"] for r in records),
        "bytes_down": sum(r["bytes_down"] for r in records),
        "simulated_seconds": sum(r["simulated_seconds"] for r in records),
        "wall_seconds": wall,
        "malicious": malicious_clients(config.attack, config.data.num_clients, config.experiment.seed),
        "privacy": _privacy_summary(config),
        "versions": rf.versions(),
        "commit": rf.git_commit(),
    }
    rf.atomic_write_text(out_dir / "summary.json", json.dumps(rf.json_safe(summary), indent=2, allow_nan=False))
    plot_run(out_dir, records, summary)
    return summary


def _privacy_summary(config: ExperimentConfig) -> dict[str, Any] | None:
    """The DP settings and the final epsilon (None when DP is off)."""
    if not config.privacy.enabled:
        return None
    return {
        **config.privacy.model_dump(mode="json"),
        "sample_rate": dp.sample_rate(config.privacy, config.sampling.fraction),
        "epsilon": dp.epsilon(config.privacy, config.experiment.rounds, config.sampling.fraction),
    }


@contextlib.contextmanager
def _run_log(out_dir: Path) -> Iterator[None]:
    """Log deqfl's messages (rejections, resumes, ...) to `out_dir/run.log` during the run."""
    logger = logging.getLogger("deqfl")
    handler = logging.FileHandler(out_dir / "run.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
        handler.close()
