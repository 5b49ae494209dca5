"""On-disk cache of decoded data sets: one directory of .npy files per source version.

Layout: `<cache root>/<name>-<key>/{x_train,y_train,x_test,y_test}.npy` plus `meta.json`
(class names, channel mean/std, what the entry was built from). The key hashes the data
set name, its options, and the absolute path, size and mtime of every input file, so
different or changed source files never share an entry. An entry is written in a
temporary directory and renamed into place, so readers see a whole entry or none.

The cache root is, in order: the `cache_dir` argument, `$DEQFL_CACHE_DIR`, `~/.cache/deqfl`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from deqfl.data.arrays import DatasetArrays
from deqfl.data.folder import open_arrays, save_arrays

#: Bump when decoding changes, so that old entries are no longer used.
CACHE_FORMAT = 1


class CorruptCacheError(Exception):
    """A cache entry exists but cannot be read; `load_dataset` rebuilds it."""


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The cache root directory (not created)."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("DEQFL_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "deqfl"


def cache_key(name: str, options: dict[str, object], inputs: list[Path]) -> str:
    """A hex key identifying a data set built from `inputs` with `options`."""
    files = []
    for path in inputs:
        stat = path.stat()
        files.append([str(path.resolve()), stat.st_size, stat.st_mtime_ns])
    blob = json.dumps(
        {"format": CACHE_FORMAT, "name": name, "files": files,
         "options": {k: repr(v) for k, v in sorted(options.items())}},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def entry_dir(root: Path, name: str, key: str) -> Path:
    return root / f"{name}-{key}"


def read_entry(entry: Path, mmap: bool = False) -> DatasetArrays | None:
    """The cached arrays (read into memory, or mapped read-only with `mmap`; their
    `folder` is the entry), None when there is no entry, CorruptCacheError if unreadable."""
    if not entry.is_dir():
        return None
    try:
        return open_arrays(entry, mmap=mmap)
    except Exception as exc:  # any failure to read means the entry is unusable
        raise CorruptCacheError(f"{entry}: {type(exc).__name__}: {exc}") from exc


def discard_entry(entry: Path) -> None:
    """Remove an (unreadable) entry: renamed away first, so no reader sees it half-deleted."""
    try:
        doomed = Path(tempfile.mkdtemp(prefix=f".{entry.name}.discard.", dir=entry.parent))
    except OSError:
        return  # a read-only cache: the entry stays, and is rebuilt in memory on each load
    try:
        os.replace(entry, doomed / entry.name)
    except OSError:
        pass  # already gone: another process discarded or replaced it
    shutil.rmtree(doomed, ignore_errors=True)


def write_entry(entry: Path, data: DatasetArrays, sources: list[Path]) -> None:
    """Write `data` to `entry` atomically (temp dir + rename); a concurrent writer wins."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=entry.parent))
    try:
        save_arrays(data, tmp, {"sources": [str(p) for p in sources]})
        try:
            os.replace(tmp, entry)
        except OSError:
            if not entry.is_dir():  # not "another process wrote it first"
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
