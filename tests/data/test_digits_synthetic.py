"""The scikit-learn digits source and the seeded synthetic generator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from deqfl.data import load_dataset
from deqfl.errors import DataError


def test_digits_split_is_stratified_and_seeded() -> None:
    d = load_dataset("digits")
    assert d.x_train.shape == (1437, 1, 8, 8) and d.x_test.shape == (360, 1, 8, 8)
    assert d.x_train.dtype == np.uint8 and d.x_train.max() == 255
    assert np.abs(np.bincount(d.y_test) - 36).max() <= 1  # stratified: 20% of each class
    again = load_dataset("digits")
    np.testing.assert_array_equal(d.x_test, again.x_test)
    other = load_dataset("digits", seed=1)
    assert not np.array_equal(d.y_test, other.y_test)


def test_digits_rejects_a_data_dir(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="takes no data directory"):
        load_dataset("digits", data_dir=tmp_path)


def nearest_centroid_accuracy(d) -> float:
    x_train = d.x_train.reshape(len(d.x_train), -1).astype(float)
    centroids = np.stack([x_train[d.y_train == k].mean(0) for k in range(d.num_classes)])
    x_test = d.x_test.reshape(len(d.x_test), -1).astype(float)
    predicted = np.argmin(((x_test[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    return float((predicted == d.y_test).mean())


def test_synthetic_options_determinism_and_learnability() -> None:
    d = load_dataset("synthetic", num_train=300, num_test=60, num_classes=3, image_shape=(3, 4, 5), seed=7)
    assert d.x_train.shape == (300, 3, 4, 5) and d.num_classes == 3
    assert np.bincount(d.y_train).tolist() == [100] * 3
    np.testing.assert_array_equal(d.x_train, load_dataset(
        "synthetic", num_train=300, num_test=60, num_classes=3, image_shape=(3, 4, 5), seed=7).x_train)
    assert not np.array_equal(d.x_train, load_dataset(
        "synthetic", num_train=300, num_test=60, num_classes=3, image_shape=(3, 4, 5), seed=8).x_train)
    assert nearest_centroid_accuracy(load_dataset("synthetic")) > 0.9
    assert nearest_centroid_accuracy(d) > 0.9


@pytest.mark.parametrize("options", [{"num_classes": 1}, {"image_shape": (8, 8)}, {"num_train": 3}])
def test_synthetic_bad_options(options: dict) -> None:
    with pytest.raises(DataError, match="synthetic"):
        load_dataset("synthetic", **options)
