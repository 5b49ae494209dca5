"""Batch augmentation (`data.augment`): crop-flip against a per-sample reference, black
padding, determinism by generator, and the registry's names."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deqfl.data import DatasetArrays
from deqfl.data.augment import (
    CROP_PADDING,
    augmentation_names,
    batch_augmentation,
    black_pixel,
    crop_flip,
    register_augmentation,
)

P = CROP_PADDING


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def reference(x: torch.Tensor, fill: torch.Tensor, seed: int) -> torch.Tensor:
    """crop-flip sample by sample with numpy: the draws in the documented order (B offsets
    (dy, dx), then B flip bits), a padded copy, a window, a mirror."""
    g = generator(seed)
    b, c, h, w = x.shape
    offsets = torch.randint(0, 2 * P + 1, (b, 2), generator=g).numpy()
    flips = torch.randint(0, 2, (b,), generator=g).numpy()
    out = []
    for i in range(b):
        padded = np.broadcast_to(fill.numpy()[:, None, None], (c, h + 2 * P, w + 2 * P)).copy()
        padded[:, P : P + h, P : P + w] = x[i].numpy()
        dy, dx = offsets[i]
        window = padded[:, dy : dy + h, dx : dx + w]
        out.append(window[:, :, ::-1] if flips[i] else window)
    return torch.from_numpy(np.stack(out).copy())


@pytest.mark.parametrize("shape", [(16, 3, 32, 32), (9, 1, 8, 8), (5, 2, 6, 11)])
def test_crop_flip_matches_the_per_sample_reference(shape):
    x = torch.randn(*shape, generator=generator(1))
    fill = torch.randn(shape[1], generator=generator(2))
    out = crop_flip(x, fill, generator(7))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.equal(out, reference(x, fill, 7))


def test_padding_is_zero_and_each_window_keeps_the_overlap_of_the_image():
    x = torch.ones(64, 1, 8, 8)
    out = crop_flip(x, torch.zeros(1), generator(3))
    assert set(out.unique().tolist()) <= {0.0, 1.0}
    g = generator(3)
    offsets = torch.randint(0, 2 * P + 1, (64, 2), generator=g)
    kept = (8 - (offsets[:, 0] - P).abs()) * (8 - (offsets[:, 1] - P).abs())
    assert torch.equal(out.sum(dim=(1, 2, 3)), kept.float())  # ones where the image overlaps the window
    assert (out.sum(dim=(1, 2, 3)) < 64).any() and (out.sum(dim=(1, 2, 3)) == 64).any()


def test_flips_mirror_and_crops_shift():
    """The centred window is the image (mirrored when flipped); the top-left window is the
    image shifted down and right by P, with P rows and columns of padding before it."""
    image = torch.arange(3 * 6 * 7, dtype=torch.float32).reshape(3, 6, 7) + 1
    x = image.expand(2000, 3, 6, 7)
    g = generator(11)
    offsets = torch.randint(0, 2 * P + 1, (2000, 2), generator=g).tolist()
    flips = torch.randint(0, 2, (2000,), generator=g).tolist()
    out = crop_flip(x, torch.zeros(3), generator(11))
    shifted = torch.zeros(3, 6, 7)
    shifted[:, P:, P:] = image[:, : 6 - P, : 7 - P]
    expected = {((P, P), 0): image, ((P, P), 1): image.flip(-1), ((0, 0), 0): shifted, ((0, 0), 1): shifted.flip(-1)}
    seen = set()
    for i, (offset, flip) in enumerate(zip(offsets, flips)):
        key = (tuple(offset), flip)
        if key in expected:
            assert torch.equal(out[i], expected[key])
            seen.add(key)
    assert seen == set(expected)


def test_same_generator_same_batch_other_seed_other_batch():
    x = torch.randn(32, 3, 32, 32, generator=generator(0))
    fill = torch.zeros(3)
    assert torch.equal(crop_flip(x, fill, generator(5)), crop_flip(x, fill, generator(5)))
    assert not torch.equal(crop_flip(x, fill, generator(5)), crop_flip(x, fill, generator(6)))


def _dataset() -> DatasetArrays:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(20, 3, 6, 6), dtype=np.uint8)
    y = np.arange(20) % 2
    return DatasetArrays("tiny", x, y, x[:4], y[:4], ("a", "b"))


def test_batch_augmentation_pads_with_a_black_pixel_and_none_is_off():
    data = _dataset()
    black = black_pixel(data)
    expected = data.normalise(np.zeros((1, 3, 6, 6), np.uint8))[0, :, 0, 0]
    assert torch.equal(black, expected) and (black < 0).all()
    assert batch_augmentation("none", data, generator(0)) is None
    x = data.normalise(data.x_train[:8])
    out = batch_augmentation("crop-flip", data, generator(4))(x)
    assert torch.equal(out, crop_flip(x, black, generator(4)))
    with pytest.raises(ValueError, match="valid choices: none, crop-flip"):
        batch_augmentation("rotate", data, generator(0))


def test_registry_names_and_duplicates():
    assert augmentation_names()[:2] == ["none", "crop-flip"]
    with pytest.raises(ValueError, match="already registered"):
        register_augmentation("crop-flip")(crop_flip)
    with pytest.raises(ValueError, match="already registered"):
        register_augmentation("none")(crop_flip)
