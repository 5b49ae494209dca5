"""scikit-learn's `load_digits`: 1,797 real 8x8 handwritten digits, shipped in its wheel.

Pixel values 0..16 are scaled to uint8 as round(v * 255 / 16). The train/test split is
stratified by label and seeded: `test_fraction` (default 0.2, i.e. 1,437 train + 360
test) with `seed` (default 0) gives the same split on every machine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deqfl.data.arrays import DatasetArrays
from deqfl.data.registry import register_dataset
from deqfl.errors import DataError


@register_dataset("digits")
def load_sklearn_digits(data_dir: Path | None, *, test_fraction: float = 0.2, seed: int = 0) -> DatasetArrays:
    """Digits as (1, 8, 8) uint8 images, 10 classes; data_dir is not used."""
    if data_dir is not None:
        raise DataError("the digits data set ships with scikit-learn and takes no data directory")
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"digits: test_fraction must be in (0, 1), got {test_fraction}")
    from sklearn.datasets import load_digits  # imported here: sklearn takes ~2 s to import
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    labels = bunch.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=test_fraction, stratify=labels, random_state=seed)
    return DatasetArrays("digits", x_train, y_train, x_test, y_test,
                         classes=tuple(str(d) for d in range(10)))
