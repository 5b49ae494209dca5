"""Server optimisers against hand-computed values, their state and its round trip.

Expected values are computed here with NumPy from the published formulas (Reddi et al.,
"Adaptive Federated Optimization", ICLR 2021, Alg. 2, as Flower implements them), not by
calling deqfl.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from deqfl.fl.fusion import ClientUpdate, Fusion, FusionConfig, FusionContext

DELTAS = [
    np.array([0.5, -1.0, 2.0, 0.0]),
    np.array([0.1, 0.3, -0.2, 1.0]),
    np.array([-0.4, 0.2, 0.05, -0.5]),
]
X0 = np.array([1.0, -2.0, 0.25, 3.0])


def sgd(lr):
    def run(deltas):
        x = X0.copy()
        for d in deltas:
            x = x + lr * d
            yield x
    return run


def fedavgm(lr, momentum):
    def run(deltas):
        x, v = X0.copy(), np.zeros(4)
        for d in deltas:
            v = momentum * v + d
            x = x + lr * v
            yield x
    return run


def fedadam(lr, beta_1, beta_2, tau, bias_correction=True):
    def run(deltas):
        x, m, v = X0.copy(), np.zeros(4), np.zeros(4)
        for t, d in enumerate(deltas, start=1):
            m = beta_1 * m + (1 - beta_1) * d
            v = beta_2 * v + (1 - beta_2) * d**2
            eta = lr * np.sqrt(1 - beta_2 ** (t + 1)) / (1 - beta_1 ** (t + 1)) if bias_correction else lr
            x = x + eta * m / (np.sqrt(v) + tau)
            yield x
    return run


def fedyogi(lr, beta_1, beta_2, tau):
    def run(deltas):
        x, m, v = X0.copy(), np.zeros(4), np.zeros(4)
        for d in deltas:
            m = beta_1 * m + (1 - beta_1) * d
            v = v - (1 - beta_2) * d**2 * np.sign(v - d**2)
            x = x + lr * m / (np.sqrt(v) + tau)
            yield x
    return run


def fedadagrad(lr, beta_1, tau):
    def run(deltas):
        x, m, v = X0.copy(), np.zeros(4), np.zeros(4)
        for d in deltas:
            m = beta_1 * m + (1 - beta_1) * d
            v = v + d**2
            x = x + lr * m / (np.sqrt(v) + tau)
            yield x
    return run


CASES = {
    "sgd": ({"server_lr": 0.5}, sgd(0.5)),
    "fedavgm": ({"server_optimizer_options": {"lr": 0.7, "momentum": 0.8}}, fedavgm(0.7, 0.8)),
    "fedadam": (
        {"server_optimizer_options": {"lr": 0.05, "beta_1": 0.8, "beta_2": 0.95, "tau": 1e-3}},
        fedadam(0.05, 0.8, 0.95, 1e-3),
    ),
    "fedadam-plain": (
        {"server_optimizer_options": {"lr": 0.05, "bias_correction": False}},
        fedadam(0.05, 0.9, 0.99, 1e-9, bias_correction=False),
    ),
    "fedyogi": (
        {"server_optimizer_options": {"lr": 0.02, "beta_1": 0.7, "beta_2": 0.9, "tau": 1e-2}},
        fedyogi(0.02, 0.7, 0.9, 1e-2),
    ),
    "fedadagrad": ({"server_optimizer_options": {"lr": 0.3, "tau": 1e-2}}, fedadagrad(0.3, 0.0, 1e-2)),
    "fedadagrad-momentum": (
        {"server_optimizer_options": {"lr": 0.3, "beta_1": 0.5, "tau": 1e-2}},
        fedadagrad(0.3, 0.5, 1e-2),
    ),
}
DEFAULTS = {  # Flower's defaults (fedavgm: momentum 0.9, ours)
    "fedavgm": fedavgm(1.0, 0.9),
    "fedadam": fedadam(0.1, 0.9, 0.99, 1e-9),
    "fedyogi": fedyogi(0.01, 0.9, 0.99, 1e-3),
    "fedadagrad": fedadagrad(0.1, 0.0, 1e-9),
}


def config(name: str, **extra) -> FusionConfig:
    optimizer = name.split("-")[0]
    return FusionConfig(weighting="uniform", aggregator="mean", server_optimizer=optimizer, **extra)


def state(x, dtype=torch.float64) -> dict[str, torch.Tensor]:
    return {"x": torch.tensor(x, dtype=dtype), "n": torch.tensor(4)}


def one_round(fusion, current, delta, round_number, clients=1):
    """Clients all send current + delta, so the fused delta is `delta`."""
    ups = [
        ClientUpdate(c, "t", state(current["x"].double().numpy() + delta, current["x"].dtype), 10, 1, 16, None, None)
        for c in range(clients)
    ]
    return fusion.fuse(current, ups, FusionContext(round=round_number, reference_cap=16))


def run_rounds(fusion, deltas, start=None):
    current = start or state(X0)
    results = []
    for r, d in enumerate(deltas, start=1):
        result = one_round(fusion, current, d, r)
        current = result.state
        results.append(result)
    return results


@pytest.mark.parametrize("case", sorted(CASES))
def test_optimizer_matches_the_published_formula_over_three_rounds(case):
    options, reference = CASES[case]
    results = run_rounds(Fusion(config(case, **options)), DELTAS)
    for result, expected in zip(results, reference(DELTAS)):
        assert not result.skipped
        # the fused delta is (x + d) - x, exact to rounding
        np.testing.assert_allclose(result.state["x"].numpy(), expected, rtol=1e-12, atol=1e-12)
        assert result.state["n"].item() == 4


@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_default_options_are_flowers(name):
    results = run_rounds(Fusion(config(name)), DELTAS)
    for result, expected in zip(results, DEFAULTS[name](DELTAS)):
        np.testing.assert_allclose(result.state["x"].numpy(), expected, rtol=1e-12, atol=1e-12)


def test_fedadam_moments_and_step_counter_are_its_state():
    fusion = Fusion(config("fedadam", server_optimizer_options={"beta_1": 0.8, "beta_2": 0.95}))
    assert fusion.state_dict() == {}
    run_rounds(fusion, DELTAS[:2])
    saved = fusion.state_dict()
    assert sorted(saved) == ["server_optimizer/m/x", "server_optimizer/step", "server_optimizer/v/x"]
    assert saved["server_optimizer/step"].dtype == torch.int64 and saved["server_optimizer/step"].item() == 2
    m = 0.8 * (0.2 * DELTAS[0]) + 0.2 * DELTAS[1]
    v = 0.95 * (0.05 * DELTAS[0] ** 2) + 0.05 * DELTAS[1] ** 2
    assert saved["server_optimizer/m/x"].dtype == torch.float64
    np.testing.assert_allclose(saved["server_optimizer/m/x"].numpy(), m, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(saved["server_optimizer/v/x"].numpy(), v, rtol=1e-12, atol=1e-15)


def test_sgd_and_the_plain_fedavg_keep_no_state():
    fusion = Fusion(config("sgd"))
    run_rounds(fusion, DELTAS)
    assert fusion.state_dict() == {}


def test_a_skipped_round_leaves_model_and_optimizer_state_unchanged():
    options = {"server_optimizer_options": {"lr": 0.05, "beta_1": 0.8, "beta_2": 0.95, "tau": 1e-3}}
    fusion = Fusion(config("fedadam", min_updates=2, **options))
    current = state(X0)
    first = one_round(fusion, current, DELTAS[0], 1, clients=2)
    before = fusion.state_dict()
    skipped = one_round(fusion, first.state, np.array([9.0, 9.0, 9.0, 9.0]), 2, clients=1)
    assert skipped.skipped and skipped.state["x"] is first.state["x"]
    after = fusion.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    second = one_round(fusion, first.state, DELTAS[1], 3, clients=2)
    # t counts steps taken: the third round is FedAdam's second step
    expected = list(fedadam(0.05, 0.8, 0.95, 1e-3)(DELTAS[:2]))[-1]
    np.testing.assert_allclose(second.state["x"].numpy(), expected, rtol=1e-12, atol=1e-12)


def test_a_non_finite_step_is_skipped_without_touching_the_state():
    fusion = Fusion(config("fedavgm", server_optimizer_options={"lr": 2.0}))
    run_rounds(fusion, DELTAS[:1])
    before = fusion.state_dict()
    big = state(np.full(4, 3.0e38), torch.float32)
    result = one_round(fusion, big, np.full(4, 0.3e38), 2)  # finite update; x + 2 v > float32's max
    assert result.skipped and "non-finite" in result.skip_reason and result.state["x"] is big["x"]
    after = fusion.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("name", ["sgd", "fedavgm", "fedadam", "fedyogi", "fedadagrad"])
def test_state_dict_round_trip_gives_a_bitwise_identical_next_round(name):
    a = Fusion(config(name))
    after_two = run_rounds(a, DELTAS[:2])[-1].state
    buffer = io.BytesIO()
    torch.save(a.state_dict(), buffer)
    buffer.seek(0)
    b = Fusion(config(name))
    b.load_state_dict(torch.load(buffer, weights_only=True))
    next_a = one_round(a, after_two, DELTAS[2], 3)
    next_b = one_round(b, after_two, DELTAS[2], 3)
    assert torch.equal(next_a.state["x"], next_b.state["x"])
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    fresh = one_round(Fusion(config(name)), after_two, DELTAS[2], 3)  # without the state
    assert torch.equal(fresh.state["x"], next_a.state["x"]) == (name == "sgd")


def test_state_dict_returns_copies():
    fusion = Fusion(config("fedavgm"))
    run_rounds(fusion, DELTAS[:1])
    saved = fusion.state_dict()
    saved["server_optimizer/momentum/x"].fill_(123.0)
    assert not torch.equal(fusion.state_dict()["server_optimizer/momentum/x"], saved["server_optimizer/momentum/x"])


@pytest.mark.parametrize(
    ("state_dict", "message"),
    [
        ({"m/x": torch.zeros(4, dtype=torch.float64)}, "unknown entries"),
        ({"server_optimizer/q/x": torch.zeros(4, dtype=torch.float64)}, "unknown state entry 'q/x'"),
        ({"server_optimizer/m/x": torch.zeros(4)}, "torch.float64"),
        ({"server_optimizer/step": torch.tensor(1.0)}, "torch.int64"),
        ({"server_optimizer/v/x": torch.tensor([1.0, float("nan")], dtype=torch.float64)}, "non-finite"),
        ({"server_optimizer/step": [1]}, "expected a scalar"),
        ({"server_optimizer/m/x": torch.zeros(4, dtype=torch.float64),
          "server_optimizer/v/x": torch.zeros(4, dtype=torch.float64)}, r"incomplete state.*\['step'\]"),
    ],
)
def test_a_bad_state_dict_is_a_clear_error(state_dict, message):
    with pytest.raises(ValueError, match=message):
        Fusion(config("fedadam")).load_state_dict(state_dict)


def test_state_for_another_model_is_a_clear_error():
    fusion = Fusion(config("fedyogi"))
    zeros = torch.zeros(4, dtype=torch.float64)
    with pytest.raises(ValueError, match="incomplete state"):
        fusion.load_state_dict({"server_optimizer/m/y": zeros})
    fusion.load_state_dict({"server_optimizer/m/y": zeros, "server_optimizer/v/y": zeros})
    with pytest.raises(ValueError, match=r"holds keys \['y'\].*has \['x'\]"):
        run_rounds(fusion, DELTAS[:1])
