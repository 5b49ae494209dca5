"""The IDX reader: round trip of small files, and clear errors for corrupt ones."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from deqfl.data import load_dataset
from deqfl.data.idx import IDX_FILES, read_idx
from deqfl.errors import DataError


def idx_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx_dir(folder: Path, n_train: int = 12, n_test: int = 5) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {
        IDX_FILES[0]: rng.integers(0, 256, (n_train, 28, 28)),
        IDX_FILES[1]: np.arange(n_train) % 10,
        IDX_FILES[2]: rng.integers(0, 256, (n_test, 28, 28)),
        IDX_FILES[3]: np.arange(n_test) % 10,
    }
    folder.mkdir(parents=True, exist_ok=True)
    for stem, array in arrays.items():
        (folder / f"{stem}.gz").write_bytes(gzip.compress(idx_bytes(array)))
    return arrays


def test_round_trip_small_files(tmp_path: Path) -> None:
    arrays = write_idx_dir(tmp_path / "idx")
    d = load_dataset("fashion-mnist", data_dir=tmp_path / "idx", cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(d.x_train[:, 0], arrays[IDX_FILES[0]])
    np.testing.assert_array_equal(d.y_test, arrays[IDX_FILES[3]])


@pytest.mark.parametrize(("content", "match"), [
    (b"\x00\x00\x0d\x01" + b"\x00" * 8, "bad magic"),
    (idx_bytes(np.zeros((4, 2, 2)))[:-3], "corrupt or truncated"),
    (b"\x00\x00\x08\x03\x00", "incomplete IDX header"),
])
def test_corrupt_plain_file(tmp_path: Path, content: bytes, match: str) -> None:
    path = tmp_path / "bad"
    path.write_bytes(content)
    with pytest.raises(DataError, match=match):
        read_idx(path)


def test_truncated_gzip_names_the_file(tmp_path: Path) -> None:
    write_idx_dir(tmp_path)
    victim = tmp_path / f"{IDX_FILES[0]}.gz"
    victim.write_bytes(victim.read_bytes()[:100])
    with pytest.raises(DataError, match=rf"{IDX_FILES[0]}\.gz.*corrupt or truncated"):
        load_dataset("mnist", data_dir=tmp_path, cache_dir=tmp_path / "cache")


def test_images_and_labels_of_different_length(tmp_path: Path) -> None:
    write_idx_dir(tmp_path)
    (tmp_path / f"{IDX_FILES[1]}.gz").write_bytes(gzip.compress(idx_bytes(np.arange(7) % 10)))
    with pytest.raises(DataError, match="do not match"):
        load_dataset("mnist", data_dir=tmp_path, cache_dir=tmp_path / "cache")
