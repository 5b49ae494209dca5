"""Reader for image-folder trees `train/<class>/<image>` + `test/<class>/<image>`.

The tree may be a directory or a tar archive (`.tar`, `.tar.gz`, `.tgz`), read as a
stream without extracting anything to disk. Any leading folders are allowed (the shared
CIFAR-10 archive holds `cifar10-jpeg/train/airplane/0000.jpg`, ...). Images are decoded
with Pillow; all must share one size. Class names are the sorted folder names under
`train/`; label i is the i-th name. Within a split, images are ordered by (class, file
name), so the arrays do not depend on directory or archive order.
"""

from __future__ import annotations

import io
import itertools
import os
import tarfile
import zlib
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from deqfl.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
SPLITS = ("train", "test")
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz")
CHUNK = 1000  # images per decoding task
LAYOUT = "train/<class>/<image> and test/<class>/<image> (JPEG, PNG, ...)"


@dataclass(frozen=True)
class ImageFolderArrays:
    """Decoded tree: uint8 images (N, C, H, W) and int64 labels per split, class names."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[str, ...]


def is_archive(path: Path) -> bool:
    return path.is_file() and path.name.endswith(ARCHIVE_SUFFIXES)


def find_tree_root(path: Path) -> Path | None:
    """`path` or its single subfolder, whichever holds train/ and test/; else None."""
    if all((path / s).is_dir() for s in SPLITS):
        return path
    subdirs = [p for p in path.iterdir() if p.is_dir()] if path.is_dir() else []
    if len(subdirs) == 1 and all((subdirs[0] / s).is_dir() for s in SPLITS):
        return subdirs[0]
    return None


def tree_files(root: Path) -> list[Path]:
    """Every image file of the tree under `root`, sorted."""
    return sorted(p for s in SPLITS for p in (root / s).glob("*/*")
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _split_class(name: str) -> tuple[str, str] | None:
    """(split, class) for a '/'-separated path ending in <split>/<class>/<image>, else None."""
    parts = name.replace("\\", "/").split("/")
    if len(parts) < 3 or parts[-3] not in SPLITS or parts[-1].startswith("."):
        return None
    if not parts[-1].lower().endswith(IMAGE_SUFFIXES):
        return None
    return parts[-3], parts[-2]


def _iter_archive(path: Path) -> Iterator[tuple[str, str, str, bytes]]:
    try:
        with tarfile.open(path, mode="r|*") as tar:
            for member in tar:
                where = _split_class(member.name) if member.isfile() else None
                if where:
                    data = tar.extractfile(member).read()
                    yield where[0], where[1], member.name, data
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise DataError(f"cannot read archive {path}: {exc} (corrupt or truncated?)") from exc


def _iter_directory(root: Path) -> Iterator[tuple[str, str, str, bytes]]:
    for file in tree_files(root):
        split, cls = _split_class(file.as_posix())
        yield split, cls, str(file), file.read_bytes()


def _decode_chunk(names: list[str], blobs: list[bytes], mode: str) -> np.ndarray:
    """Decode same-size images into one uint8 array (k, H, W[, C]); DataError otherwise."""
    images = []
    for name, data in zip(names, blobs):
        try:
            with Image.open(io.BytesIO(data)) as image:
                images.append(np.asarray(image.convert(mode)))
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise DataError(f"cannot decode image {name}: {exc}") from exc
        if images[-1].shape != images[0].shape:
            raise DataError(f"image {name} is {images[-1].shape[1]}x{images[-1].shape[0]} but "
                            f"{names[0]} is {images[0].shape[1]}x{images[0].shape[0]}: "
                            "all images must share one size")
    return np.stack(images)


def read_image_folder(path: Path, channels: int, how_to_obtain: str) -> ImageFolderArrays:
    """Decode the tree at `path` (directory or archive) into `channels` (1 or 3) channels.

    The archive or tree is read sequentially while threads decode chunks of images.
    """
    if is_archive(path):
        entries = _iter_archive(path)
    else:
        root = find_tree_root(path)
        if root is None:
            raise DataError(f"{path} is not an image-folder tree: expected {LAYOUT}, "
                            f"or a .tar.gz of one. {how_to_obtain}")
        entries = _iter_directory(root)
    mode = {1: "L", 3: "RGB"}[channels]
    keys: dict[str, list[tuple[str, str]]] = {s: [] for s in SPLITS}  # (class, file name)
    chunks: dict[str, list[Future]] = {s: [] for s in SPLITS}
    # Pillow releases the GIL while decoding, so threads overlap decoding with reading.
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        for split, group in itertools.groupby(entries, key=lambda e: e[0]):
            for chunk in iter(lambda: list(itertools.islice(group, CHUNK)), []):
                names = [name for _, _, name, _ in chunk]
                keys[split].extend((cls, name.rsplit("/", 1)[-1]) for _, cls, name, _ in chunk)
                chunks[split].append(pool.submit(_decode_chunk, names, [d for *_, d in chunk], mode))
        decoded = {s: [f.result() for f in chunks[s]] for s in SPLITS}
    empty = [s for s in SPLITS if not keys[s]]
    if empty:
        raise DataError(f"{path}: no images under {' or '.join(s + '/<class>/' for s in empty)}; "
                        f"expected {LAYOUT}. {how_to_obtain}")
    shapes = {a.shape[1:] for s in SPLITS for a in decoded[s]}
    if len(shapes) > 1:
        raise DataError(f"{path}: images of different sizes {sorted(shapes)}: all images must share one size")
    classes = tuple(sorted({cls for cls, _ in keys["train"]}))
    extra = sorted({cls for cls, _ in keys["test"]} - set(classes))
    if extra:
        raise DataError(f"{path}: test classes {extra} have no training images")
    label = {cls: i for i, cls in enumerate(classes)}
    arrays = []
    for split in SPLITS:
        order = sorted(range(len(keys[split])), key=keys[split].__getitem__)
        x = np.concatenate(decoded[split])[order]
        x = x.reshape(*x.shape[:3], channels).transpose(0, 3, 1, 2)
        arrays.append(np.ascontiguousarray(x))
        arrays.append(np.array([label[keys[split][i][0]] for i in order], dtype=np.int64))
    return ImageFolderArrays(*arrays, classes=classes)
