"""CIFAR-10 (3 x 32 x 32): `--data-dir` is required and may be any of

- the official python folder `cifar-10-batches-py` (or a folder containing it);
- an image-folder tree `train/<class>/*.jpg` + `test/<class>/*.jpg` (or a folder holding
  one such tree, e.g. the extracted `cifar10-jpeg/`);
- a `.tar.gz` / `.tgz` / `.tar` archive of such a tree, given as the path itself
  (e.g. the shared `cifar10-jpeg.tar.gz`), streamed without extraction.

Labels follow the official class order (airplane=0 ... truck=9); an image-folder tree
must have exactly these ten class folders.
"""

from __future__ import annotations

from pathlib import Path

from deqfl.data.arrays import DatasetArrays
from deqfl.data.cifar_batches import BATCH_FILES, find_batches_dir, read_batches
from deqfl.data.imagefolder import LAYOUT, find_tree_root, is_archive, read_image_folder, tree_files
from deqfl.data.registry import register_dataset
from deqfl.errors import DataError

CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
           "dog", "frog", "horse", "ship", "truck")
HOW_TO_OBTAIN = (
    "Pass --data-dir pointing to the extracted official python version "
    "(cifar-10-batches-py/ with " + ", ".join(BATCH_FILES) + "; from "
    "https://www.cs.toronto.edu/~kriz/cifar.html), or to an image-folder tree "
    f"{LAYOUT} with the ten CIFAR-10 class folders, or to a .tar.gz of such a tree."
)


def _inputs(data_dir: Path | None) -> list[Path]:
    if data_dir is None:
        raise DataError("CIFAR-10 has no built-in source. " + HOW_TO_OBTAIN)
    if is_archive(data_dir):
        return [data_dir]
    batches = find_batches_dir(data_dir) if data_dir.is_dir() else None
    if batches is not None:
        return [batches / f for f in BATCH_FILES]
    root = find_tree_root(data_dir)
    if root is not None:
        return tree_files(root)
    raise DataError(f"CIFAR-10: found no data at {data_dir}. " + HOW_TO_OBTAIN)


@register_dataset("cifar10", inputs=lambda data_dir: _inputs(data_dir))
def load_cifar10(data_dir: Path | None) -> DatasetArrays:
    """CIFAR-10, 50k train + 10k test, (3, 32, 32), from any layout described above."""
    inputs = _inputs(data_dir)
    batches = find_batches_dir(data_dir) if data_dir.is_dir() else None
    if batches is not None:
        x_train, y_train, x_test, y_test, classes = read_batches(batches)
    else:
        tree = read_image_folder(data_dir, channels=3, how_to_obtain=HOW_TO_OBTAIN)
        x_train, y_train, x_test, y_test, classes = (
            tree.x_train, tree.y_train, tree.x_test, tree.y_test, tree.classes)
    if classes != CLASSES:
        raise DataError(f"CIFAR-10 at {data_dir}: classes {list(classes)} are not the ten "
                        f"CIFAR-10 classes {list(CLASSES)} ({len(inputs)} input files)")
    return DatasetArrays("cifar10", x_train, y_train, x_test, y_test, classes)
