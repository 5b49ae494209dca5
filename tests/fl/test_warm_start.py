"""Warm starts (`deqfl.fl.client.warm_start`) on a hand-checkable contraction and on the
digits DEQ: hit/miss semantics per sample, fewer iterations on a second pass, float16
storage, a dropped cache for other rows or shapes, and the key off changing nothing."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from deqfl.data import DatasetArrays
from deqfl.deq.module import DEQ
from deqfl.deq.solvers import SolverConfig
from deqfl.fl.client import ClientData, ClientTask, LocalStep, StepHook, TrainOptions, train_client
from deqfl.fl.client.warm_start import ROWS, SEEN, Z, WarmStartCache, cache_bytes_per_sample, fixed_point_shapes
from deqfl.fl.client_state import ClientStateStore
from deqfl.fl.fusion import Fusion, FusionConfig
from deqfl.fl.intake import state_limit
from deqfl.fl.profiles import TierConfig
from deqfl.fl.reply import ClientReply
from deqfl.fl.server import RoundSettings, run_round
from deqfl.fl.update import ClientUpdate
from deqfl.models import build_model, federated_state

A = 0.5
"""The toy cell's contraction factor: f(z, u) = A z + u."""
COLD, WARM = 10, 1
"""Picard iterations at tol 1e-3 from z0 = 0 and from the stored f(z*) (module docstring
of the test: rel residual after k steps from 0 is A^k (1 - A) / (1 - A^(k+1)), first below
1e-3 at k = 9, i.e. 10 evaluations; from x_10 it is A^10 (1 - A) / (1 - A^11) < 1e-3)."""
N, BATCH = 32, 8


class LinearCell(nn.Module):
    def forward(self, z, u):
        return A * z + u


class Toy(nn.Module):
    """flatten -> DEQ(f(z, u) = A z + u) -> linear head (the head is the only parameter)."""

    def __init__(self):
        super().__init__()
        solver = SolverConfig(method="fixed_point", max_iter=30, tol=1e-3)
        self.deq = DEQ(LinearCell(), train_solver=solver)
        torch.manual_seed(0)
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        return self.head(self.deq(x.flatten(1)))


@pytest.fixture(scope="module")
def dataset():
    digits = load_digits()
    x = (digits.images * 255 / 16).astype(np.uint8)[:, None]
    y = digits.target.astype(np.int64)
    return DatasetArrays("digits", x[:300], y[:300], x[300:400], y[300:400], tuple(str(c) for c in range(10)))


CLIENT = ClientData(0, np.arange(100, 100 + N), np.arange(200, 208))


def task(steps: int, round_: int = 1, warm: bool = True, dtype: str = "float16", cap: int = 30) -> ClientTask:
    options = TrainOptions(lr=0.05, momentum=0.0, weight_decay=0.0, batch_size=BATCH, proximal_mu=0.0,
                           residual_samples=8, warm_start=warm, warm_start_dtype=dtype)
    tier = TierConfig(name="t", share=1.0, local_steps=steps, forward_cap=cap)
    return ClientTask(round=round_, seed=0, tier=tier, forward_cap=cap, reference_cap=cap, reference_tol=1e-3,
                      options=options)


@dataclasses.dataclass
class Spy(StepHook):
    """Each step's batch positions and per-sample forward iterations."""

    steps: list = dataclasses.field(default_factory=list)

    def before_update(self, step: LocalStep) -> None:
        self.steps.append((step.batch.tolist(), step.solves.calls[0].stats.iterations.tolist()))


def run(model, dataset, task_, state=None):
    spy = Spy()
    mod = lambda round_, call_next: call_next(round_.replace(step_hooks=(*round_.step_hooks, spy)))  # noqa: E731
    update = train_client(model, federated_state(model), task_, dataset, CLIENT, mods=[mod], client_state=state)
    return update, spy.steps


def test_misses_start_cold_hits_start_warm_within_and_across_rounds(dataset):
    model = Toy()
    epoch = N // BATCH
    update, steps = run(model, dataset, task(2 * epoch))
    assert [its for _, its in steps[:epoch]] == [[COLD] * BATCH] * epoch  # first pass: all misses
    assert [its for _, its in steps[epoch:]] == [[WARM] * BATCH] * epoch  # second pass: all hits
    state = update.client_state
    assert torch.equal(state[ROWS], torch.as_tensor(CLIENT.train_indices))
    assert state[Z + "deq"].shape == (N, 64) and state[Z + "deq"].dtype == torch.float16
    assert bool(state[SEEN + "deq"].all())
    update, steps = run(model, dataset, task(1, round_=2), state)  # the next round starts warm
    assert steps[0][1] == [WARM] * BATCH


def test_a_partly_cached_batch_mixes_per_sample(dataset):
    model = Toy()
    update, steps = run(model, dataset, task(2))  # half the rows seen
    seen = {p for batch, _ in steps for p in batch}
    assert update.client_state[SEEN + "deq"].nonzero().flatten().tolist() == sorted(seen)
    _, steps = run(model, dataset, task(N // BATCH, round_=2), update.client_state)
    mixed = 0
    for batch, its in steps:
        assert its == [WARM if p in seen else COLD for p in batch]
        mixed += len({WARM if p in seen else COLD for p in batch}) == 2
    assert mixed > 0  # the round's order mixed cached and uncached rows in a batch


def test_float16_and_float32_storage(dataset):
    model = Toy()
    half, _ = run(model, dataset, task(N // BATCH))
    full, _ = run(model, dataset, task(N // BATCH, dtype="float32"))
    z16, z32 = half.client_state[Z + "deq"], full.client_state[Z + "deq"]
    assert z16.dtype == torch.float16 and z32.dtype == torch.float32
    assert torch.equal(z16, z32.half())  # the same first pass, rounded once
    assert z16.element_size() * z16.numel() == N * 64 * 2


def test_float16_clamps_and_a_non_finite_fixed_point_is_not_cached():
    model = Toy()
    u = torch.full((N, 64), 1e6)  # z* = 2e6, beyond float16's range
    u[3] = float("nan")
    cache = WarmStartCache(CLIENT.train_indices, torch.float16, torch.device("cpu"))
    with cache.attached(model), torch.no_grad():
        cache.before_forward(LocalStep(0, 1, model, {}, {}, None, None, batch=torch.arange(N)))
        model.deq(u)
    state = cache.state()
    assert torch.equal(state[ROWS], torch.as_tensor(CLIENT.train_indices))
    assert bool(torch.isfinite(state[Z + "deq"]).all())
    assert float(state[Z + "deq"][0, 0]) == torch.finfo(torch.float16).max
    assert state[SEEN + "deq"].tolist() == [i != 3 for i in range(N)]


def test_a_cache_for_other_rows_or_another_shape_is_dropped(dataset):
    model = Toy()
    update, _ = run(model, dataset, task(N // BATCH))
    other_rows = {**update.client_state, ROWS: update.client_state[ROWS] + 1}
    _, steps = run(model, dataset, task(1, round_=2), other_rows)
    assert steps[0][1] == [COLD] * BATCH
    other_shape = {**update.client_state, Z + "deq": torch.zeros(N, 32, dtype=torch.float16)}
    again, steps = run(model, dataset, task(1, round_=2), other_shape)
    assert steps[0][1] == [COLD] * BATCH
    assert again.client_state[Z + "deq"].shape == (N, 64)


def test_other_client_state_is_kept_and_only_training_solves_are_warm(dataset):
    model = Toy()
    update, _ = run(model, dataset, task(N // BATCH), {"control/x": torch.ones(3)})
    assert torch.equal(update.client_state["control/x"], torch.ones(3))
    calls = []
    model.deq.register_forward_hook(
        lambda m, args, kwargs, out: calls.append((torch.is_grad_enabled(), "z0" in kwargs)), with_kwargs=True
    )
    run(model, dataset, task(2, round_=2), update.client_state)
    assert calls[:2] == [(True, True), (True, True)]  # the two training steps, warm
    assert calls[2:] and all(warm is False for _, warm in calls[2:])  # residual probe, holdout: cold
    assert all(grad is False for grad, _ in calls[2:])


def test_the_key_off_keeps_no_state_and_a_first_pass_is_bitwise_the_same(dataset):
    def digits_deq():
        torch.manual_seed(0)
        return build_model("deq-mnist", (1, 8, 8), channels=4)

    off, _ = run(digits_deq(), dataset, task(N // BATCH, warm=False, cap=6))
    on, _ = run(digits_deq(), dataset, task(N // BATCH, cap=6))
    assert off.client_state is None
    assert all(torch.equal(off.state[k], on.state[k]) for k in off.state)
    assert off.metrics["iterations"] == on.metrics["iterations"]
    twice, _ = run(digits_deq(), dataset, task(1, round_=2, cap=6), on.client_state)
    first, _ = run(digits_deq(), dataset, task(1, round_=2, cap=6, warm=False))
    assert twice.metrics["iterations"] < first.metrics["iterations"]


def test_a_warm_z0_keeps_the_cold_starts_memory_layout(dataset):
    torch.manual_seed(0)
    model = build_model("deq-mnist", (1, 8, 8), channels=4)
    update, _ = run(model, dataset, task(N // BATCH, cap=6))
    layouts = []
    model.deq.register_forward_hook(
        lambda m, args, kwargs, out: layouts.append(kwargs["z0"].is_contiguous(memory_format=torch.channels_last))
        if "z0" in kwargs else None, with_kwargs=True,
    )
    run(model, dataset, task(N // BATCH, round_=2, cap=6), update.client_state)
    assert len(layouts) == N // BATCH and all(layouts)  # every step warm, in channels_last as the cold start


def test_bytes_per_sample_follow_the_fixed_point_shape():
    model = build_model("deq-mnist", (1, 28, 28), channels=16)
    assert fixed_point_shapes(model, (1, 28, 28)) == {"deq": (16, 14, 14)}
    assert cache_bytes_per_sample(model, (1, 28, 28), "float16") == 16 * 14 * 14 * 2 + 1 + 8
    assert cache_bytes_per_sample(model, (1, 28, 28), "float32") == 16 * 14 * 14 * 4 + 1 + 8
    assert model.training


def test_the_server_keeps_a_cache_beyond_the_model_sized_bound_only_with_its_allowance(tmp_path):
    """A client state larger than `state_limit` (four float64 copies of the model) is a
    rejection, unless `RoundSettings.client_state_per_sample` allows its bytes per row."""
    global_state = {"w": torch.zeros(4)}
    rows = 64
    cache = {ROWS: torch.arange(rows), Z + "deq": torch.zeros(rows, 16, 16, 16, dtype=torch.float16),
             SEEN + "deq": torch.ones(rows, dtype=torch.bool)}
    per_row = 8 + 16 * 16 * 16 * 2 + 1
    assert rows * per_row > state_limit(global_state)
    clients = [ClientData(0, np.arange(rows), np.arange(0))]
    tier = TierConfig(name="t", share=1.0, local_steps=1)
    options = TrainOptions(lr=0.1, momentum=0.0, weight_decay=0.0, batch_size=8, proximal_mu=0.0, residual_samples=8)

    class Engine:
        def run_clients(self, jobs, download):
            update = ClientUpdate(
                client_id=0, tier="t", state={"w": torch.ones(4)}, num_examples=rows, local_steps=1, forward_cap=16,
                residual=1e-3, holdout_loss=None, momentum=0.0, metrics={"work_units": 1.0}, client_state=cache,
            )
            return [ClientReply.from_update(update, "float32")]

    for allowance, kept in ((0, False), (per_row, True)):
        settings = RoundSettings(
            seed=0, fraction=1.0, min_clients=1, rule="uniform", min_forward_cap=1, deadline_seconds=None,
            transport_dtype="float32", reference_cap=16, reference_tol=1e-3, options=options,
            client_state_per_sample=allowance,
        )
        store = ClientStateStore(tmp_path / f"store-{allowance}")
        outcome = run_round(1, dict(global_state), clients, [tier], settings, Engine(), Fusion(FusionConfig()), store)
        assert (store.clients() == [0]) is kept
        assert (outcome.record.rejected == []) is kept
        if not kept:
            assert "malformed client state" in outcome.record.rejected[0].reason
