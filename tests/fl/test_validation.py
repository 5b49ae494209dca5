"""Update validation: malformed or lying updates are rejected or bounded, never fused."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from deqfl.fl.fusion import ClientUpdate, Fusion, FusionConfig, FusionContext
from deqfl.fl.validation import ValidationLimits, check_state, validate_updates


def global_state() -> dict[str, torch.Tensor]:
    return {
        "deq.cell.conv1.weight": torch.zeros(2, 3),
        "head.weight": torch.ones(4),
        "bn.num_batches_tracked": torch.tensor(3),
    }


def good(client: int, value: float = 0.5, **fields) -> ClientUpdate:
    state = {k: torch.full_like(v, value) if v.is_floating_point() else v.clone()
             for k, v in global_state().items()}
    base = dict(client_id=client, tier="strong", state=state, num_examples=10, local_steps=3,
                forward_cap=16, residual=0.01, holdout_loss=0.3)
    base.update(fields)
    return ClientUpdate(**base)


def with_state(client: int, **changes) -> ClientUpdate:
    u = good(client)
    state = dict(u.state)
    for key, value in changes.items():
        key = key.replace("__", ".")
        if value is None:
            del state[key]
        else:
            state[key] = value
    return dataclasses.replace(u, state=state)


CTX = FusionContext(round=3, reference_cap=16, known_num_examples={1: 50, 2: 50, 3: 50, 4: 50})
W = "deq.cell.conv1.weight"

BAD = {
    "nan": (with_state(3, **{"deq__cell__conv1__weight": torch.full((2, 3), float("nan"))}),
            "non-finite values in 'deq.cell.conv1.weight'"),
    "inf": (with_state(3, head__weight=torch.tensor([0.0, float("inf"), 0.0, 0.0])),
            "non-finite values in 'head.weight'"),
    "-inf": (with_state(3, head__weight=torch.tensor([0.0, -float("inf"), 0.0, 0.0])),
             "non-finite values in 'head.weight'"),
    "shape": (with_state(3, head__weight=torch.zeros(10, 32)),
              "shape mismatch for 'head.weight': got (10, 32), expected (4,)"),
    "dtype": (with_state(3, head__weight=torch.zeros(4, dtype=torch.float64)),
              "dtype mismatch for 'head.weight': got torch.float64, expected torch.float32"),
    "int-dtype": (with_state(3, bn__num_batches_tracked=torch.tensor(3.0)),
                  "dtype mismatch for 'bn.num_batches_tracked'"),
    "missing": (with_state(3, head__weight=None), "missing keys: 'head.weight'"),
    "extra": (with_state(3, extra=torch.zeros(1)), "unexpected keys: 'extra'"),
    "not-tensor": (with_state(3, head__weight=np.zeros(4, dtype=np.float32)),
                   "'head.weight' is not a tensor (got ndarray)"),
    "list-state": (dataclasses.replace(good(3), state=[1, 2]), "state is not a dict (got list)"),
    "empty-state": (dataclasses.replace(good(3), state={}), "missing keys"),
    "none-state": (dataclasses.replace(good(3), state=None), "state is not a dict"),
    "not-update": ({"client_id": 3}, "not a ClientUpdate (got dict)"),
    "str-id": (good("3"), "client_id must be an int"),
    "bool-id": (good(True), "client_id must be an int"),
    "float-examples": (good(3, num_examples=10.5), "num_examples must be an int"),
    "str-examples": (good(3, num_examples="many"), "num_examples must be an int"),
    "zero-steps": (good(3, local_steps=0), "local_steps must be an int >= 1"),
    "negative-cap": (good(3, forward_cap=-1), "forward_cap must be an int >= 0"),
    "nan-residual": (good(3, residual=float("nan")), "residual must be a number >= 0"),
    "negative-residual": (good(3, residual=-0.1), "residual must be a number >= 0"),
    "str-residual": (good(3, residual="low"), "residual must be a number >= 0"),
    "nan-loss": (good(3, holdout_loss=float("nan")), "holdout_loss must be a finite number"),
    "momentum-1": (good(3, momentum=1.0), "momentum must be a number in [0, 1)"),
    "metrics-list": (good(3, metrics=[1]), "metrics must be a dict"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_update_is_rejected_without_touching_the_model(name):
    bad, reason = BAD[name]
    g = global_state()
    before = {k: v.clone() for k, v in g.items()}
    fusion = Fusion(FusionConfig())
    mixed = fusion.fuse(g, [good(1, 0.5), bad, good(2, 0.25)], CTX)
    clean = fusion.fuse(g, [good(1, 0.5), good(2, 0.25)], CTX)
    assert len(mixed.rejected) == 1
    assert reason in mixed.rejected[0]["reason"]
    assert mixed.accepted == [1, 2]
    assert 3 not in mixed.weights
    for key in g:
        assert torch.equal(g[key], before[key])  # the global tensors are untouched
        assert torch.equal(mixed.state[key], clean.state[key])  # and the bad update had no say
        assert mixed.state[key].dtype == g[key].dtype


@pytest.mark.parametrize("name", sorted(BAD))
def test_only_bad_updates_skip_the_round(name):
    bad, _ = BAD[name]
    g = global_state()
    result = Fusion().fuse(g, [bad], CTX)
    assert result.skipped and result.accepted == [] and result.weights == {}
    assert all(result.state[k] is g[k] for k in g)


def test_rejected_client_ids_are_reported_where_known():
    result = Fusion().fuse(global_state(), [BAD["nan"][0], BAD["not-update"][0]], CTX)
    assert [r["client"] for r in result.rejected] == [3, None]


def test_inflated_example_count_is_capped_at_the_partition_size():
    result = Fusion(FusionConfig(weighting="examples")).fuse(
        global_state(), [good(1), good(2, num_examples=1_000_000)], CTX
    )
    assert result.weights == pytest.approx({1: 10 / 60, 2: 50 / 60})
    assert result.adjusted == [
        {"client": 2, "field": "num_examples", "reported": 1_000_000, "used": 50}
    ]


def test_example_count_is_at_least_one_and_unknown_clients_are_only_floored():
    ctx = FusionContext(round=1, reference_cap=16)
    result = Fusion(FusionConfig(weighting="examples")).fuse(
        global_state(), [good(1, num_examples=-5), good(2, num_examples=3)], ctx
    )
    assert result.weights == pytest.approx({1: 0.25, 2: 0.75})
    assert result.adjusted == [{"client": 1, "field": "num_examples", "reported": -5, "used": 1}]


def test_residuals_are_clipped_into_floor_and_cap():
    updates = [good(1, residual=1e-12), good(2, residual=float("inf")), good(3, residual=0.5)]
    result = Fusion(FusionConfig(residual_floor=1e-4, residual_cap=2.0)).fuse(
        global_state(), updates, CTX
    )
    used = {(a["client"], a["field"]): a["used"] for a in result.adjusted}
    assert used == {(1, "residual"): 1e-4, (2, "residual"): 2.0}
    # median r = 0.5: the tiny-residual liar gets q < 1, at most twice the median client's
    assert result.quality[1] == pytest.approx(1 / (1 + 1e-4 / 0.5))
    assert result.quality[2] == pytest.approx(1 / 5)


def test_forward_cap_is_bounded_by_the_reference_cap():
    result = Fusion(FusionConfig(quality="budget")).fuse(
        global_state(), [good(1, forward_cap=1000), good(2, forward_cap=8)], CTX
    )
    assert result.quality == pytest.approx({1: 1.0, 2: 0.5})
    assert result.adjusted == [{"client": 1, "field": "forward_cap", "reported": 1000, "used": 16}]


def test_huge_update_is_rejected_by_the_adaptive_norm_bound():
    updates = [good(1, 0.5), good(2, 0.6), good(3, 0.4), good(4, 1e6)]
    result = Fusion(FusionConfig()).fuse(global_state(), updates, CTX)
    assert result.accepted == [1, 2, 3]
    assert [r["client"] for r in result.rejected] == [4]
    assert "exceeds 10 x the round's median norm" in result.rejected[0]["reason"]
    assert float(result.state["head.weight"].abs().max()) < 1.0
    unbounded = Fusion(FusionConfig(max_norm_factor=None)).fuse(global_state(), updates, CTX)
    assert unbounded.accepted == [1, 2, 3, 4]


def test_overflowing_update_is_rejected():
    g = {"x": torch.zeros(2, dtype=torch.float64)}
    huge = {"x": torch.full((2,), 1e300, dtype=torch.float64)}
    bad = ClientUpdate(2, "t", huge, 1, 1, 1, None, None)
    ok = ClientUpdate(1, "t", {"x": torch.ones(2, dtype=torch.float64)}, 1, 1, 1, None, None)
    result = Fusion(FusionConfig(max_norm_factor=None)).fuse(g, [ok, bad], CTX)
    assert result.accepted == [1] and "not finite" in result.rejected[0]["reason"]


def test_duplicate_client_ids_are_all_rejected():
    result = Fusion().fuse(global_state(), [good(1), good(2), good(2, 0.3)], CTX)
    assert result.accepted == [1]
    assert [r["client"] for r in result.rejected] == [2, 2]
    assert all("duplicate client id 2" == r["reason"] for r in result.rejected)


def test_hostile_state_mapping_is_rejected_not_raised():
    class Exploding(dict):
        def __getitem__(self, key):
            raise RuntimeError("boom")

    bad = dataclasses.replace(good(3), state=Exploding(good(3).state))
    result = Fusion().fuse(global_state(), [good(1), bad], CTX)
    assert result.accepted == [1] and "could not validate update" in result.rejected[0]["reason"]


def test_check_state_accepts_an_exact_match():
    g = global_state()
    assert check_state(g, {k: v.clone() for k, v in g.items()}) is None


def test_validate_updates_numpy_scalars_are_normalised():
    u = good(1, num_examples=np.int64(7), residual=np.float32(0.02), momentum=np.float64(0.9))
    outcome = validate_updates(global_state(), [u], CTX, ValidationLimits())
    bounded = outcome.accepted[0].update
    assert type(bounded.num_examples) is int and bounded.num_examples == 7
    assert type(bounded.momentum) is float
