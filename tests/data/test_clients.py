"""`deqfl.data.clients`: every client's train and held-back rows from plain arguments."""

import numpy as np
import pytest

from deqfl.data.clients import ClientRows, client_rows, scheme_params, split_holdout
from deqfl.data.partition import partition_indices

LABELS = np.random.default_rng(7).integers(0, 10, size=2000).astype(np.int64)
SETTINGS = {"alpha": 0.5, "classes_per_client": 2, "shards_per_client": 2}


def test_rows_are_the_partition_split_into_train_and_holdout():
    rows = client_rows(LABELS, 8, "dirichlet", seed=3, holdout_fraction=0.25, **SETTINGS)
    parts = partition_indices(LABELS, 8, "dirichlet", 3, alpha=0.5)
    assert [r.client_id for r in rows] == list(range(8))
    for r, part in zip(rows, parts):
        assert isinstance(r, ClientRows)
        assert np.array_equal(np.sort(np.concatenate([r.train_indices, r.holdout_indices])), part)
        assert not set(r.train_indices) & set(r.holdout_indices)
        assert len(r.holdout_indices) == round(0.25 * len(part))
        assert np.all(np.diff(r.train_indices) > 0) and np.all(np.diff(r.holdout_indices) > 0)


def test_same_arguments_same_rows_and_the_seed_matters():
    a = client_rows(LABELS, 5, "iid", seed=1, holdout_fraction=0.1, **SETTINGS)
    b = client_rows(LABELS, 5, "iid", seed=1, holdout_fraction=0.1, **SETTINGS)
    c = client_rows(LABELS, 5, "iid", seed=2, holdout_fraction=0.1, **SETTINGS)
    assert all(np.array_equal(x.train_indices, y.train_indices) and np.array_equal(x.holdout_indices, y.holdout_indices)
               for x, y in zip(a, b))
    assert any(not np.array_equal(x.train_indices, z.train_indices) for x, z in zip(a, c))


def test_train_subset_uses_only_the_first_rows():
    rows = client_rows(LABELS, 4, "iid", seed=0, holdout_fraction=0.0, train_subset=300, **SETTINGS)
    used = np.concatenate([r.train_indices for r in rows])
    assert len(used) == 300 and used.max() < 300 and not any(len(r.holdout_indices) for r in rows)


def test_quantity_skew_honours_alpha():
    """Issue 15: `data.alpha` reaches the quantity-skew partition (it was dropped)."""
    def sizes(alpha):
        rows = client_rows(LABELS, 10, "quantity-skew", seed=0, holdout_fraction=0.0, **{**SETTINGS, "alpha": alpha})
        return np.array([len(r.train_indices) for r in rows])

    skewed, even = sizes(0.05), sizes(1000.0)
    assert skewed.sum() == even.sum() == len(LABELS)
    assert skewed.std() > 5 * even.std()


def test_scheme_params_keeps_what_the_scheme_takes():
    assert scheme_params("iid", **SETTINGS) == {}
    assert scheme_params("dirichlet", **SETTINGS) == {"alpha": 0.5}
    assert scheme_params("quantity-skew", **SETTINGS) == {"alpha": 0.5}
    assert scheme_params("pathological", **SETTINGS) == {"classes_per_client": 2}
    assert scheme_params("shards", **SETTINGS) == {"shards_per_client": 2}


def test_an_unknown_scheme_is_named_in_the_error():
    from deqfl.errors import DataError

    with pytest.raises(DataError, match="unknown partition scheme 'bogus'"):
        client_rows(LABELS, 4, "bogus", seed=0, holdout_fraction=0.1, **SETTINGS)


def test_split_holdout_keeps_a_single_row_for_training():
    one = split_holdout(3, np.array([42]), 0.5, seed=0)
    assert one.client_id == 3 and one.train_indices.tolist() == [42] and one.holdout_indices.tolist() == []
    many = split_holdout(3, np.arange(10, 30), 0.3, seed=0)
    assert len(many.holdout_indices) == 6 and len(many.train_indices) == 14
    other = split_holdout(4, np.arange(10, 30), 0.3, seed=0)
    assert not np.array_equal(many.holdout_indices, other.holdout_indices)  # seeded per client
