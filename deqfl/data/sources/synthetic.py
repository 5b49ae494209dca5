"""A seeded synthetic image data set for unit tests: small, instant, and learnable.

Each class has a random prototype image; a sample is its class prototype plus Gaussian
pixel noise (std `noise` on the 0..255 scale), clipped to uint8. Labels cycle through
the classes (balanced) in a shuffled order. Same options and seed: same arrays.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deqfl.data.arrays import DatasetArrays
from deqfl.data.registry import register_dataset
from deqfl.errors import DataError


def _split(rng: np.random.Generator, prototypes: np.ndarray, n: int, noise: float) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.permutation(np.arange(n) % len(prototypes)).astype(np.int64)
    images = prototypes[labels] + rng.normal(0.0, noise, size=(n, *prototypes.shape[1:]))
    return np.clip(np.rint(images), 0, 255).astype(np.uint8), labels


@register_dataset("synthetic")
def load_synthetic(
    data_dir: Path | None,
    *,
    num_train: int = 1000,
    num_test: int = 200,
    num_classes: int = 10,
    image_shape: tuple[int, int, int] = (1, 8, 8),
    noise: float = 48.0,
    seed: int = 0,
) -> DatasetArrays:
    """`num_train` + `num_test` images of shape `image_shape` (C, H, W) in `num_classes` classes."""
    if data_dir is not None:
        raise DataError("the synthetic data set is generated and takes no data directory")
    shape = tuple(int(s) for s in image_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise DataError(f"synthetic: image_shape must be (C, H, W) of positive ints, got {image_shape}")
    if num_classes < 2 or num_train < num_classes or num_test < 1 or noise < 0:
        raise DataError("synthetic: need num_classes >= 2, num_train >= num_classes, "
                        f"num_test >= 1, noise >= 0 (got {num_classes}, {num_train}, {num_test}, {noise})")
    rng = np.random.default_rng(seed)
    prototypes = rng.uniform(0.0, 255.0, size=(num_classes, *shape))
    x_train, y_train = _split(rng, prototypes, num_train, noise)
    x_test, y_test = _split(rng, prototypes, num_test, noise)
    return DatasetArrays("synthetic", x_train, y_train, x_test, y_test,
                         classes=tuple(f"class_{k}" for k in range(num_classes)))
