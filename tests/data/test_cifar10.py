"""CIFAR-10 from a tar.gz of the JPEG tree, the extracted tree, and python batches."""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deqfl.data import load_dataset
from deqfl.data.sources.cifar10 import CLASSES
from deqfl.errors import DataError


@pytest.fixture(scope="module")
def from_tar(small_cifar_tar: Path, tmp_path_factory: pytest.TempPathFactory):
    return load_dataset("cifar10", data_dir=small_cifar_tar, cache_dir=tmp_path_factory.mktemp("c"))


def test_tar_gz_arrays(from_tar, small_cifar_tar: Path) -> None:
    d = from_tar
    assert d.classes == CLASSES
    assert d.x_train.shape == (40, 3, 32, 32) and d.x_test.shape == (20, 3, 32, 32)
    assert np.bincount(d.y_train).tolist() == [4] * 10 and np.bincount(d.y_test).tolist() == [2] * 10
    with tarfile.open(small_cifar_tar) as tar:  # the first training image, decoded directly
        name = min(m.name for m in tar.getmembers() if "/train/airplane/" in m.name)
        expected = np.asarray(Image.open(io.BytesIO(tar.extractfile(name).read())).convert("RGB"))
    np.testing.assert_array_equal(d.x_train[0].transpose(1, 2, 0), expected)


def test_extracted_tree_equals_archive(from_tar, small_cifar_tar: Path, tmp_path: Path) -> None:
    with tarfile.open(small_cifar_tar) as tar:
        tar.extractall(tmp_path / "tree", filter="data")
    for data_dir in (tmp_path / "tree", tmp_path / "tree" / "cifar10-jpeg"):
        d = load_dataset("cifar10", data_dir=data_dir, cache_dir=tmp_path / "cache")
        np.testing.assert_array_equal(d.x_train, from_tar.x_train)
        np.testing.assert_array_equal(d.y_test, from_tar.y_test)


def write_python_batches(folder: Path, per_batch: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    xs, ys = [], []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        y = [int(v) for v in rng.integers(0, 10, per_batch)]
        (folder / name).write_bytes(pickle.dumps({b"data": x, b"labels": y, b"batch_label": b"x"}))
        xs.append(x)
        ys.append(y)
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [c.encode() for c in CLASSES]}))
    return np.concatenate(xs).reshape(-1, 3, 32, 32), np.concatenate(ys)


def test_python_batches(tmp_path: Path) -> None:
    x, y = write_python_batches(tmp_path / "cifar-10-batches-py")
    for data_dir in (tmp_path, tmp_path / "cifar-10-batches-py"):
        d = load_dataset("cifar10", data_dir=data_dir, cache_dir=tmp_path / "cache")
        np.testing.assert_array_equal(d.x_train, x[:15])
        np.testing.assert_array_equal(d.x_test, x[15:])
        np.testing.assert_array_equal(d.y_train, y[:15])
        assert d.classes == CLASSES


def test_corrupt_python_batch(tmp_path: Path) -> None:
    write_python_batches(tmp_path)
    (tmp_path / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="data_batch_3"):
        load_dataset("cifar10", data_dir=tmp_path, cache_dir=tmp_path / "cache")


def test_missing_source_explains_the_layouts(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="has no built-in source.*cifar-10-batches-py"):
        load_dataset("cifar10", cache_dir=tmp_path)
    with pytest.raises(DataError, match=rf"found no data at {tmp_path}.*train/<class>"):
        load_dataset("cifar10", data_dir=tmp_path, cache_dir=tmp_path)


def write_tree_tar(path: Path, images: dict[str, Image.Image]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, image in images.items():
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            info = tarfile.TarInfo(name)
            info.size = buffer.tell()
            tar.addfile(info, io.BytesIO(buffer.getvalue()))


def test_tree_with_other_classes_is_not_cifar10(tmp_path: Path) -> None:
    write_tree_tar(tmp_path / "t.tar.gz", {"train/cat/a.png": Image.new("RGB", (32, 32)),
                                           "test/cat/b.png": Image.new("RGB", (32, 32))})
    with pytest.raises(DataError, match="not the ten CIFAR-10 classes"):
        load_dataset("cifar10", data_dir=tmp_path / "t.tar.gz", cache_dir=tmp_path)


def test_image_folder_source_and_size_check(tmp_path: Path) -> None:
    images = {"x/train/b/1.png": Image.new("L", (5, 4), 10), "x/train/a/2.png": Image.new("L", (5, 4), 20),
              "x/test/b/3.png": Image.new("L", (5, 4), 30)}
    write_tree_tar(tmp_path / "ok.tar.gz", images)
    d = load_dataset("image-folder", data_dir=tmp_path / "ok.tar.gz", cache_dir=tmp_path, grayscale=True)
    assert d.classes == ("a", "b") and d.x_train.shape == (2, 1, 4, 5)
    assert d.x_train[:, 0, 0, 0].tolist() == [20, 10] and d.y_test.tolist() == [1]
    write_tree_tar(tmp_path / "bad.tar.gz", {**images, "x/test/a/4.png": Image.new("L", (6, 4))})
    with pytest.raises(DataError, match="all images must share one size"):
        load_dataset("image-folder", data_dir=tmp_path / "bad.tar.gz", cache_dir=tmp_path)


def test_truncated_archive(small_cifar_tar: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(small_cifar_tar.read_bytes()[: small_cifar_tar.stat().st_size // 2])
    with pytest.raises(DataError, match="corrupt or truncated"):
        load_dataset("cifar10", data_dir=broken, cache_dir=tmp_path)
