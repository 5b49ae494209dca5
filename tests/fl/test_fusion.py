"""Fusion arithmetic on hand-computed cases: weightings, mean, FedNova, skipping, registry."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from deqfl.errors import ConfigError
from deqfl.fl.fusion import (
    Aggregate,
    ClientUpdate,
    Fusion,
    FusionConfig,
    FusionContext,
    Weights,
    register_aggregator,
    register_weighting,
)
from deqfl.fl.fusion.aggregator.fednova import normaliser


def global_state() -> dict[str, torch.Tensor]:
    return {
        "w": torch.tensor([0.0, 0.0]),
        "b": torch.tensor([1.0]),
        "n": torch.tensor(5),
    }


def update(client: int, w, b, *, n=10, residual=None, cap=16, loss=None, steps=1, rho=0.0):
    state = {"w": torch.tensor(w), "b": torch.tensor(b), "n": torch.tensor(7)}
    return ClientUpdate(
        client_id=client, tier="t", state=state, num_examples=n, local_steps=steps,
        forward_cap=cap, residual=residual, holdout_loss=loss, momentum=rho,
    )


CTX = FusionContext(round=1, reference_cap=16)


def fuse(updates, ctx=CTX, state=None, **config):
    return Fusion(FusionConfig(**config)).fuse(state or global_state(), updates, ctx)


def three(**kw) -> list[ClientUpdate]:
    """Deltas: w [1,0], [0,1], [1,1]; b +0, +1, +2."""
    extra = [{k: v[i] for k, v in kw.items()} for i in range(3)]
    return [
        update(1, [1.0, 0.0], [1.0], **extra[0]),
        update(2, [0.0, 1.0], [2.0], **extra[1]),
        update(3, [1.0, 1.0], [3.0], **extra[2]),
    ]


def test_examples_weighting_is_the_example_weighted_mean():
    result = fuse(three(n=[10, 30, 60]), weighting="examples")
    assert result.weights == pytest.approx({1: 0.1, 2: 0.3, 3: 0.6})
    assert sum(result.weights.values()) == pytest.approx(1.0)
    assert torch.allclose(result.state["w"], torch.tensor([0.7, 0.9]))
    assert torch.allclose(result.state["b"], torch.tensor([2.5]))
    assert result.state["n"].item() == 5  # integer buffers come from the global state
    assert result.accepted == [1, 2, 3] and not result.rejected and not result.skipped


def test_uniform_weighting_ignores_example_counts():
    result = fuse(three(n=[10, 30, 60]), weighting="uniform")
    assert result.weights == pytest.approx({1: 1 / 3, 2: 1 / 3, 3: 1 / 3})
    assert torch.allclose(result.state["w"], torch.tensor([2 / 3, 2 / 3]))


def test_residual_quality_gives_high_residual_client_less_weight():
    # median r = 0.02: q = 1/(1+0.5), 1/(1+1), 1/(1+4) = 2/3, 1/2, 1/5
    # scores n q = 200/3, 50, 40 -> weights 20/47, 15/47, 12/47
    result = fuse(three(n=[100, 100, 200], residual=[0.01, 0.02, 0.08]))
    assert result.quality == pytest.approx({1: 2 / 3, 2: 1 / 2, 3: 1 / 5})
    assert result.weights == pytest.approx({1: 20 / 47, 2: 15 / 47, 3: 12 / 47})
    expected_w = torch.tensor([20 / 47 + 12 / 47, 15 / 47 + 12 / 47])
    assert torch.allclose(result.state["w"], expected_w)


def test_residual_quality_treats_a_missing_residual_as_the_median():
    result = fuse(three(residual=[0.01, None, 0.03]))
    assert result.quality == pytest.approx({1: 2 / 3, 2: 1 / 2, 3: 0.4})


def test_budget_quality():
    # caps 16, 8, 4 at reference 16: q = 1, 1/2, 1/4 -> weights 4/7, 2/7, 1/7
    result = fuse(three(cap=[16, 8, 4]), quality="budget")
    assert result.quality == pytest.approx({1: 1.0, 2: 0.5, 3: 0.25})
    assert result.weights == pytest.approx({1: 4 / 7, 2: 2 / 7, 3: 1 / 7})


def test_loss_quality():
    # median loss 0.4: q = 1/(1+0.5), 1/2, 1/2 -> weights 2/5, 3/10, 3/10
    result = fuse(three(loss=[0.2, 0.4, 0.4]), quality="loss")
    assert result.weights == pytest.approx({1: 0.4, 2: 0.3, 3: 0.3})


@pytest.mark.parametrize("tau", [1, 2, 3, 7])
@pytest.mark.parametrize("rho", [0.0, 0.5, 0.9])
def test_fednova_normaliser_matches_momentum_sgd(tau, rho):
    # On loss(x) = x every gradient is 1, so tau momentum-SGD steps move x by lr * ||a||_1.
    x = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([x], lr=1.0, momentum=rho)
    for _ in range(tau):
        opt.zero_grad()
        x.sum().backward()
        opt.step()
    assert normaliser(tau, rho) == pytest.approx(-x.item())


def test_fednova_hand_case():
    # p = 1/2, 1/2. Client 1: tau 2, rho 0 -> a = 2. Client 2: tau 4, rho 0.5 -> a = 6.125.
    # tau_eff = 4.0625; delta = tau_eff * (0.5 * 2/2 + 0.5 * 12.25/6.125) = 6.09375
    def x(value: float) -> dict[str, torch.Tensor]:
        return {"x": torch.tensor([value], dtype=torch.float64)}

    state = x(0.0)
    ups = [
        ClientUpdate(1, "t", x(2.0), 5, local_steps=2, forward_cap=16, residual=None,
                     holdout_loss=None, momentum=0.0),
        ClientUpdate(2, "t", x(12.25), 5, local_steps=4, forward_cap=16, residual=None,
                     holdout_loss=None, momentum=0.5),
    ]
    assert normaliser(4, 0.5) == 6.125
    result = fuse(ups, state=state, weighting="examples", aggregator="fednova",
                  max_norm_factor=None)
    assert result.state["x"].item() == pytest.approx(6.09375)
    lr = fuse(ups, state=state, weighting="examples", aggregator="fednova",
              max_norm_factor=None, server_lr=0.5)
    assert lr.state["x"].item() == pytest.approx(6.09375 / 2)


@pytest.mark.parametrize("rho", [0.0, 0.9])
def test_fednova_with_equal_work_is_fedavg(rho):
    ups = three(n=[10, 30, 60], steps=[5, 5, 5], rho=[rho] * 3)
    nova = fuse(ups, weighting="examples", aggregator="fednova")
    avg = fuse(ups, weighting="examples", aggregator="mean")
    for key in avg.state:
        assert torch.allclose(nova.state[key], avg.state[key], atol=1e-6)


def test_fednova_normalises_unequal_work():
    # tau = 1, 1, 10, rho 0, p = 1/3 each: tau_eff = 4, coefficients 4/3, 4/3, 4/30
    nova = fuse(three(steps=[1, 1, 10]), weighting="examples", aggregator="fednova")
    assert torch.allclose(nova.state["w"], torch.tensor([4 / 3 * 1.1, 4 / 3 * 1.1]))
    assert torch.allclose(nova.state["b"], torch.tensor([1 + 4 / 3 * 1.2]))


def test_server_lr_scales_the_step():
    half = fuse(three(n=[10, 30, 60]), weighting="examples", server_lr=0.5)
    assert torch.allclose(half.state["w"], torch.tensor([0.35, 0.45]))


def test_dtypes_of_the_global_state_are_kept():
    state = {"h": torch.zeros(2, dtype=torch.float16), "d": torch.zeros(2, dtype=torch.float64)}
    ups = [
        ClientUpdate(i, "t", {"h": torch.full((2,), float(i), dtype=torch.float16),
                              "d": torch.full((2,), float(i), dtype=torch.float64)},
                     1, 1, 16, None, None)
        for i in (1, 2)
    ]
    result = fuse(ups, state=state, weighting="uniform")
    assert result.state["h"].dtype == torch.float16 and result.state["d"].dtype == torch.float64
    assert result.state["d"].tolist() == [1.5, 1.5]


def test_result_does_not_depend_on_arrival_order():
    ups = three(n=[13, 7, 29], residual=[0.013, 0.07, 0.0031])
    forward, backward = fuse(ups), fuse(list(reversed(ups)))
    assert forward.accepted == backward.accepted == [1, 2, 3]
    assert forward.weights == backward.weights
    for key in forward.state:
        assert torch.equal(forward.state[key], backward.state[key])


def test_too_few_updates_skip_the_round_and_keep_the_model():
    g = global_state()
    result = Fusion(FusionConfig(min_updates=4)).fuse(g, three(), CTX)
    assert result.skipped and "min_updates=4" in result.skip_reason
    assert result.weights == {}
    for key in g:
        assert result.state[key] is g[key]
    empty = Fusion().fuse(g, [], CTX)
    assert empty.skipped and all(empty.state[k] is g[k] for k in g)


def test_fuse_does_not_modify_the_global_state():
    g = global_state()
    before = {k: v.clone() for k, v in g.items()}
    Fusion().fuse(g, three(residual=[0.1, 0.2, 0.3]), CTX)
    assert all(torch.equal(g[k], before[k]) for k in g)


def test_user_defined_weighting_and_aggregator_via_registry():
    @register_weighting("test-by-steps")
    def by_steps(updates, ctx, config):
        return Weights(scores=[u.local_steps for u in updates], quality=[1.0] * len(updates))

    @register_aggregator("test-first")
    def first(updates, weights, config):
        return Aggregate(delta=updates[0].delta, weights=[1.0] + [0.0] * (len(updates) - 1))

    result = fuse(three(steps=[1, 1, 2]), weighting="test-by-steps")
    assert result.weights == pytest.approx({1: 0.25, 2: 0.25, 3: 0.5})
    picked = fuse(three(), weighting="test-by-steps", aggregator="test-first")
    assert picked.weights == {1: 1.0, 2: 0.0, 3: 0.0}
    assert torch.equal(picked.state["w"], torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="already registered"):
        register_weighting("test-by-steps")(by_steps)


def test_broken_user_weighting_is_a_clear_error():
    @register_weighting("test-all-zero")
    def zero(updates, ctx, config):
        return Weights(scores=[0.0] * len(updates), quality=[1.0] * len(updates))

    with pytest.raises(ValueError, match="finite scores"):
        fuse(three(), weighting="test-all-zero")


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"weighting": "nope"}, "fusion.weighting"),
        ({"aggregator": "avg"}, "valid choices: fednova, heterofl, krum, mean"),
        ({"quality": "speed"}, "fusion.quality"),
        ({"colour": 1}, "fusion.colour"),
        ({"residual_floor": 1.0, "residual_cap": 0.5}, "residual_floor"),
        ({"min_updates": 0}, "fusion.min_updates"),
        ({"server_lr": float("nan")}, "fusion.server_lr"),
        ({"max_norm_factor": 0.5}, "fusion.max_norm_factor"),
        ({"trim_fraction": 0.5}, "fusion.trim_fraction"),
    ],
)
def test_bad_config_is_a_clear_config_error(data, fragment):
    with pytest.raises(ConfigError, match="invalid fusion config") as info:
        FusionConfig.from_mapping(data)
    assert fragment in str(info.value)


def test_config_defaults_and_strictness():
    config = FusionConfig.from_mapping({"max_norm_factor": None})
    assert (config.weighting, config.weighting_params().source, config.aggregator) == ("quality", "residual", "mean")
    assert config.max_norm_factor is None
    with pytest.raises(ValidationError):
        FusionConfig(weighting="nope")
    assert all(f.description for f in FusionConfig.model_fields.values())


def test_heterofl_averages_each_entry_over_the_clients_that_trained_it():
    full = update(1, [2.0, 4.0], [3.0], n=10)  # delta w [2, 4], b +2
    sliced = update(2, [1.0, 0.0], [1.0], n=30)  # trained w[:1] only: w[1] holds the global 0
    sliced.coverage = {"w": (1,), "b": (1,), "n": ()}
    result = fuse([full, sliced], weighting="examples", aggregator="heterofl")
    # w[0]: both clients, shares 0.25 / 0.75; w[1]: only client 1; b: both (delta +2 and 0)
    assert torch.allclose(result.state["w"], torch.tensor([0.25 * 2 + 0.75 * 1, 4.0]))
    assert torch.allclose(result.state["b"], torch.tensor([1.0 + 0.25 * 2]))
    mean = fuse([full, sliced], weighting="examples", aggregator="mean")
    assert torch.allclose(mean.state["w"], torch.tensor([1.25, 1.0]))  # w[1] diluted by client 2


def test_heterofl_without_sliced_updates_is_the_mean():
    updates = three(n=[10, 30, 60])
    a = fuse(updates, weighting="examples", aggregator="heterofl")
    b = fuse(updates, weighting="examples", aggregator="mean")
    assert all(torch.allclose(a.state[k].double(), b.state[k].double(), atol=1e-12) for k in a.state)
