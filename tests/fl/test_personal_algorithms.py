"""Each personalised algorithm against a hand computation on a two-layer linear model
(flatten -> body Linear(64, 4) -> head Linear(4, 10)): full-batch SGD steps with the
gradients written out, the phases each algorithm runs (which part trains, from where, with
which extra term), what it uploads (only what travels), what it keeps (personal part,
duals) and the personalised accuracy it reports on its own test split. Also the loss terms
(ADMM's augmented Lagrangian and Ditto's pull) and the dual update by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from deqfl.data import DatasetArrays
from deqfl.deq.budget import SolveRecord
from deqfl.fl.client import ClientData, ClientTask, TrainOptions, train_client
from deqfl.fl.client.loss_terms import LossInputs
from deqfl.fl.client.task import PersonalTask
from deqfl.fl.personal.fedeq import dual_update
from deqfl.fl.personal.terms import AugmentedLagrangian, ProximalTo
from deqfl.fl.personal.test_split import client_test_rows
from deqfl.fl.profiles import TierConfig

LR, ROWS, STEPS, TEST_ROWS = 0.5, 24, 3, 30
HEAD, BODY = ("head.bias", "head.weight"), ("body.bias", "body.weight")


@pytest.fixture(scope="module")
def dataset():
    digits = load_digits()
    x = (digits.images * 255 / 16).astype(np.uint8)[:, None]
    y = digits.target.astype(np.int64)
    return DatasetArrays("digits", x[:300], y[:300], x[300:500], y[300:500], tuple(str(c) for c in range(10)))


class TwoLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(64, 4)
        self.head = nn.Linear(4, 10)

    def forward(self, x):
        return self.head(self.body(x.flatten(1)))


def model_and_state(seed=0):
    torch.manual_seed(seed)
    model = TwoLayer()
    return model, {k: v.detach().clone() for k, v in model.state_dict().items()}


def task(algorithm, options=None, local=HEAD, steps=STEPS):
    opts = TrainOptions(lr=LR, momentum=0.0, weight_decay=0.0, batch_size=ROWS, proximal_mu=0.0, residual_samples=8)
    tier = TierConfig(name="t", share=1.0, local_steps=steps, batch_size=ROWS)
    personal = PersonalTask(algorithm, options or {}, HEAD, local, TEST_ROWS)
    return ClientTask(round=1, seed=0, tier=tier, forward_cap=0, reference_cap=0, reference_tol=1e-3,
                      options=opts, personalization=personal)


DATA = ClientData(3, np.arange(ROWS), np.arange(0))


def rows(dataset):
    x = dataset.normalise(dataset.x_train[:ROWS]).flatten(1).double()
    return x, nn.functional.one_hot(torch.as_tensor(dataset.y_train[:ROWS]), 10).double()


def grads(w, X, Y):
    """Cross-entropy gradients of the two-layer linear model, written out: H = X W1^T + b1,
    P = softmax(H W2^T + b2), G = (P - Y) / n; dW2 = G^T H, db2 = sum G, dH = G W2,
    dW1 = dH^T X, db1 = sum dH."""
    H = X @ w["body.weight"].T + w["body.bias"]
    G = (torch.softmax(H @ w["head.weight"].T + w["head.bias"], dim=1) - Y) / len(X)
    dH = G @ w["head.weight"]
    return {"head.weight": G.T @ H, "head.bias": G.sum(0), "body.weight": dH.T @ X, "body.bias": dH.sum(0)}


def by_hand(dataset, start, trained, steps=STEPS, extra=lambda w, k: 0.0, visited=None):
    """`steps` full-batch SGD steps on the keys in `trained` (float64), each gradient plus
    `extra(w, key)` (the added loss term's gradient); each step's starting point is
    appended to `visited` when given."""
    X, Y = rows(dataset)
    w = {k: v.double().clone() for k, v in start.items()}
    for _ in range(steps):
        if visited is not None:
            visited.append(w)
        g = grads(w, X, Y)
        w = {k: w[k] - LR * (g[k] + extra(w, k)) if k in trained else w[k] for k in w}
    return w


def accuracy_by_hand(dataset, w):
    labels = dataset.y_train[:ROWS]
    test = client_test_rows(dataset.y_test, labels, TEST_ROWS, 0, DATA.client_id)
    X = dataset.normalise(dataset.x_test[test]).flatten(1).double()
    logits = (X @ w["body.weight"].T + w["body.bias"]) @ w["head.weight"].T + w["head.bias"]
    return float((logits.argmax(1) == torch.as_tensor(dataset.y_test[test])).double().mean())


def close(got, want, keys=None):
    for k in keys or want:
        assert torch.allclose(got[k].double(), want[k], atol=1e-5), k


def run(dataset, algorithm, received, client_state=None, **kw):
    model, _ = model_and_state(1)
    return train_client(model, received, task(algorithm, **kw), dataset, DATA, client_state=client_state)


def head_state(seed=7):
    g = torch.Generator().manual_seed(seed)
    return {"personal/head.weight": 0.3 * torch.randn(10, 4, generator=g), "personal/head.bias": 0.1 * torch.randn(10, generator=g)}


def test_fedavg_reports_the_received_model_and_trains_it_all(dataset):
    _, start = model_and_state()
    update = run(dataset, "fedavg", start, local=())
    close(update.state, by_hand(dataset, start, HEAD + BODY))
    assert update.metrics["personal_accuracy"] == pytest.approx(accuracy_by_hand(dataset, {k: v.double() for k, v in start.items()}))


def test_fedavg_ft_fine_tunes_a_copy_for_evaluation_and_uploads_plain_training(dataset):
    _, start = model_and_state()
    update = run(dataset, "fedavg-ft", start, options={"finetune_steps": 2}, local=())
    close(update.state, by_hand(dataset, start, HEAD + BODY))
    tuned = by_hand(dataset, start, HEAD + BODY, steps=2)
    assert update.metrics["personal_accuracy"] == pytest.approx(accuracy_by_hand(dataset, tuned))


def test_fedper_trains_body_and_own_head_jointly_and_uploads_the_body_only(dataset):
    _, start = model_and_state()
    kept = head_state()
    received = {k: start[k] for k in BODY} | {k: start[k] for k in HEAD}  # the engine's completion
    update = run(dataset, "fedper", received, kept)
    want = by_hand(dataset, {**start, **{k[9:]: v for k, v in kept.items()}}, HEAD + BODY)
    assert set(update.state) == set(BODY)
    close(update.state, want, BODY)
    close({k[9:]: v for k, v in update.client_state.items()}, want, HEAD)
    assert set(update.client_state) == {"personal/" + k for k in HEAD}
    assert update.metrics["personal_accuracy"] == pytest.approx(accuracy_by_hand(dataset, want))


def test_fedrep_trains_the_head_then_the_body(dataset):
    _, start = model_and_state()
    kept = head_state()
    update = run(dataset, "fedrep", start, kept, options={"head_epochs": 2})
    own = {**start, **{k[9:]: v for k, v in kept.items()}}
    head = by_hand(dataset, own, HEAD, steps=2)  # 2 epochs of a 24-row client at batch 24
    body = by_hand(dataset, {k: v.float() for k, v in head.items()}, BODY)
    assert set(update.state) == set(BODY)
    close(update.state, body, BODY)
    close({k[9:]: v for k, v in update.client_state.items()}, head, HEAD)
    assert update.metrics["personal_accuracy"] == pytest.approx(accuracy_by_hand(dataset, head))
    assert update.local_steps == STEPS


def test_fedeq_admm_round_augmented_loss_and_dual_update(dataset):
    rho, step = 0.3, 0.2
    _, theta = model_and_state()
    g = torch.Generator().manual_seed(3)
    dual = {k: 0.05 * torch.randn(theta[k].shape, generator=g) for k in BODY}
    kept = {**head_state(), **{"dual/" + k: v for k, v in dual.items()}}
    update = run(dataset, "fedeq", theta, kept, options={"rho": rho, "dual_step": step})
    head = by_hand(dataset, {**theta, **{k[9:]: v for k, v in head_state().items()}}, HEAD, steps=1)
    visited = []
    body = by_hand(dataset, {k: v.float() for k, v in head.items()} | {k: theta[k] for k in BODY}, BODY,
                   extra=lambda w, k: dual[k].double() + rho * (w[k] - theta[k].double()), visited=visited)
    close(update.state, body, BODY)
    assert set(update.state) == set(BODY)
    new_dual = {k: dual[k].double() + step * (body[k] - theta[k].double()) for k in BODY}
    close({k[5:]: v for k, v in update.client_state.items() if k.startswith("dual/")}, new_dual)
    close({k[9:]: v for k, v in update.client_state.items() if k.startswith("personal/")}, head, HEAD)
    assert update.metrics["personal_accuracy"] == pytest.approx(accuracy_by_hand(dataset, head))
    augmented = [sum(float((dual[k].double() * (w[k] - theta[k].double())).sum()
                           + rho / 2 * ((w[k] - theta[k].double()) ** 2).sum()) for k in BODY) for w in visited]
    assert update.metrics["loss_admm"] == pytest.approx(np.mean(augmented), abs=1e-6)


def test_fedeq_first_round_starts_with_zero_duals(dataset):
    _, theta = model_and_state()
    update = run(dataset, "fedeq", theta, None, options={"rho": 0.5})
    head = by_hand(dataset, theta, HEAD, steps=1)
    body = by_hand(dataset, {k: v.float() for k, v in head.items()}, BODY, extra=lambda w, k: 0.5 * (w[k] - theta[k].double()))
    close(update.state, body, BODY)
    close({k[5:]: v for k, v in update.client_state.items() if k.startswith("dual/")},
          {k: 0.5 * (body[k] - theta[k].double()) for k in BODY})


def test_ditto_uploads_plain_training_and_keeps_v_pulled_towards_w(dataset):
    lam = 0.4
    _, w = model_and_state()
    _, v = model_and_state(5)
    update = run(dataset, "ditto", w, {"personal/" + k: t for k, t in v.items()}, options={"lam": lam}, local=())
    close(update.state, by_hand(dataset, w, HEAD + BODY))
    v_new = by_hand(dataset, v, HEAD + BODY, extra=lambda cur, k: lam * (cur[k] - w[k].double()))
    close({k[9:]: t for k, t in update.client_state.items()}, v_new)
    assert update.metrics["personal_accuracy"] == pytest.approx(accuracy_by_hand(dataset, v_new))


def test_local_trains_its_own_model_and_uploads_nothing(dataset):
    _, init = model_and_state()
    _, own = model_and_state(5)
    update = run(dataset, "local", init, {"personal/" + k: t for k, t in own.items()}, local=HEAD + BODY)
    assert update.state == {}
    want = by_hand(dataset, own, HEAD + BODY)
    close({k[9:]: t for k, t in update.client_state.items()}, want)
    assert update.metrics["personal_accuracy"] == pytest.approx(accuracy_by_hand(dataset, want))


def _inputs(params, anchor):
    empty = torch.zeros(1)
    return LossInputs(empty, empty, params, anchor, SolveRecord(), None)


def test_augmented_lagrangian_and_proximal_pull_by_hand():
    theta = {"a": torch.tensor([1.0, 2.0]), "b": torch.tensor([0.5])}
    mine = {"a": torch.tensor([1.5, 1.0]), "b": torch.tensor([0.0]), "head": torch.tensor([3.0])}
    dual = {"a": torch.tensor([0.2, -0.4]), "b": torch.tensor([1.0])}
    # <lambda, theta_k - theta> = 0.2*0.5 + (-0.4)(-1) + 1*(-0.5) = 0.0; ||gap||^2 = 0.25 + 1 + 0.25 = 1.5
    value = AugmentedLagrangian(theta, dual, rho=0.1)(_inputs(mine, mine))
    assert float(value) == pytest.approx(0.0 + 0.05 * 1.5)
    assert float(ProximalTo(theta, 2.0)(_inputs(mine, mine))) == pytest.approx(1.5)  # 2/2 * 1.5
    new = dual_update(dual, mine, theta, step=0.1)  # lambda + 0.1 (theta_k - theta)
    assert torch.allclose(new["a"], torch.tensor([0.25, -0.5])) and torch.allclose(new["b"], torch.tensor([0.95]))


def test_personal_evaluation_runs_at_the_clients_own_forward_cap(dataset):
    """A weak device evaluates (and so personalises) at its own solver budget: at a tolerance
    no solve meets, the DEQ spends exactly cap cell evaluations per test row."""
    from deqfl.fl.client.mods import ClientRound  # noqa: PLC0415
    from deqfl.fl.personal.base import personal_metrics  # noqa: PLC0415
    from deqfl.models import build_model, federated_state  # noqa: PLC0415

    torch.manual_seed(0)
    model = build_model("deq-mnist", input_shape=(1, 8, 8), num_classes=10)
    for cap in (2, 5):
        tier = TierConfig(name="weak", share=1.0, forward_cap=cap, tol=1e-12)
        client = task("fedper")
        client = ClientTask(**{**client.__dict__, "tier": tier, "forward_cap": cap})
        round_ = ClientRound(model, {}, client, dataset, DATA, None, None, (), (), None)
        model.deq.reset_counters()
        personal_metrics(round_, federated_state(model), client.personalization)
        assert model.deq.cell_evals == cap * TEST_ROWS
