"""Reader for the IDX format of MNIST and Fashion-MNIST (gzipped or plain files).

An IDX file is a big-endian header (two zero bytes, a type code, the number of
dimensions, then one uint32 per dimension) followed by the data. Only unsigned-byte
data (type code 0x08), the type of both data sets, is supported.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from deqfl.data.arrays import DatasetArrays
from deqfl.errors import DataError

#: The four files of an IDX data set, in the order they are read.
IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def find_idx_files(data_dir: Path, how_to_obtain: str) -> list[Path]:
    """The four IDX files in `data_dir` (each `<name>.gz` or plain `<name>`), in IDX_FILES order."""
    found, missing = [], []
    for stem in IDX_FILES:
        candidates = [data_dir / f"{stem}.gz", data_dir / stem]
        hit = next((p for p in candidates if p.is_file()), None)
        (found if hit else missing).append(hit or stem)
    if missing:
        raise DataError(
            f"{data_dir} lacks IDX file(s) {', '.join(map(str, missing))} (each gzipped "
            f"'.gz' or plain); expected {', '.join(f'{s}.gz' for s in IDX_FILES)}. {how_to_obtain}"
        )
    return found


def read_idx(path: Path) -> np.ndarray:
    """The uint8 array stored in IDX file `path`; DataError if it is not a valid one."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"cannot read {path}: {exc} (corrupt or truncated download?)") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path} is not an unsigned-byte IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated (incomplete IDX header)")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    size = int(np.prod(shape))
    if len(raw) - header != size:
        raise DataError(f"{path} holds {len(raw) - header} data bytes, its header says "
                        f"{size} (shape {shape}): corrupt or truncated file")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def load_idx_dataset(name: str, data_dir: Path, classes: tuple[str, ...], how_to_obtain: str) -> DatasetArrays:
    """A DatasetArrays from the four IDX files in `data_dir` (images become (N, 1, H, W))."""
    paths = find_idx_files(data_dir, how_to_obtain)
    x_train, y_train, x_test, y_test = (read_idx(p) for p in paths)
    for images, labels, split in ((x_train, y_train, "train"), (x_test, y_test, "t10k")):
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DataError(f"{data_dir}: {split} images {images.shape} and labels "
                            f"{labels.shape} do not match (mixed-up or corrupt files?)")
    return DatasetArrays(
        name=name,
        x_train=x_train[:, None].copy(), y_train=y_train.astype(np.int64),
        x_test=x_test[:, None].copy(), y_test=y_test.astype(np.int64),
        classes=classes,
    )
