"""Fashion-MNIST from the shared IDX files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from deqfl.data import load_dataset
from deqfl.errors import DataError


def test_loads_idx_files(shared_data: Path, tmp_path: Path) -> None:
    d = load_dataset("fashion-mnist", data_dir=shared_data / "fashion-mnist", cache_dir=tmp_path)
    assert d.x_train.shape == (60000, 1, 28, 28) and d.x_test.shape == (10000, 1, 28, 28)
    assert np.bincount(d.y_train).tolist() == [6000] * 10
    assert np.bincount(d.y_test).tolist() == [1000] * 10
    assert d.classes[0] == "T-shirt/top" and d.classes[9] == "Ankle boot"
    assert d.x_train.max() == 255


def test_needs_a_data_dir(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"--data-dir DIR holding train-images-idx3-ubyte\.gz"):
        load_dataset("fashion-mnist", cache_dir=tmp_path)
