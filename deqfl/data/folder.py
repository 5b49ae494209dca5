"""A `DatasetArrays` stored as a folder: `{x_train,y_train,x_test,y_test}.npy` + `meta.json`.

`meta.json` holds the name, class names and channel mean/std (and whatever `extra` the
writer adds). `open_arrays(folder, mmap=True)` maps the arrays read-only instead of reading
them, so any number of processes share one copy of the data through the page cache; the
returned object remembers its `folder`. The data cache (`deqfl.data.cache`) uses this
layout for its entries, and the embedded engine's worker processes open it mapped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from deqfl.data.arrays import DatasetArrays

ARRAY_NAMES = ("x_train", "y_train", "x_test", "y_test")


def save_arrays(data: DatasetArrays, folder: Path, extra: dict[str, Any] | None = None) -> None:
    """Write `data` into the existing directory `folder` (not atomically: see the cache)."""
    for key in ARRAY_NAMES:
        np.save(folder / f"{key}.npy", getattr(data, key), allow_pickle=False)
    meta = {"name": data.name, "classes": list(data.classes), "mean": list(data.mean),
            "std": list(data.std), **(extra or {})}
    (folder / "meta.json").write_text(json.dumps(meta, indent=1))


def open_arrays(folder: Path, mmap: bool = False) -> DatasetArrays:
    """The arrays stored in `folder`; `mmap=True` maps them read-only (np.load mmap_mode="r").
    Raises whatever reading raises (OSError, ValueError, KeyError, DataError)."""
    folder = Path(folder)
    meta = json.loads((folder / "meta.json").read_text())
    mode = "r" if mmap else None
    arrays = {k: np.load(folder / f"{k}.npy", mmap_mode=mode, allow_pickle=False) for k in ARRAY_NAMES}
    return DatasetArrays(name=meta["name"], classes=tuple(meta["classes"]), mean=tuple(meta["mean"]),
                         std=tuple(meta["std"]), folder=folder, **arrays)
