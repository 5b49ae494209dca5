"""The global model's evaluation each round and at the end of a run.

`evaluate_global` asks for every budget it reports (the reference tier's, each tier's,
the anytime curve's) in one `evaluate_many` call, which runs on the embedded engine's
workers where it has them (`evaluator`), else here; both give the same numbers.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import numpy as np
import torch

from deqfl.engines.eval_runner import EvalRequest
from deqfl.experiments.federation import Federation, distinct_tiers
from deqfl.fl.evaluation import EvalResult, evaluate
from deqfl.fl.profiles import TierConfig
from deqfl.fl.server import Engine
from deqfl.models import federated_state, find_deq, load_federated_state
from deqfl.models.width import slice_state, sub_shapes


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
               for t in distinct_tiers(fed.tiers) if t.width >= 1}
    curve = {str(cap): EvalRequest(cap, fed.reference.tol, batch)
             for cap in fed.config.evaluation.anytime_forward_caps} if anytime else {}
    requests = list(dict.fromkeys([ref, *budgets.values(), *curve.values()]))
    results = dict(zip(requests, evaluate_many(federated_state(fed.model), rows, requests)))
    tier_accuracy = {
        t.name: results[budgets[t.name]].accuracy if t.width >= 1 else _sliced_accuracy(fed, t, rows)
        for t in distinct_tiers(fed.tiers)
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
