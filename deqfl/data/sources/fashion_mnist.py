"""Fashion-MNIST: a directory of the four original IDX files (`--data-dir` is required)."""

from __future__ import annotations

from pathlib import Path

from deqfl.data.arrays import DatasetArrays
from deqfl.data.idx import IDX_FILES, find_idx_files, load_idx_dataset
from deqfl.data.registry import register_dataset
from deqfl.errors import DataError

CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
HOW_TO_OBTAIN = (
    f"Pass --data-dir DIR holding {', '.join(f'{s}.gz' for s in IDX_FILES)}: get them from "
    "https://github.com/zalandoresearch/fashion-mnist (data/fashion) or the Debian package "
    "dataset-fashion-mnist."
)


def _inputs(data_dir: Path | None) -> list[Path]:
    if data_dir is None:
        raise DataError("Fashion-MNIST has no built-in source. " + HOW_TO_OBTAIN)
    return find_idx_files(data_dir, HOW_TO_OBTAIN)


@register_dataset("fashion-mnist", inputs=lambda data_dir: _inputs(data_dir))
def load_fashion_mnist(data_dir: Path | None) -> DatasetArrays:
    """Fashion-MNIST, 60k train + 10k test, (1, 28, 28), from the IDX files in data_dir."""
    _inputs(data_dir)
    return load_idx_dataset("fashion-mnist", data_dir, CLASSES, HOW_TO_OBTAIN)
