"""`DatasetArrays`: the in-memory form of every data set deqfl trains on.

Contract: images are uint8 arrays of shape (N, C, H, W), labels int64 arrays of shape (N,)
with values in 0..num_classes-1, and `classes[i]` names label i. The per-channel mean and
standard deviation of the training images (on the [0, 1] scale) are computed once, when
the object is built (or read back from the cache), and used by `normalise`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from deqfl.errors import DataError


def channel_stats(x: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean and std of uint8 images (N, C, H, W), on the [0, 1] scale.

    Computed from a 256-bin histogram per channel, so it is exact and needs no float copy
    of the data. A channel with zero spread gets std 1.0 (normalising must not divide by 0).
    """
    values = np.arange(256, dtype=np.float64) / 255.0
    means, stds = [], []
    for c in range(x.shape[1]):
        hist = np.bincount(x[:, c].reshape(-1), minlength=256).astype(np.float64)
        total = hist.sum()
        mean = float((hist * values).sum() / total)
        var = float((hist * (values - mean) ** 2).sum() / total)
        means.append(mean)
        stds.append(var**0.5 if var > 0 else 1.0)
    return tuple(means), tuple(stds)


@dataclass(frozen=True)
class DatasetArrays:
    """Train and test arrays of one data set, plus its class names.

    `mean` and `std` may be passed (the cache does, to skip recomputing them); when left
    empty they are computed from `x_train` in `__post_init__`. Construction validates
    dtypes, shapes and label ranges and raises `DataError` naming the data set. `folder`
    is where the same arrays are stored as .npy files (`deqfl.data.folder`), when they are:
    other processes can map them from there instead of receiving a copy.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[str, ...]
    mean: tuple[float, ...] = field(default=(), repr=False)
    std: tuple[float, ...] = field(default=(), repr=False)
    folder: Path | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "classes", tuple(str(c) for c in self.classes))
        self._validate()
        if not self.mean or not self.std:
            mean, std = channel_stats(self.x_train)
            object.__setattr__(self, "mean", mean)
            object.__setattr__(self, "std", std)
        if len(self.mean) != self.input_shape[0] or len(self.std) != self.input_shape[0]:
            raise DataError(f"{self.name}: mean/std need one value per channel")

    def _validate(self) -> None:
        problems = []
        for split, x, y in (("train", self.x_train, self.y_train), ("test", self.x_test, self.y_test)):
            if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 4:
                problems.append(f"x_{split} must be a uint8 array (N, C, H, W)")
            elif not isinstance(y, np.ndarray) or y.dtype != np.int64 or y.shape != (len(x),):
                problems.append(f"y_{split} must be an int64 array of shape ({len(x)},)")
            elif len(y) and (y.min() < 0 or y.max() >= len(self.classes)):
                problems.append(f"y_{split} has labels outside 0..{len(self.classes) - 1}")
        if not problems and self.x_train.shape[1:] != self.x_test.shape[1:]:
            problems.append(f"train images {self.x_train.shape[1:]} and test images "
                            f"{self.x_test.shape[1:]} differ in shape")
        if not problems and len(self.x_train) == 0:
            problems.append("the training set is empty")
        if not self.classes or len(set(self.classes)) != len(self.classes):
            problems.append("classes must be a non-empty tuple of distinct names")
        if problems:
            raise DataError(f"data set {self.name!r} is malformed: " + "; ".join(problems))

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        c, h, w = self.x_train.shape[1:]
        return int(c), int(h), int(w)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def normalise(self, x_uint8: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
        """uint8 images (N, C, H, W) or one image (C, H, W) -> float32 tensor on `device`.

        Scales to [0, 1], then subtracts the training set's per-channel mean and divides by
        its per-channel std. The input array (e.g. memory-mapped, on the host) is not
        modified; the bytes are copied to `device` as uint8 and converted there.
        """
        if not isinstance(x_uint8, np.ndarray) or x_uint8.dtype != np.uint8:
            raise ValueError("normalise expects a uint8 numpy array")
        if x_uint8.ndim not in (3, 4) or x_uint8.shape[-3:] != self.input_shape:
            raise ValueError(f"normalise expects images of shape (N, {self.input_shape}) "
                             f"or {self.input_shape}, got {x_uint8.shape}")
        mean = torch.tensor(self.mean, dtype=torch.float32, device=device).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32, device=device).view(-1, 1, 1)
        x = torch.from_numpy(np.array(x_uint8, copy=True)).to(device, torch.float32)  # a copy: safe for read-only input
        return x.div_(255.0).sub_(mean).div_(std)
