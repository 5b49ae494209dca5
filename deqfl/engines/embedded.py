"""The embedded engine (default): a round's clients run in this process, or in a pool of
`workers` worker processes (`deqfl.engines.pool`).

It moves real serialized payloads (the same bytes Flower would carry), so byte counts and
fp16 transport effects are real: each client decodes the download, trains
(`deqfl.engines.client_runner`), and replies with its encoded upload and reported fields,
which the server's intake reads (`deqfl.fl.intake`).
Replies come back in job order, and every client's work depends only on (seed, round,
client), so the fused model is bitwise the same for any number of workers.

With `workers=1` the clients run one after another on the run's own model. With more, each
worker rebuilds the model from `model_spec` and maps the data set's arrays; memory grows
with the workers, not with the registered clients. Close the engine at the end of the run
(`close()`, or use it as a context manager): that stops the workers.

`evaluate_many(state, rows, requests)` evaluates the global model for the server
(`deqfl.engines.eval_runner`): with several workers, each request is cut at batch
boundaries into `PIECES_PER_WORKER` pieces per worker and the pieces run in parallel; the
results are bitwise those of one in-process `evaluate` call per request.

Failures: a declared `ClientFailure` (an injected crash, a payload that does not decode)
becomes an error reply (listed under `rejected`); any other exception inside a client is a
programming error and leaves `run_clients` as `UnexpectedClientError`, which stops the run
(`RunFailed`).
"""

from __future__ import annotations

import functools
import logging
import operator
import traceback
from typing import Self

import numpy as np
import torch
from torch import nn

from deqfl.data import DatasetArrays
from deqfl.engines.client_runner import ClientRunner
from deqfl.engines.eval_runner import EvalRequest, EvalRunner, split_rows
from deqfl.engines.pool import WorkerPool
from deqfl.engines.spec import ModelSpec
from deqfl.errors import UnexpectedClientError
from deqfl.fl.evaluation import EvalResult
from deqfl.fl.server import ClientJob, ClientReply
from deqfl.fl.transport import encode_state

log = logging.getLogger(__name__)

PIECES_PER_WORKER = 4
"""Pieces of each evaluation request per worker: rows differ in cost (a DEQ batch iterates
until its slowest sample converges), so several smaller pieces, handed to whichever worker
is free, even the workers out better than one piece each."""


class EmbeddedEngine:
    def __init__(
        self,
        model: nn.Module,
        dataset: DatasetArrays,
        transport_dtype: str = "float32",
        workers: int = 1,
        model_spec: ModelSpec | None = None,
        threads: int = 1,
    ):
        if workers > 1 and model_spec is None:
            raise ValueError("an embedded engine with workers > 1 needs the model_spec to rebuild the model")
        self._runner = ClientRunner(model, dataset, transport_dtype)
        self._evaluator = EvalRunner(model, dataset)
        self._test_rows = len(dataset.y_test)
        self._pieces = workers * PIECES_PER_WORKER if workers > 1 else 1
        self._pool = (
            WorkerPool(model_spec, dataset, workers, transport_dtype, threads) if workers > 1 else None
        )

    def run_clients(self, jobs: list[ClientJob], download: bytes) -> list[ClientReply]:
        replies = self._pool.run(jobs, download) if self._pool is not None else [self._run_here(j, download) for j in jobs]
        return [self._logged(reply) for reply in replies]

    def evaluate_many(
        self, state: dict[str, torch.Tensor], rows: np.ndarray | None, requests: list[EvalRequest]
    ) -> list[EvalResult]:
        """One result per request, in request order: `evaluate` of a model holding `state`
        (its non-federated buffers at build-time values) on the test rows `rows` (None: all)."""
        payload = encode_state(state)  # float32: the exact global state
        rows = np.arange(self._test_rows) if rows is None else rows
        split = [split_rows(rows, request.batch_size, self._pieces) for request in requests]
        pieces = [(request, part) for request, parts in zip(requests, split) for part in parts]
        if self._pool is not None:
            totals = iter(self._pool.evaluate(payload, pieces))
        else:
            totals = (self._evaluator.run(payload, part, request) for request, part in pieces)
        return [functools.reduce(operator.add, (next(totals) for _ in parts)).result() for parts in split]

    def _run_here(self, job: ClientJob, download: bytes) -> ClientReply:
        try:
            return self._runner.run(job, download)
        except Exception as exc:
            raise UnexpectedClientError(job.data.client_id, job.task.round, traceback.format_exc()) from exc

    def _logged(self, reply: ClientReply) -> ClientReply:
        if reply.error is not None:
            log.warning("client %d crashed: %s", reply.client_id, reply.error)
        return reply

    def close(self) -> None:
        """Stop the worker processes (a no-op with one worker); safe to call twice."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
