"""Run one experiment end to end: data, partition, fleet, model, rounds, results.

`run_experiment(config, out_dir)` builds everything from the validated config, runs the
rounds on the chosen engine, evaluates the global model every round, checkpoints after
every round, and writes the results files (`deqfl.experiments.results`). `resume=True`
continues from the newest checkpoint that passes verification (model, fusion rule state
and client-state store, `deqfl.fl.checkpoint`); an interrupted and resumed run ends with
the same final model as an uninterrupted one (same machine and thread count).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from deqfl.data import DatasetArrays, load_dataset
from deqfl.data.clients import client_rows
from deqfl.devices import prepare_device, resolve_device
from deqfl.engines.embedded import EmbeddedEngine
from deqfl.engines.eval_runner import EvalRequest
from deqfl.engines.spec import ModelSpec
from deqfl.errors import ConfigError, DeqflError, RunFailed
from deqfl.experiments import results as rf
from deqfl.experiments.config import ExperimentConfig, unseen_clients
from deqfl.experiments.run_dir import prepare_run_dir, run_config_hash
from deqfl.experiments.tracking import TENSORBOARD_DIR, TensorBoardLog, require_tensorboard
from deqfl.fl import privacy as dp
from deqfl.fl.attacks import malicious_clients
from deqfl.fl.checkpoint import (
    CLIENT_STATE_DIR,
    latest_checkpoint_round,
    load_latest_checkpoint,
    save_checkpoint,
)
from deqfl.fl.client import ClientData, TrainOptions, tier_backward
from deqfl.fl.client.loss_terms import check_deq_terms
from deqfl.fl.client.task import PersonalTask
from deqfl.fl.client.warm_start import cache_bytes_per_sample
from deqfl.fl.client_state import ClientStateStore
from deqfl.fl.evaluation import EvalResult, evaluate
from deqfl.fl.fusion import make_fusion
from deqfl.fl.personal.mod import local_keys
from deqfl.fl.personal.split import split_model
from deqfl.fl.personal.unseen import evaluate_unseen
from deqfl.fl.profiles import TierConfig, assign_tiers, reference_tier
from deqfl.fl.record import RoundRecord
from deqfl.fl.sampling import eligible_clients
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
    for tier in _distinct_tiers(tiers):
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
    for tier in (t for t in _distinct_tiers(tiers) if t.width < 1):
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


def _settings(fed: Federation) -> RoundSettings:
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
        held_out=tuple(unseen_clients(c)),
    )


def personal_task(fed: Federation) -> PersonalTask | None:
    """The run's personalised algorithm as every task carries it (None: none)."""
    p = fed.config.personalization
    if p.algorithm == "none":
        return None
    split = split_model(fed.model, p.personal)
    return PersonalTask(p.algorithm, dict(p.options), split.personal, local_keys(p.algorithm, split), p.test_rows)


EvaluateMany = Callable[[dict[str, torch.Tensor], np.ndarray | None, list[EvalRequest]], list[EvalResult]]
"""`(state, rows, requests)` -> one `evaluate` result per request, in request order, of the
model holding `state` on the test rows `rows` (None: all); `EmbeddedEngine.evaluate_many`."""


def evaluator(fed: Federation, engine: Engine) -> EvaluateMany:
    """The engine's `evaluate_many` where it has one (the embedded engine: on its workers),
    else the same evaluation here, on `fed.model`."""
    return getattr(engine, "evaluate_many", None) or functools.partial(_evaluate_here, fed)


def _evaluate_here(
    fed: Federation, state: dict[str, torch.Tensor], rows: np.ndarray | None, requests: list[EvalRequest]
) -> list[EvalResult]:
    load_federated_state(fed.model, state)
    x, y = _test_rows(fed, rows)
    return [evaluate(fed.model, x, y, r.forward_cap, r.tol, r.batch_size) for r in requests]


def _test_rows(fed: Federation, rows: np.ndarray | None) -> tuple[torch.Tensor, torch.Tensor]:
    return (fed.x_test, fed.y_test) if rows is None else (fed.x_test[rows], fed.y_test[rows])


def evaluate_global(
    fed: Federation, rows: np.ndarray | None, evaluate_many: EvaluateMany, anytime: bool = False
) -> dict[str, Any]:
    """On the test rows `rows` (None: all): accuracy and loss at the reference budget,
    accuracy at each tier's budget (a width-sliced tier: its sub-model, sliced from the
    global model, evaluated here), the mean relative residual at the reference budget
    (`global_residual`) and, with `anytime`, the accuracy at each budget of
    `evaluation.anytime_forward_caps` at the reference tolerance (`anytime`). Every other
    budget is one request of a single `evaluate_many` call, each distinct (cap, tol) once
    (evaluation is deterministic: a shared budget gives the same numbers)."""
    batch = fed.config.evaluation.batch_size
    ref = EvalRequest(fed.reference.forward_cap, fed.reference.tol, batch)
    explicit = find_deq(fed.model) is None  # every budget gives the same numbers
    budgets = {t.name: ref if explicit else EvalRequest(t.forward_cap, t.tol, batch)
               for t in _distinct_tiers(fed.tiers) if t.width >= 1}
    curve = {str(cap): EvalRequest(cap, fed.reference.tol, batch)
             for cap in fed.config.evaluation.anytime_forward_caps} if anytime else {}
    requests = list(dict.fromkeys([ref, *budgets.values(), *curve.values()]))
    results = dict(zip(requests, evaluate_many(federated_state(fed.model), rows, requests)))
    tier_accuracy = {
        t.name: results[budgets[t.name]].accuracy if t.width >= 1 else _sliced_accuracy(fed, t, rows)
        for t in _distinct_tiers(fed.tiers)
    }
    evaluation = {
        "accuracy": results[ref].accuracy,
        "loss": results[ref].loss,
        "global_residual": results[ref].residual,
        "tier_accuracy": tier_accuracy,
    }
    if anytime:
        evaluation["anytime"] = {cap: results[request].accuracy for cap, request in curve.items()}
    return evaluation


def _sliced_accuracy(fed: Federation, tier: TierConfig, rows: np.ndarray | None) -> float:
    """Accuracy of the HeteroFL sub-model of `tier`'s width, sliced from the global model."""
    sub = fed.sub_models[tier.width]
    load_federated_state(sub, slice_state(federated_state(fed.model), sub_shapes(sub)))
    x, y = _test_rows(fed, rows)
    return evaluate(sub, x, y, None, None, fed.config.evaluation.batch_size).accuracy


def _distinct_tiers(tiers: list[TierConfig]) -> list[TierConfig]:
    seen: dict[str, TierConfig] = {}
    for tier in tiers:
        seen.setdefault(tier.name, tier)
    return list(seen.values())


def _client_accuracy(record: RoundRecord) -> dict[str, float | None]:
    values = [c.holdout_accuracy for c in record.clients if c.holdout_accuracy is not None]
    if not values:
        return {"mean": None, "p10": None}
    return {"mean": float(np.mean(values)), "p10": float(np.percentile(values, 10))}


EngineFactory = Callable[[Federation], Engine]


def embedded_engine(fed: Federation) -> Engine:
    """The embedded engine with `experiment.workers` worker processes (close it at the end)."""
    exp, model = fed.config.experiment, fed.config.model
    spec = ModelSpec(model.name, fed.dataset.input_shape, fed.dataset.num_classes, dict(model.options), exp.seed,
                     device=str(fed.device))
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
) -> dict[str, Any]:
    """Run (or resume) the experiment into `out_dir` on the engine `experiment.engine`
    names (chosen by `deqfl.experiments.engines.resolve_engine`, and nowhere else);
    returns the summary.

    `stop_after` ends the run after that round without the final evaluation (as an
    interruption would); used to test resumption.
    """
    from deqfl.experiments.engines import resolve_engine  # noqa: PLC0415 - engines.py builds on this module

    resolve_device(config.experiment.device)  # a device this machine lacks fails here, on every engine
    return resolve_engine(config)(config, out_dir, resume, on_round, stop_after)


def run_rounds(
    config: ExperimentConfig,
    out_dir: Path,
    resume: bool,
    on_round: RoundCallback | None,
    stop_after: int | None,
    engine_factory: EngineFactory,
) -> dict[str, Any]:
    """The run itself, with its clients on the engine `engine_factory` builds: where every
    engine's launcher ends (in this process, or in a Flower ServerApp's). Every decision
    stays here and in `deqfl.fl`, so engines differ only in transport."""
    if config.experiment.tensorboard:
        require_tensorboard()
    prepare_run_dir(out_dir, config, resume)
    with _run_log(out_dir), contextlib.ExitStack() as closer:
        if config.experiment.tensorboard:
            tracker = closer.enter_context(contextlib.closing(TensorBoardLog(out_dir / TENSORBOARD_DIR)))
            on_round = _both(tracker, on_round)
        return _run(config, out_dir, resume, on_round, stop_after, _closing(closer, engine_factory))


def _both(first: RoundCallback, second: RoundCallback | None) -> RoundCallback:
    """A round callback calling `first`, then `second` if given."""

    def call(row: dict[str, Any]) -> None:
        first(row)
        if second is not None:
            second(row)

    return call


def _run(config, out_dir, resume, on_round, stop_after, engine_factory) -> dict[str, Any]:
    started = time.perf_counter()
    rf.git_commit()  # the code this process runs, before anyone can move HEAD (cached)
    fed = build_federation(config)
    privacy = config.privacy if config.privacy.enabled else None
    eligible = eligible_clients(fed.tiers, config.sampling.rule, config.sampling.min_forward_cap)
    fusion = make_fusion(config.fusion, privacy, config.sampling.fraction * len(eligible), config.experiment.seed,
                         num_clients=config.data.num_clients)
    settings = _settings(fed)
    engine = engine_factory(fed)
    evaluate_many = evaluator(fed, engine)
    state = federated_state(fed.model)
    initial = dict(state)  # the build-time model: where unseen clients' personal parts start
    first_round, wall_before = 1, 0.0
    metrics_path = out_dir / "metrics.jsonl"
    run_hash = run_config_hash(config)
    client_state = ClientStateStore(out_dir / CLIENT_STATE_DIR)
    client_state.clear()  # a new run starts empty; a resumed one is restored below
    if resume:
        checkpoint = load_latest_checkpoint(out_dir, reference=state, config_hash=run_hash)
        if checkpoint is not None:
            state = _on(checkpoint.state, fed.device)  # checkpoints hold CPU tensors
            fusion.load_state_dict(_on(checkpoint.fusion_state, fed.device))
            client_state.restore(checkpoint.client_state)
            first_round = checkpoint.round + 1
            wall_before = float(checkpoint.extra.get("wall_seconds", 0.0))
            log.info("resuming after round %d from %s", checkpoint.round, checkpoint.path)
        kept = [r for r in rf.read_jsonl(metrics_path) if r["round"] < first_round]
        rf.rewrite_jsonl(metrics_path, kept)
    rounds = config.experiment.rounds
    last = rounds if stop_after is None else min(rounds, stop_after)
    for round_number in range(first_round, last + 1):
        round_start = time.perf_counter()
        outcome = _guarded_round(round_number, state, fed, settings, engine, fusion, out_dir, client_state)
        state = outcome.state
        train_seconds = time.perf_counter() - round_start
        load_federated_state(fed.model, state)
        eval_start = time.perf_counter()
        record = outcome.record
        every = config.evaluation.anytime_every
        anytime = find_deq(fed.model) is not None and every > 0 and round_number % every == 0 and round_number != rounds
        for key, value in evaluate_global(fed, fed.eval_rows, evaluate_many, anytime).items():
            setattr(record, key, value)
        record.client_accuracy = _client_accuracy(record)
        if round_number == rounds:
            record.unseen_accuracy = evaluate_unseen(
                fed.model, fed.dataset, fed.clients, fed.tiers, settings, state, initial, round_number,
                config.personalization.unseen_steps,
            )
        record.train_seconds = train_seconds
        record.eval_seconds = time.perf_counter() - eval_start
        record.wall_seconds = wall_before + time.perf_counter() - started
        row = record.to_json()
        rf.append_jsonl(metrics_path, row)
        if config.experiment.checkpoint_every and (
            round_number % config.experiment.checkpoint_every == 0 or round_number == rounds
        ):
            save_checkpoint(
                out_dir, round_number, state, {"wall_seconds": record.wall_seconds},
                fusion_state=fusion.state_dict(), client_state=client_state, config_hash=run_hash,
            )
        if on_round:
            on_round(row)
    if last < rounds:
        return {}
    return finish(fed, out_dir, state, wall_before + time.perf_counter() - started, evaluate_many)


def _on(tensors: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in tensors.items()}


def _guarded_round(round_number, state, fed: Federation, settings, engine, fusion, out_dir: Path, client_state):
    """`run_round`, with an unexpected error (a bug: client failures are rejections, bad
    input fails before the first round) turned into `RunFailed`: a clear message naming the
    round and the last checkpoint, the traceback in run.log."""
    try:
        return run_round(round_number, state, fed.clients, fed.tiers, settings, engine, fusion, client_state)
    except DeqflError:
        raise
    except Exception as exc:
        log.exception("round %d failed", round_number)
        kept = latest_checkpoint_round(out_dir)
        raise RunFailed(
            f"round {round_number} failed on an unexpected error ({_summary(exc)}). "
            f"This is a bug, not a client failure, so the run stopped; "
            + (f"its last checkpoint is round {kept}. " if kept else "it has no checkpoint yet. ")
            + f"The traceback is in {out_dir / 'run.log'}; after a fix, `deqfl run --resume {out_dir}` continues."
        ) from exc


def _summary(exc: Exception) -> str:
    """One line naming what failed: a client's exception (`UnexpectedClientError.summary`),
    or the exception itself."""
    summary = getattr(exc, "summary", None)
    return summary if isinstance(summary, str) else f"{type(exc).__name__}: {str(exc)[:300]}"


def finish(
    fed: Federation, out_dir: Path, state: dict[str, torch.Tensor], wall: float, evaluate_many: EvaluateMany
) -> dict[str, Any]:
    """Final evaluation on the whole test set (`evaluate_many`), final model, summary and plots."""
    from deqfl.experiments.model_io import save_model  # noqa: PLC0415
    from deqfl.experiments.plots import plot_run  # noqa: PLC0415

    config = fed.config
    load_federated_state(fed.model, state)
    final = evaluate_global(fed, None, evaluate_many, anytime=find_deq(fed.model) is not None)
    records = rf.read_jsonl(out_dir / "metrics.jsonl")
    save_model(out_dir, fed.model, config, fed.reference)
    summary = {
        "dataset": config.data.dataset,
        "model": config.model.name,
        "engine": config.experiment.engine,
        "device": str(fed.device),
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
        "anytime": final.get("anytime", {}),
        "skipped_rounds": sum(1 for r in records if r["skipped"]),
        "bytes_up": sum(r["bytes_up"] for r in records),
        "bytes_down": sum(r["bytes_down"] for r in records),
        "simulated_seconds": sum(r["simulated_seconds"] for r in records),
        "wall_seconds": wall,
        "malicious": malicious_clients(config.attack, config.data.num_clients, config.experiment.seed),
        "privacy": _privacy_summary(config),
        **_personal_summary(config, records),
        "versions": rf.versions(),
        "commit": rf.git_commit(),
    }
    rf.atomic_write_text(out_dir / "summary.json", json.dumps(rf.json_safe(summary), indent=2, allow_nan=False))
    plot_run(out_dir, records, summary)
    return summary


def _personal_summary(config: ExperimentConfig, records: list[dict[str, Any]]) -> dict[str, Any]:
    """Under personalisation: the last round's personalised and unseen accuracies, and
    the MB that travelled (down and up, all rounds); nothing otherwise."""
    if config.personalization.algorithm == "none":
        return {}
    last = records[-1] if records else {}
    return {
        "personal_accuracy": last.get("personal_accuracy"),
        "unseen_accuracy": last.get("unseen_accuracy"),
        "megabytes": sum(r["bytes_up"] + r["bytes_down"] for r in records) / 1e6,
    }


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
