"""A pool of worker processes that run client jobs (`ClientRunner`) in parallel.

Workers are started with the spawn method (CUDA forbids fork), on demand up to `workers`,
once per pool, and reused for every round until `close()`. Each one, in its initializer,
sets its torch thread count, maps the data set's .npy files read-only (no copy: the pages
are shared through the page cache) and rebuilds the model from its `ModelSpec`. Memory
therefore grows with the number of workers, not with the registered clients.

`run(jobs, download)` returns one `ClientReply` per job, in job order. A job that raises
anything but a declared `ClientFailure` is re-raised here as `UnexpectedClientError`
carrying the worker's traceback. `evaluate(payload, pieces)` runs pieces of the server's
evaluation requests (`EvalRunner`, on the same model copy) and returns their `EvalTotals`
in order; a piece that raises is a `RuntimeError` carrying the worker's traceback. A
worker process that dies is a `RuntimeError`.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from deqfl.data import DatasetArrays
from deqfl.data.folder import ARRAY_NAMES, open_arrays, save_arrays
from deqfl.engines.client_runner import ClientRunner
from deqfl.engines.eval_runner import EvalRequest, EvalRunner
from deqfl.engines.spec import ModelSpec
from deqfl.errors import UnexpectedClientError
from deqfl.fl.client import local_step_count
from deqfl.fl.evaluation import EvalTotals
from deqfl.fl.server import ClientJob, ClientReply


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker process starts from (small and picklable)."""

    model: ModelSpec
    data_folder: str
    transport_dtype: str
    threads: int
    scratch: bool = False
    """`data_folder` is the pool's own copy: a worker whose parent dies removes it."""


@dataclass(frozen=True)
class _Bug:
    """A worker job's undeclared exception, as text (exceptions need not pickle)."""

    client_id: int
    round_number: int
    details: str


_RUNNER: ClientRunner | None = None
_EVALUATOR: EvalRunner | None = None
_PARENT_POLL_SECONDS = 1.0


def _start_worker(spec: WorkerSpec) -> None:
    global _RUNNER, _EVALUATOR  # one runner and evaluator per worker process, built once, on one model
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the run's to handle: it closes the pool
    scratch = spec.data_folder if spec.scratch else None
    threading.Thread(target=_exit_with_parent, args=(os.getppid(), scratch), daemon=True).start()
    torch.set_num_threads(spec.threads)
    dataset = open_arrays(Path(spec.data_folder), mmap=True)
    model = spec.model.build()
    _RUNNER = ClientRunner(model, dataset, spec.transport_dtype)
    _EVALUATOR = EvalRunner(model, dataset)


def _exit_with_parent(parent: int, scratch: str | None) -> None:
    """End this worker once its parent is gone (e.g. SIGKILLed), removing the pool's scratch
    arrays: a spawned worker holds both ends of its task queue, so it would otherwise wait
    for tasks forever."""
    while os.getppid() == parent:
        time.sleep(_PARENT_POLL_SECONDS)
    if scratch is not None:
        shutil.rmtree(scratch, ignore_errors=True)
    os._exit(1)


def _run_job(job: ClientJob, download: bytes) -> ClientReply | _Bug:
    assert _RUNNER is not None, "worker used before its initializer ran"
    try:
        return _RUNNER.run(job, download)
    except Exception:  # noqa: BLE001 - sent back whole, re-raised by the parent
        return _Bug(job.data.client_id, job.task.round, traceback.format_exc())


def _run_eval(payload: bytes, rows: np.ndarray, request: EvalRequest) -> EvalTotals:
    assert _EVALUATOR is not None, "worker used before its initializer ran"
    try:
        return _EVALUATOR.run(payload, rows, request)
    except Exception:  # noqa: BLE001 - any exception pickles as this text
        raise RuntimeError(f"evaluation {request} failed in a worker process:\n{traceback.format_exc()}") from None


def _expected_work(job: ClientJob) -> int:
    tier = job.task.tier
    steps = local_step_count(tier, len(job.data.train_indices), tier.batch_size or job.task.options.batch_size)
    return steps * max(1, job.task.forward_cap)


def _stored_in(dataset: DatasetArrays, folder: Path) -> bool:
    """Whether `folder` holds exactly `dataset`'s arrays (one read of the files, so that a
    stale `folder` can never hand the workers other data)."""
    try:
        stored = open_arrays(folder, mmap=True)
    except Exception:  # noqa: BLE001 - unreadable: the pool writes its own copy
        return False
    return all(np.array_equal(getattr(stored, k), getattr(dataset, k)) for k in ARRAY_NAMES) and \
        (stored.mean, stored.std, stored.classes) == (dataset.mean, dataset.std, dataset.classes)


class WorkerPool:
    def __init__(self, model: ModelSpec, dataset: DatasetArrays, workers: int,
                 transport_dtype: str = "float32", threads: int = 1):
        if workers < 1:
            raise ValueError(f"a worker pool needs at least 1 worker, got {workers}")
        self._scratch: Path | None = None
        folder = dataset.folder
        if folder is None or not _stored_in(dataset, folder):  # written once, mapped by every worker
            self._scratch = Path(tempfile.mkdtemp(prefix="deqfl-arrays-"))
            save_arrays(dataset, self._scratch)
            folder = self._scratch
        spec = WorkerSpec(model, str(folder), transport_dtype, threads, scratch=self._scratch is not None)
        self._executor = ProcessPoolExecutor(
            max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker, initargs=(spec,),
        )

    def run(self, jobs: list[ClientJob], download: bytes) -> list[ClientReply]:
        """One result per job, in job order. Jobs are submitted longest first (estimated
        local steps x forward cap), so that the workers finish a round close together."""
        order = sorted(range(len(jobs)), key=lambda i: -_expected_work(jobs[i]))
        outcomes = self._results(order, lambda i: self._executor.submit(_run_job, jobs[i], download))
        for outcome in outcomes:
            if isinstance(outcome, _Bug):
                raise UnexpectedClientError(outcome.client_id, outcome.round_number,
                                            f"[in a worker process]\n{outcome.details}")
        return outcomes

    def evaluate(self, payload: bytes, pieces: list[tuple[EvalRequest, np.ndarray]]) -> list[EvalTotals]:
        """`EvalRunner.run(payload, rows, request)` for each piece (request, rows), in piece
        order; handed out largest first (rows x forward cap)."""
        order = sorted(range(len(pieces)), key=lambda i: -len(pieces[i][1]) * (pieces[i][0].forward_cap or 1))
        return self._results(order, lambda i: self._executor.submit(_run_eval, payload, pieces[i][1], pieces[i][0]))

    def _results(self, order: list[int], submit: Callable[[int], Future]) -> list:
        """Submit item i by `submit(i)` for each i of `order`; their results by index."""
        submitted = {i: submit(i) for i in order}
        futures = [submitted[i] for i in range(len(order))]
        try:
            return [f.result() for f in futures]
        except BrokenProcessPool as exc:
            raise RuntimeError(
                f"a worker process of the embedded engine died ({exc}): its start failed (see its "
                "traceback above) or it was killed; if memory ran out, lower experiment.workers"
            ) from None
        finally:
            for future in futures:
                future.cancel()

    def close(self) -> None:
        """Stop the workers and remove the scratch arrays. Jobs not started are cancelled;
        running ones (at most one per worker) are waited for, also after Ctrl-C."""
        self._executor.shutdown(wait=True, cancel_futures=True)
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None
