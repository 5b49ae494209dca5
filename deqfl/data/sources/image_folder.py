"""Any image-classification data set stored as an image-folder tree (or a tar of one).

`load_dataset("image-folder", data_dir=PATH, grayscale=False)`: PATH holds
`train/<class>/<image>` and `test/<class>/<image>` (see `deqfl.data.imagefolder`);
class names are the sorted folder names. All images must share one size.
"""

from __future__ import annotations

from pathlib import Path

from deqfl.data.arrays import DatasetArrays
from deqfl.data.imagefolder import LAYOUT, find_tree_root, is_archive, read_image_folder, tree_files
from deqfl.data.registry import register_dataset
from deqfl.errors import DataError

HOW_TO_OBTAIN = f"Pass --data-dir pointing to a folder (or .tar.gz) laid out as {LAYOUT}."


def _inputs(data_dir: Path | None, **_options: object) -> list[Path]:
    if data_dir is None:
        raise DataError("the image-folder data set needs a data directory. " + HOW_TO_OBTAIN)
    if is_archive(data_dir):
        return [data_dir]
    root = find_tree_root(data_dir)
    if root is None:
        raise DataError(f"{data_dir} is not an image-folder tree. " + HOW_TO_OBTAIN)
    return tree_files(root)


@register_dataset("image-folder", inputs=_inputs)
def load_image_folder(data_dir: Path | None, *, grayscale: bool = False) -> DatasetArrays:
    """Images as (1, H, W) if grayscale else (3, H, W); name is the folder/archive name."""
    _inputs(data_dir)
    tree = read_image_folder(data_dir, channels=1 if grayscale else 3, how_to_obtain=HOW_TO_OBTAIN)
    return DatasetArrays(f"image-folder:{data_dir.name}", tree.x_train, tree.y_train,
                         tree.x_test, tree.y_test, tree.classes)
