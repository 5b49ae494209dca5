"""Robust aggregators on hand-computed cases: median, trimmed mean, Krum, multi-Krum."""

from __future__ import annotations

import pytest
import torch

from deqfl.fl.fusion import ClientUpdate, Fusion, FusionConfig, FusionContext
from deqfl.fl.fusion.aggregator.median import weighted_median

CTX = FusionContext(round=1, reference_cap=16)


def fuse(values, n=None, **config):
    """One scalar parameter x = 0; client i+1 returns values[i] with n[i] examples."""
    n = n or [1] * len(values)
    g = {"x": torch.zeros(1, dtype=torch.float64)}
    ups = [
        ClientUpdate(i + 1, "t", {"x": torch.tensor([float(v)], dtype=torch.float64)},
                     n[i], 1, 16, None, None)
        for i, v in enumerate(values)
    ]
    config.setdefault("max_norm_factor", None)
    config.setdefault("weighting", "examples")
    return Fusion(FusionConfig(**config)).fuse(g, ups, CTX)


@pytest.mark.parametrize(
    ("values", "n", "expected"),
    [
        ([0, 1, 10], None, 1.0),
        ([10, 0, 3, 1], None, 2.0),  # even count: mean of the two middle values
        ([0, 1, 10], [1, 1, 3], 10.0),  # 10 holds 3/5 of the weight
        ([0, 1, 10], [2, 1, 1], 0.5),  # cumulative weight hits exactly 1/2 at 0
        ([7], None, 7.0),
    ],
)
def test_weighted_median(values, n, expected):
    assert fuse(values, n, aggregator="median").state["x"].item() == pytest.approx(expected)


def test_weighted_median_zero_weights_are_ignored_per_coordinate():
    values = torch.tensor([[0.0, 5.0], [1.0, 1.0], [2.0, 0.0]], dtype=torch.float64)
    weights = torch.tensor([0.5, 0.0, 0.5], dtype=torch.float64)
    assert weighted_median(values, weights).tolist() == [1.0, 2.5]


def test_median_resists_a_sign_flipping_minority():
    honest = [1.0, 1.1, 0.9, 1.05]
    result = fuse(honest + [-50.0], aggregator="median")
    assert result.state["x"].item() == pytest.approx(1.0)
    assert fuse(honest + [-50.0], aggregator="mean").state["x"].item() < -8


def test_trimmed_mean():
    # K = 5, trim 0.2 -> drop one at each end: mean(1, 2, 3) = 2
    assert fuse([100, 1, 2, 3, -50], aggregator="trimmed-mean", trim_fraction=0.2
                ).state["x"].item() == pytest.approx(2.0)
    # weighted: survivors 1, 2, 3 with n = 1, 1, 2 -> (1 + 2 + 6) / 4
    assert fuse([100, 1, 2, 3, -50], [1, 1, 1, 2, 1], aggregator="trimmed-mean",
                trim_fraction=0.2).state["x"].item() == pytest.approx(9 / 4)
    # trim 0.1 of 5 = 0: the plain weighted mean
    assert fuse([1, 2, 3, 4, 5], aggregator="trimmed-mean").state["x"].item() == pytest.approx(3.0)


def test_trimmed_mean_keeps_at_least_one_value():
    assert fuse([0, 1], aggregator="trimmed-mean", trim_fraction=0.49).state["x"].item() == 0.5


def test_krum_selects_the_most_central_update():
    # f = 1, K = 5 -> 2 nearest neighbours. Scores: 3.25, 1.25, 2.5, 6.25, huge.
    result = fuse([0, 1, 1.5, 3, 50], aggregator="krum", krum_byzantine=1)
    assert result.state["x"].item() == 1.0
    assert result.weights == {1: 0.0, 2: 1.0, 3: 0.0, 4: 0.0, 5: 0.0}


def test_multi_krum_averages_the_lowest_scores_with_their_weights():
    result = fuse([0, 1, 1.5, 3, 50], aggregator="multi-krum", krum_byzantine=1)
    assert result.state["x"].item() == pytest.approx(5.5 / 4)
    assert result.weights == pytest.approx({1: 0.25, 2: 0.25, 3: 0.25, 4: 0.25, 5: 0.0})
    weighted = fuse([0, 1, 1.5, 3, 50], [1, 1, 1, 5, 100], aggregator="multi-krum",
                    krum_byzantine=1, krum_select=2)
    # selected: clients 2 and 3 (lowest scores), n = 1, 1
    assert weighted.weights == pytest.approx({1: 0, 2: 0.5, 3: 0.5, 4: 0, 5: 0})
    assert sum(weighted.weights.values()) == pytest.approx(1.0)


@pytest.mark.parametrize("aggregator", ["median", "trimmed-mean", "krum", "multi-krum"])
def test_robust_rules_handle_one_update_and_keep_ints(aggregator):
    g = {"x": torch.zeros(2), "n": torch.tensor(4)}
    u = ClientUpdate(1, "t", {"x": torch.ones(2), "n": torch.tensor(9)}, 1, 1, 16, None, None)
    result = Fusion(FusionConfig(aggregator=aggregator)).fuse(g, [u], CTX)
    assert result.state["x"].tolist() == [1.0, 1.0] and result.state["n"].item() == 4
    assert result.weights == {1: 1.0}
