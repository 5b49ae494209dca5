"""Run one experiment end to end: data, partition, fleet, model, rounds, results.

`run_experiment(config, out_dir)` builds everything from the validated config
(`deqfl.experiments.federation`), runs the rounds on the chosen engine, evaluates the
global model every round (`deqfl.experiments.global_evaluation`), checkpoints after every
round, and ends with the final evaluation and the results files
(`deqfl.experiments.run_summary`, `deqfl.experiments.results`). `resume=True`
continues from the newest checkpoint that passes verification (model, fusion rule state
and client-state store, `deqfl.fl.checkpoint`); an interrupted and resumed run ends with
the same final model as an uninterrupted one (same machine and thread count).
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from deqfl.devices import resolve_device
from deqfl.engines.embedded import EmbeddedEngine
from deqfl.engines.spec import ModelSpec
from deqfl.errors import DeqflError, RunFailed
from deqfl.experiments import results as rf
from deqfl.experiments.config import ExperimentConfig
from deqfl.experiments.federation import Federation, build_federation, round_settings
from deqfl.experiments.global_evaluation import evaluate_global, evaluator
from deqfl.experiments.run_dir import prepare_run_dir, run_config_hash
from deqfl.experiments.run_summary import finish
from deqfl.experiments.tracking import TENSORBOARD_DIR, TensorBoardLog, require_tensorboard
from deqfl.fl.checkpoint import (
    CLIENT_STATE_DIR,
    latest_checkpoint_round,
    load_latest_checkpoint,
    save_checkpoint,
)
from deqfl.fl.client_state import ClientStateStore
from deqfl.fl.fusion import make_fusion
from deqfl.fl.personal.unseen import evaluate_unseen
from deqfl.fl.record import RoundRecord
from deqfl.fl.sampling import eligible_clients
from deqfl.fl.server import Engine, run_round
from deqfl.models import federated_state, find_deq, load_federated_state

log = logging.getLogger(__name__)

RoundCallback = Callable[[dict[str, Any]], None]


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
    settings = round_settings(fed)
    engine = engine_factory(fed)
    evaluate_many = evaluator(fed, engine)
    state = federated_state(fed.model)
    initial = dict(state)  # the build-time model: where unseen clients' personal parts start
    metrics_path = out_dir / "metrics.jsonl"
    run_hash = run_config_hash(config)
    client_state = ClientStateStore(out_dir / CLIENT_STATE_DIR)
    client_state.clear()  # a new run starts empty; a resumed one is restored below
    first_round, wall_before = 1, 0.0
    if resume:
        state, first_round, wall_before = _resume(out_dir, state, fed.device, fusion, client_state, run_hash)
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


def _resume(out_dir: Path, state: dict[str, torch.Tensor], device: torch.device, fusion, client_state: ClientStateStore,
            run_hash: str) -> tuple[dict[str, torch.Tensor], int, float]:
    """(global state, first round to run, wall seconds already spent) from the newest good
    checkpoint, with the fusion rule's state and the client-state store restored from it;
    `(state, 1, 0.0)` unchanged when there is none."""
    checkpoint = load_latest_checkpoint(out_dir, reference=state, config_hash=run_hash)
    if checkpoint is None:
        return state, 1, 0.0
    fusion.load_state_dict(_on(checkpoint.fusion_state, device))
    client_state.restore(checkpoint.client_state)
    log.info("resuming after round %d from %s", checkpoint.round, checkpoint.path)
    # checkpoints hold CPU tensors
    return _on(checkpoint.state, device), checkpoint.round + 1, float(checkpoint.extra.get("wall_seconds", 0.0))


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
