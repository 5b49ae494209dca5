"""Reader for the official CIFAR-10 python format (`cifar-10-batches-py`).

The folder holds `data_batch_1` ... `data_batch_5`, `test_batch` and `batches.meta`:
Python pickles of dicts with `data` (N x 3072 uint8, channel-major 3x32x32 rows) and
`labels`, and `label_names`. Pickles can run code when read: only point this at
files you trust (the official archive is https://www.cs.toronto.edu/~kriz/cifar.html).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from deqfl.errors import DataError

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
BATCH_FILES = (*TRAIN_BATCHES, "test_batch", "batches.meta")


def find_batches_dir(path: Path) -> Path | None:
    """`path` or `path/cifar-10-batches-py` if it holds all BATCH_FILES, else None."""
    for candidate in (path, path / "cifar-10-batches-py"):
        if all((candidate / f).is_file() for f in BATCH_FILES):
            return candidate
    return None


def _unpickle(path: Path) -> dict:
    try:
        with path.open("rb") as f:
            obj = pickle.load(f, encoding="bytes")
    except Exception as exc:  # pickle can fail in many ways on a damaged file
        raise DataError(f"cannot read CIFAR-10 batch {path} ({type(exc).__name__}: {exc}); "
                        "corrupt file? re-extract cifar-10-python.tar.gz") from exc
    if not isinstance(obj, dict):
        raise DataError(f"{path} is not a CIFAR-10 batch (expected a pickled dict)")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    batch = _unpickle(path)
    try:
        x = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        y = np.asarray(batch["labels"], dtype=np.int64)
    except (KeyError, ValueError) as exc:
        raise DataError(f"{path} is not a CIFAR-10 batch (needs 'data' N x 3072 and 'labels')") from exc
    if len(x) != len(y):
        raise DataError(f"{path}: {len(x)} images but {len(y)} labels")
    return x, y


def read_batches(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]:
    """(x_train, y_train, x_test, y_test, class names) from a cifar-10-batches-py folder."""
    train = [_read_batch(folder / name) for name in TRAIN_BATCHES]
    x_test, y_test = _read_batch(folder / "test_batch")
    names = _unpickle(folder / "batches.meta").get("label_names")
    if not names:
        raise DataError(f"{folder / 'batches.meta'} has no 'label_names'")
    classes = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
    return (np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]),
            x_test, y_test, classes)
