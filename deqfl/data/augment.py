"""Training-batch augmentations, by name (`data.augment`).

An augmentation is a function `(x, fill, generator) -> x'` on a batch of normalised images
x (B, C, H, W): it returns a new batch of the same shape, takes every random draw from
`generator` (a CPU `torch.Generator`, so the draws are the same on every device) and pads
with `fill` (C values: a black pixel of the data set once normalised). A client applies it
to each training batch (`deqfl.fl.client.train`), never to the rows it evaluates on.

Built in:

* `none` (default): the batch as it is; no generator is drawn from.
* `crop-flip`: the standard CIFAR augmentation (He et al. 2016; torchvision's
  `RandomCrop(H, padding=4)` then `RandomHorizontalFlip()`): pad 4 pixels of black on
  every side, cut an H x W window at a uniform offset (dy, dx) in {0..8}^2, mirror it left
  to right with probability 1/2. Per sample:

      x'[c, i, j] = padded[c, dy + i, dx + j']     j' = W - 1 - j if flipped else j

It suits images that look the same mirrored (CIFAR-10); on digits (MNIST-like sets) a
mirrored digit is another shape, so it is off unless asked for.

Register your own with `register_augmentation(name)`; `data.augment` then accepts it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from deqfl.data.arrays import DatasetArrays

Augmentation = Callable[[Tensor, Tensor, torch.Generator], Tensor]

NONE = "none"
CROP_PADDING = 4
"""Pixels of black padding on each side before `crop-flip` cuts its window."""

_AUGMENTATIONS: dict[str, Augmentation] = {}


def register_augmentation(name: str) -> Callable[[Augmentation], Augmentation]:
    """Decorator registering an augmentation under `name` (ValueError if taken)."""

    def decorate(fn: Augmentation) -> Augmentation:
        if name == NONE or name in _AUGMENTATIONS:
            raise ValueError(f"augmentation {name!r} is already registered")
        _AUGMENTATIONS[name] = fn
        return fn

    return decorate


def augmentation_names() -> list[str]:
    """Every valid `data.augment`: "none", then the registered ones by name."""
    return [NONE, *sorted(_AUGMENTATIONS)]


@register_augmentation("crop-flip")
def crop_flip(x: Tensor, fill: Tensor, generator: torch.Generator) -> Tensor:
    """Random crop after `CROP_PADDING` pixels of `fill`, then a random horizontal flip
    (module docstring). Draws, in order: B offsets (dy, dx), then B flip bits."""
    b, c, h, w = x.shape
    p = CROP_PADDING
    offsets = torch.randint(0, 2 * p + 1, (b, 2), generator=generator).to(x.device)
    flips = torch.randint(0, 2, (b,), generator=generator).to(x.device).bool()
    padded = fill.to(x).view(1, c, 1, 1).expand(b, c, h + 2 * p, w + 2 * p).clone()
    padded[:, :, p : p + h, p : p + w] = x
    rows = offsets[:, :1] + torch.arange(h, device=x.device)  # (B, H)
    cols = torch.arange(w, device=x.device).expand(b, w)
    cols = offsets[:, 1:] + torch.where(flips[:, None], w - 1 - cols, cols)  # (B, W)
    batch = torch.arange(b, device=x.device)[:, None, None]
    return padded[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()


def batch_augmentation(
    name: str, dataset: DatasetArrays, generator: torch.Generator, device: torch.device | str = "cpu"
) -> Callable[[Tensor], Tensor] | None:
    """The augmentation `name` applied to batches of `dataset` with draws from `generator`
    and black (normalised) padding on `device`; None for "none". ValueError naming the
    choices for an unknown name."""
    if name == NONE:
        return None
    if name not in _AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {name!r}; valid choices: {', '.join(augmentation_names())}")
    fn = _AUGMENTATIONS[name]
    fill = black_pixel(dataset, device)
    return lambda x: fn(x, fill, generator)


def black_pixel(dataset: DatasetArrays, device: torch.device | str = "cpu") -> Tensor:
    """A black pixel (raw value 0) normalised as `dataset.normalise` does: (C,) values -mean/std."""
    return dataset.normalise(np.zeros((1, *dataset.input_shape), np.uint8), device)[0, :, 0, 0]
