"""DatasetArrays: validation, exact channel statistics, normalise."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deqfl.data import DatasetArrays, load_dataset
from deqfl.errors import DataError


def make(**changes) -> DatasetArrays:
    rng = np.random.default_rng(0)
    fields = dict(name="t", x_train=rng.integers(0, 256, (20, 3, 4, 4), dtype=np.uint8),
                  y_train=np.arange(20, dtype=np.int64) % 2,
                  x_test=rng.integers(0, 256, (6, 3, 4, 4), dtype=np.uint8),
                  y_test=np.zeros(6, dtype=np.int64), classes=("a", "b"))
    fields.update(changes)
    return DatasetArrays(**fields)


def test_channel_stats_are_exact() -> None:
    d = make()
    x = d.x_train.astype(np.float64) / 255
    np.testing.assert_allclose(d.mean, x.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(d.std, x.std(axis=(0, 2, 3)), rtol=1e-12)
    assert d.input_shape == (3, 4, 4) and d.num_classes == 2


def test_normalise_standardises_the_training_set() -> None:
    d = make()
    z = d.normalise(d.x_train)
    assert z.dtype == torch.float32 and z.shape == (20, 3, 4, 4)
    torch.testing.assert_close(z.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.std(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(d.normalise(d.x_train[3]), z[3])
    with pytest.raises(ValueError, match="uint8"):
        d.normalise(d.x_train.astype(np.float32))


def test_constant_channel_does_not_divide_by_zero() -> None:
    d = make(x_train=np.full((4, 1, 2, 2), 7, np.uint8), y_train=np.zeros(4, np.int64),
             x_test=np.zeros((1, 1, 2, 2), np.uint8), y_test=np.zeros(1, np.int64))
    assert d.std == (1.0,) and torch.isfinite(d.normalise(d.x_test)).all()


@pytest.mark.parametrize(("changes", "match"), [
    ({"x_train": np.zeros((20, 4, 4), np.uint8)}, "x_train must be a uint8 array"),
    ({"x_train": np.zeros((20, 3, 4, 4), np.float32)}, "x_train must be a uint8 array"),
    ({"y_train": np.zeros(19, np.int64)}, "y_train must be an int64 array"),
    ({"y_test": np.full(6, 2, np.int64)}, "labels outside"),
    ({"x_test": np.zeros((6, 3, 5, 4), np.uint8)}, "differ in shape"),
    ({"classes": ("a", "a")}, "distinct"),
])
def test_malformed_arrays_raise(changes: dict, match: str) -> None:
    with pytest.raises(DataError, match=match):
        make(**changes)


def test_frozen() -> None:
    d = load_dataset("synthetic", num_train=20, num_test=5)
    with pytest.raises(AttributeError):
        d.name = "other"
