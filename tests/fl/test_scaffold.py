"""SCAFFOLD against hand-computed values: the client's corrected steps and c_i+ on a linear
model (gradients written out by hand), the server's c update, and the round: control
variates and client states travelling, forged increments rejected."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from deqfl.data import DatasetArrays
from deqfl.fl.client import ClientData, ClientTask, TrainOptions, local_step_count, train_client
from deqfl.fl.client_state import ClientStateStore
from deqfl.fl.fusion import ClientUpdate, Fusion, FusionConfig, FusionContext, ScaffoldFusion, make_fusion
from deqfl.fl.profiles import TierConfig
from deqfl.fl.reply import ClientReply
from deqfl.fl.server import RoundSettings, run_round
from deqfl.fl.transport import PayloadError, decode_state

LR, RHO, DECAY, K, ROWS = 0.1, 0.5, 0.01, 3, 16


@pytest.fixture(scope="module")
def dataset():
    digits = load_digits()
    x = (digits.images * 255 / 16).astype(np.uint8)[:, None]
    y = digits.target.astype(np.int64)
    return DatasetArrays("digits", x[:300], y[:300], x[300:400], y[300:400], tuple(str(c) for c in range(10)))


def linear_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))


def scaffold_task() -> ClientTask:
    options = TrainOptions(lr=LR, momentum=RHO, weight_decay=DECAY, batch_size=ROWS, proximal_mu=0.0, residual_samples=8)
    tier = TierConfig(name="t", share=1.0, local_steps=K)
    return ClientTask(round=1, seed=0, tier=tier, forward_cap=0, reference_cap=0, reference_tol=1e-3,
                      options=options, control_variates="scaffold")


def by_hand(x, y, start, c, c_i):
    """SCAFFOLD's K full-batch steps on softmax regression, in float64, gradients written
    out: dL/dW = (softmax(XW^T + b) - Y)^T X / n, dL/db = mean(softmax - Y); heavy-ball
    b <- rho b + g, w <- w - lr b with g = grad + wd w + c - c_i; then
    c_i+ = c_i - c + (w_0 - w_K) / (lr A) with A = sum_k sum_{j<=K-k} rho^j."""
    X, Y = x.reshape(len(x), -1).double(), nn.functional.one_hot(y, 10).double()
    w = {k: v.double().clone() for k, v in start.items()}
    buffers = {k: torch.zeros_like(v) for k, v in w.items()}
    for _ in range(K):
        p = torch.softmax(X @ w["1.weight"].T + w["1.bias"], dim=1)
        grad = {"1.weight": (p - Y).T @ X / len(X), "1.bias": (p - Y).mean(0)}
        for k in w:
            g = grad[k] + DECAY * w[k] + c[k] - c_i[k]
            buffers[k] = RHO * buffers[k] + g
            w[k] = w[k] - LR * buffers[k]
    a = sum(sum(RHO**j for j in range(K - k + 1)) for k in range(1, K + 1))
    new_c_i = {k: c_i[k] - c[k] + (start[k].double() - w[k]) / (LR * a) for k in w}
    return w, new_c_i


def test_client_steps_and_new_control_variate_match_the_hand_computation(dataset):
    model = linear_model()
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(1)
    c = {k: 0.05 * torch.randn(v.shape, generator=g) for k, v in start.items()}
    c_i = {k: 0.05 * torch.randn(v.shape, generator=g) for k, v in start.items()}
    data = ClientData(0, np.arange(ROWS), np.arange(0))
    update = train_client(
        model, start, scaffold_task(), dataset, data,
        client_state={**{f"control/{k}": v for k, v in c_i.items()}, "other": torch.ones(2)},
        server_extras={f"control/{k}": v for k, v in c.items()},
    )
    x, y = dataset.normalise(dataset.x_train[:ROWS]), torch.as_tensor(dataset.y_train[:ROWS])
    w, new_c_i = by_hand(x, y, start, {k: v.double() for k, v in c.items()}, {k: v.double() for k, v in c_i.items()})
    for key in start:
        torch.testing.assert_close(update.state[key].double(), w[key], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(update.client_state[f"control/{key}"].double(), new_c_i[key], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(update.extras[f"control/{key}"].double(), new_c_i[key] - c_i[key].double(),
                                   rtol=1e-4, atol=1e-6)
    assert torch.equal(update.client_state["other"], torch.ones(2))  # another mod's state is kept
    assert update.local_steps == K


def test_the_first_round_starts_from_zero_and_without_momentum_the_normaliser_is_k(dataset):
    model = linear_model()
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    task = scaffold_task()
    task = dataclasses.replace(task, options=dataclasses.replace(task.options, momentum=0.0, weight_decay=0.0))
    zeros = {f"control/{k}": torch.zeros_like(v) for k, v in start.items()}
    update = train_client(model, start, task, dataset, ClientData(0, np.arange(ROWS), np.arange(0)),
                          server_extras=zeros)
    # c = c_i = 0 and rho = 0: c_i+ = (x - y) / (lr K), the mean gradient over the K steps
    for key in start:
        expected = (start[key] - update.state[key]) / (LR * K)
        torch.testing.assert_close(update.client_state[f"control/{key}"], expected, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(update.extras[f"control/{key}"], expected, rtol=1e-5, atol=1e-7)


def test_a_download_without_the_control_variate_is_a_client_failure(dataset):
    model = linear_model()
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    with pytest.raises(PayloadError, match=r"no control variate 'control/1.bias' of shape \(10,\)"):
        train_client(model, start, scaffold_task(), dataset, ClientData(0, np.arange(ROWS), np.arange(0)))


GLOBAL = {"w": torch.linspace(-1, 1, 6).reshape(2, 3), "b": torch.zeros(3), "steps": torch.tensor(5)}
CTX = FusionContext(round=1, reference_cap=0)


def update(cid: int, shift: float, dc: float, **extras) -> ClientUpdate:
    return ClientUpdate(
        client_id=cid, tier="t", state={k: v + shift if v.is_floating_point() else v for k, v in GLOBAL.items()},
        num_examples=8, local_steps=2, forward_cap=0, residual=None, holdout_loss=None,
        extras={"control/w": torch.full((2, 3), dc), "control/b": torch.full((3,), dc), **extras},
    )


def test_server_adds_the_accepted_increments_over_all_registered_clients():
    fusion = ScaffoldFusion(Fusion(FusionConfig(weighting="uniform", aggregator="mean")), num_clients=4)
    extras = fusion.server_extras(GLOBAL)
    assert sorted(extras) == ["control/b", "control/w"]  # floating keys only, zeros at the start
    assert all(torch.equal(v, torch.zeros_like(GLOBAL[k.removeprefix("control/")])) for k, v in extras.items())
    result = fusion.fuse(GLOBAL, [update(0, 0.1, 0.4), update(1, 0.3, 0.8)], CTX)
    torch.testing.assert_close(result.state["w"], GLOBAL["w"] + 0.2)  # the inner rule: the mean
    assert torch.equal(result.state["steps"], GLOBAL["steps"])
    # c = 0 + (0.4 + 0.8) / 4 = 0.3
    torch.testing.assert_close(fusion.server_extras(GLOBAL)["control/w"], torch.full((2, 3), 0.3))
    fusion.fuse(GLOBAL, [update(2, 0.1, -0.2)], CTX)  # c = 0.3 - 0.2 / 4 = 0.25
    assert fusion.control["b"].dtype == torch.float64
    torch.testing.assert_close(fusion.control["b"], torch.full((3,), 0.25, dtype=torch.float64))


def test_a_skipped_round_leaves_c_unchanged_and_the_state_round_trips():
    config = FusionConfig(weighting="uniform", aggregator="mean", min_updates=2)
    fusion = ScaffoldFusion(Fusion(config), num_clients=2)
    fusion.fuse(GLOBAL, [update(0, 0.1, 0.4), update(1, 0.3, 0.8)], CTX)
    before = fusion.state_dict()
    assert sorted(before) == ["scaffold/control/b", "scaffold/control/w"]
    skipped = fusion.fuse(GLOBAL, [update(0, 0.1, 5.0)], CTX)
    assert skipped.skipped and all(torch.equal(before[k], v) for k, v in fusion.state_dict().items())
    again = ScaffoldFusion(Fusion(config), num_clients=2)
    again.load_state_dict(before)
    assert all(torch.equal(again.server_extras(GLOBAL)[k], v) for k, v in fusion.server_extras(GLOBAL).items())
    with pytest.raises(ValueError, match="unknown entries"):
        again.load_state_dict({"scaffold/momentum": torch.zeros(1)})


def test_make_fusion_wraps_scaffold_around_the_configured_rule():
    config = FusionConfig(control_variates="scaffold", server_optimizer="fedavgm")
    fusion = make_fusion(config, None, 4.0, 0, num_clients=10)
    assert isinstance(fusion, ScaffoldFusion) and fusion.num_clients == 10 and fusion.inner.config is config
    with pytest.raises(ValueError, match="needs num_clients"):
        make_fusion(config, None, 4.0, 0)


# --- the round: control variates travel, client states are kept, forged increments rejected


TIER = TierConfig(name="t", share=1.0, forward_cap=4, speed=1e-5)
CLIENTS = [ClientData(c, np.arange(10 * c, 10 * c + 8), np.arange(0)) for c in range(3)]
OPTIONS = TrainOptions(lr=0.1, momentum=0.0, weight_decay=0.0, batch_size=4, proximal_mu=0.0, residual_samples=4)
SETTINGS = RoundSettings(
    seed=0, fraction=1.0, min_clients=3, rule="uniform", min_forward_cap=1, deadline_seconds=None,
    transport_dtype="float32", reference_cap=4, reference_tol=1e-3, options=OPTIONS, deq_model=False,
    control_variates="scaffold",
)
MODEL = {"w": GLOBAL["w"], "b": GLOBAL["b"]}


class ScriptedEngine:
    """Replies as a SCAFFOLD client builds them (`ClientReply.from_update`, extras and client
    state included), then `forge(cid, update)` may change the update first. Keeps what each
    job and download carried."""

    def __init__(self, forge=lambda cid, u: u):
        self.forge, self.jobs, self.downloads = forge, [], []

    def run_clients(self, jobs, download):
        self.jobs += jobs
        self.downloads.append(download)
        replies = []
        for job in jobs:
            cid = job.data.client_id
            steps = local_step_count(job.task.tier, len(job.data.train_indices), 4)
            honest = ClientUpdate(
                client_id=cid, tier="t", state={k: v + 0.01 * (cid + 1) for k, v in MODEL.items()},
                num_examples=8, local_steps=steps, forward_cap=0, residual=None, holdout_loss=None,
                metrics={"work_units": 1.0},
                extras={f"control/{k}": torch.full(v.shape, float(cid + 1)) for k, v in MODEL.items()},
                client_state={"control/w": torch.full((2, 3), float(cid))},
            )
            replies.append(ClientReply.from_update(self.forge(cid, honest), "float32"))
        return replies


def scaffold_round(engine, store=None, fusion=None, round_number=1):
    fusion = fusion or ScaffoldFusion(Fusion(FusionConfig(weighting="uniform", aggregator="mean")), num_clients=3)
    return run_round(round_number, dict(MODEL), CLIENTS, [TIER] * 3, SETTINGS, engine, fusion, store), fusion


def test_the_control_variate_travels_both_ways_and_counts_in_bytes():
    from deqfl.fl.transport import decode_state, encode_state, split_extras, with_extras  # noqa: PLC0415

    engine = ScriptedEngine()
    outcome, fusion = scaffold_round(engine)
    state, extras = split_extras(decode_state(engine.downloads[0]))
    assert sorted(state) == ["b", "w"] and sorted(extras) == ["control/b", "control/w"]
    assert all(job.task.control_variates == "scaffold" for job in engine.jobs)
    # bytes: the model and c down to each client, the model and delta c_i up from each
    down = len(encode_state(with_extras(dict(MODEL), fusion.server_extras(MODEL))))
    assert down > len(encode_state(dict(MODEL)))
    assert outcome.record.bytes_down == 3 * down == 3 * len(engine.downloads[0])
    up = len(encode_state(with_extras(dict(MODEL), {f"control/{k}": v.clone() for k, v in MODEL.items()})))
    assert outcome.record.bytes_up == 3 * up and [c.bytes_up for c in outcome.record.clients] == [up] * 3
    # c = (1 + 2 + 3) / 3 = 2, every client's state stays out of the upload
    torch.testing.assert_close(fusion.control["w"], torch.full((2, 3), 2.0, dtype=torch.float64))


def test_client_states_are_read_for_the_round_and_written_back(tmp_path):
    store = ClientStateStore(tmp_path / "client_state")
    store.put(1, {"control/w": torch.full((2, 3), 7.0)})
    engine = ScriptedEngine()
    scaffold_round(engine, store)
    given = {job.data.client_id: job.client_state for job in engine.jobs}
    assert given[0] is None and given[2] is None
    assert torch.equal(decode_state(given[1])["control/w"], torch.full((2, 3), 7.0))
    assert store.clients() == [0, 1, 2]
    assert torch.equal(store.get(2)["control/w"], torch.full((2, 3), 2.0))


def _forge(kind):
    def forge(cid, u):
        if cid != 1:
            return u
        extras = dict(u.extras)
        if kind == "shape":
            extras["control/w"] = torch.zeros(3, 2)
        elif kind == "nan":
            extras["control/b"] = torch.tensor([0.0, float("nan"), 0.0])
        elif kind == "missing":
            del extras["control/b"]
        elif kind == "unexpected":
            extras["control/extra"] = torch.zeros(1)
        return dataclasses.replace(u, extras=extras)
    return forge


@pytest.mark.parametrize(("kind", "reason"), [
    ("shape", "shape mismatch for 'control/w'"),
    ("nan", "non-finite values in 'control/b'"),
    ("missing", "missing keys"),
    ("unexpected", "unexpected keys"),
])
def test_a_forged_increment_is_a_rejection_and_never_reaches_c(tmp_path, kind, reason):
    outcome, fusion = scaffold_round(ScriptedEngine(_forge(kind)), ClientStateStore(tmp_path / "cs"))
    rejected = {r.client: r.reason for r in outcome.record.rejected}
    assert list(rejected) == [1] and "extras do not match what the server sent" in rejected[1] and reason in rejected[1]
    assert [c.id for c in outcome.record.clients] == [0, 2]
    torch.testing.assert_close(fusion.control["w"], torch.full((2, 3), (1.0 + 3.0) / 3, dtype=torch.float64))


def test_a_malformed_client_state_is_a_rejection_and_is_not_kept(tmp_path):
    store = ClientStateStore(tmp_path / "cs")
    forged = ScriptedEngine(lambda cid, u: dataclasses.replace(u, client_state={"control/w": torch.full((2, 3), float("inf"))}) if cid == 0 else u)
    outcome, _ = scaffold_round(forged, store)
    assert [(r.client, "malformed client state: non-finite" in r.reason) for r in outcome.record.rejected] == [(0, True)]
    assert store.clients() == [1, 2]


@pytest.mark.parametrize(("forged", "reason"), [
    (b"not safetensors", "malformed client state: payload of 15 bytes is not a safetensors state"),
    (b"\0" * (10**6), "malformed client state: 1000000 bytes exceed the bound"),
    ({"control/w": torch.zeros(2, 3)}, "malformed client state: not bytes (got dict)"),
])
def test_client_state_bytes_are_bounded_and_decoded_by_the_intake(tmp_path, forged, reason):
    store = ClientStateStore(tmp_path / "cs")

    class Forging(ScriptedEngine):
        def run_clients(self, jobs, download):
            replies = super().run_clients(jobs, download)
            return [dataclasses.replace(r, client_state=forged) if r.client_id == 2 else r for r in replies]

    outcome, _ = scaffold_round(Forging(), store)
    assert [r.client for r in outcome.record.rejected] == [2] and reason in outcome.record.rejected[0].reason
    assert store.clients() == [0, 1]


def test_extras_are_refused_when_none_were_broadcast():
    plain = Fusion(FusionConfig(weighting="uniform", aggregator="mean"))
    settings = dataclasses.replace(SETTINGS, control_variates="none")
    outcome = run_round(1, dict(MODEL), CLIENTS, [TIER] * 3, settings, ScriptedEngine(), plain)
    assert len(outcome.record.rejected) == 3 and all("unexpected keys" in r.reason for r in outcome.record.rejected)
