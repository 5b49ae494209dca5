"""Server-side evaluation on the embedded engine's workers: bitwise the in-process numbers
(request by request, per round, per run), results in request order, errors that stop."""

import json
import multiprocessing

import numpy as np
import pytest
import torch

from deqfl.data import load_dataset
from deqfl.engines.embedded import EmbeddedEngine
from deqfl.engines.eval_runner import EvalRequest, split_rows
from deqfl.engines.spec import ModelSpec
from deqfl.experiments.config import load_config
from deqfl.experiments.results import read_jsonl
from deqfl.experiments.federation import build_federation
from deqfl.experiments.global_evaluation import evaluate_global, evaluator
from deqfl.experiments.runner import embedded_engine, run_rounds
from deqfl.fl.evaluation import evaluate, evaluate_totals
from deqfl.models import federated_state

SPEC = ModelSpec("deq-mnist", (1, 8, 8), 10, {}, seed=5)
ROWS = np.sort(np.random.default_rng(0).choice(360, 150, replace=False))
REQUESTS = [EvalRequest(2, 1e-3, 64), EvalRequest(16, 1e-3, 50), EvalRequest(None, None, 500), EvalRequest(6, 1e-2, 7)]


@pytest.fixture(autouse=True, scope="module")
def no_worker_outlives_the_tests():
    yield
    assert multiprocessing.active_children() == []


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def trained_state(digits):
    """A briefly trained state (so that budgets differ, and loading it matters)."""
    torch.manual_seed(0)
    model = SPEC.build()
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
    x, y = digits.normalise(digits.x_train), torch.as_tensor(digits.y_train)
    for start in range(0, 20 * 32, 32):
        loss = torch.nn.functional.cross_entropy(model(x[start:start + 32]), y[start:start + 32])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return federated_state(model)


@pytest.mark.parametrize("rows", [ROWS, None], ids=["subset", "all"])
def test_pool_evaluation_equals_in_process_evaluation(digits, trained_state, rows):
    model = SPEC.build()
    model.load_state_dict(trained_state, strict=False)
    x, y = digits.normalise(digits.x_test), torch.as_tensor(digits.y_test)  # as the runner makes them
    if rows is not None:
        x, y = x[rows], y[rows]
    expected = [evaluate(model, x, y, r.forward_cap, r.tol, r.batch_size) for r in REQUESTS]
    here = EmbeddedEngine(SPEC.build(), digits, workers=1).evaluate_many(trained_state, rows, REQUESTS)
    with EmbeddedEngine(SPEC.build(), digits, workers=2, model_spec=SPEC) as pooled:
        there = pooled.evaluate_many(trained_state, rows, REQUESTS)
        again = pooled.evaluate_many(trained_state, rows, REQUESTS[::-1])  # the same workers, reused
    assert here == expected == there == again[::-1]  # dataclass equality: every float bitwise
    assert all(r.residual is not None for r in expected) and len({r.residual for r in expected}) > 2


@pytest.mark.parametrize(("n", "batch", "pieces"), [(150, 64, 2), (150, 50, 2), (360, 500, 2), (150, 7, 3), (10, 3, 8)])
def test_split_rows_cuts_whole_batches_in_order(n, batch, pieces):
    rows = np.arange(100, 100 + n)
    parts = split_rows(rows, batch, pieces)
    assert np.array_equal(np.concatenate(parts), rows) and 1 <= len(parts) <= pieces
    assert all(len(p) % batch == 0 for p in parts[:-1]) and all(len(p) > 0 for p in parts)


def test_totals_added_in_row_order_are_one_evaluate_call(digits, trained_state):
    model = SPEC.build()
    model.load_state_dict(trained_state, strict=False)
    x, y = digits.normalise(digits.x_test), torch.as_tensor(digits.y_test)
    whole = evaluate(model, x, y, 6, 1e-3, 40)
    parts = [evaluate_totals(model, x[a:b], y[a:b], 6, 1e-3, 40) for a, b in ((0, 120), (120, 200), (200, 360))]
    assert (parts[0] + parts[1] + parts[2]).result() == whole and whole.residual is not None


def test_an_error_in_a_worker_evaluation_stops_with_its_traceback(digits, trained_state):
    with EmbeddedEngine(SPEC.build(), digits, workers=2, model_spec=SPEC) as pooled:
        with pytest.raises(RuntimeError, match="failed in a worker process") as info:
            pooled.evaluate_many(trained_state, np.array([0, 10**6]), [EvalRequest(4, 1e-3, 50)])  # no such test row
    assert "Traceback" in str(info.value) and "IndexError" in str(info.value)


SMALL = [
    "data.dataset=digits", "data.num_clients=6", "data.alpha=1.0", "data.eval_subset=120",
    "experiment.rounds=2", "sampling.fraction=1.0", "train.batch_size=16", "train.residual_samples=32",
    "evaluation.anytime_every=1", "evaluation.anytime_budgets=[1, 4, 8, 16]",
]


def test_evaluate_global_is_the_same_on_workers_and_here(tmp_path, trained_state):
    config = load_config(None, SMALL + [f"data.cache_dir={json.dumps(str(tmp_path))}", "experiment.workers=2"])
    fed = build_federation(config)
    fed.model.load_state_dict(trained_state, strict=False)
    here = evaluator(fed, object())  # an engine without evaluate_many: evaluated in this process
    with embedded_engine(fed) as engine:
        for rows in (fed.eval_rows, None):
            on_workers = evaluate_global(fed, rows, evaluator(fed, engine), anytime=True)
            assert on_workers == evaluate_global(fed, rows, here, anytime=True)
    # each budget is what its own `evaluate` call gives (shared budgets are evaluated once)
    x, y = fed.x_test[fed.eval_rows], fed.y_test[fed.eval_rows]
    tol, batch = fed.reference.tol, config.evaluation.batch_size
    direct = evaluate_global(fed, fed.eval_rows, here, anytime=True)
    assert direct["anytime"] == {str(b): evaluate(fed.model, x, y, b, tol, batch).accuracy for b in (1, 4, 8, 16)}
    assert direct["tier_accuracy"] == {t.name: evaluate(fed.model, x, y, t.forward_cap, t.tol, batch).accuracy
                                       for t in fed.tiers}
    assert len(fed.eval_rows) == 120


class _NoEvaluator:
    """The embedded engine's clients without its `evaluate_many`: the runner evaluates here."""

    def __init__(self, engine):
        self.run_clients = engine.run_clients
        self.close = engine.close


def test_a_run_records_the_same_numbers_whichever_process_evaluates(tmp_path):
    cache = f"data.cache_dir={json.dumps(str(tmp_path / 'cache'))}"
    measured = {"wall_seconds", "train_seconds", "eval_seconds", "compute_seconds"}

    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in measured}
        return [strip(v) for v in value] if isinstance(value, list) else value

    runs = {}
    for name, workers, factory in (("here", 1, lambda fed: _NoEvaluator(embedded_engine(fed))),
                                   ("w1", 1, embedded_engine), ("w2", 2, embedded_engine)):
        config = load_config(None, SMALL + [cache, f"experiment.workers={workers}"])
        summary = run_rounds(config, tmp_path / name, False, None, None, factory)
        runs[name] = (strip(read_jsonl(tmp_path / name / "metrics.jsonl")), strip(summary))
    assert runs["here"] == runs["w1"] == runs["w2"]
    records, summary = runs["w2"]
    assert all(set(r["anytime"]) == {"1", "4", "8", "16"} for r in records[:-1])
    assert set(summary["anytime"]) == {"1", "4", "8", "16"} and summary["global_residual"] is not None
