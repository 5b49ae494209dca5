"""The data-set registry: `register_dataset`, `list_datasets` and `load_dataset`.

A source is a function `loader(data_dir: Path | None, **options) -> DatasetArrays`,
registered under a name. Users add their own without editing deqfl:

    @register_dataset("my-data", inputs=lambda data_dir, **options: [data_dir / "d.npz"])
    def load_my_data(data_dir, *, scale: int = 1) -> DatasetArrays: ...

`inputs(data_dir, **options) -> list[Path]` (optional) lists the files the loader reads,
raising `DataError` when they are missing; given it, `load_dataset` caches the decoded
arrays (see `deqfl.data.cache`) and later loads read the cache. Without it, the loader
runs every time (right for generated or already-fast sources).
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from deqfl.data import cache
from deqfl.data.arrays import DatasetArrays
from deqfl.errors import DataError

Loader = Callable[..., DatasetArrays]
InputsFn = Callable[..., list[Path]]


@dataclass(frozen=True)
class DatasetSource:
    """A registered source: its loader, its input-file lister and its keyword options."""

    name: str
    loader: Loader
    inputs: InputsFn | None
    options: tuple[str, ...]


_REGISTRY: dict[str, DatasetSource] = {}


def register_dataset(name: str, *, inputs: InputsFn | None = None) -> Callable[[Loader], Loader]:
    """Decorator registering `loader` under `name` (replacing any earlier source)."""

    def decorate(loader: Loader) -> Loader:
        params = inspect.signature(loader).parameters.values()
        options = tuple(p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY)
        _REGISTRY[name] = DatasetSource(name, loader, inputs, options)
        return loader

    return decorate


def list_datasets() -> list[str]:
    """Names of all registered data sets, sorted."""
    return sorted(_REGISTRY)


def get_source(name: str) -> DatasetSource:
    """The registered source called `name`, or DataError listing the known names."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise DataError(
            f"unknown data set {name!r}; known: {', '.join(list_datasets())} "
            "(add your own with deqfl.data.register_dataset)"
        ) from None


def load_dataset(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    mmap: bool = False,
    **options: object,
) -> DatasetArrays:
    """Load data set `name` from `data_dir` (None: the source's default), via the cache.
    `mmap=True`: a cached entry is mapped read-only instead of read (a process then reads
    only the rows it indexes, and processes share one copy through the page cache).

    Raises DataError for an unknown name or option, and for missing or corrupt source
    files (naming the files expected and how to obtain them). A cache entry that cannot
    be read is rebuilt from the source, with a warning. A cache that cannot be written
    (e.g. a read-only home) only warns.
    """
    source = get_source(name)
    unknown = sorted(set(options) - set(source.options))
    if unknown:
        valid = ", ".join(source.options) or "none"
        raise DataError(f"data set {name!r} has no option {', '.join(unknown)}; valid options: {valid}")
    path = Path(data_dir).expanduser() if data_dir is not None else None
    if source.inputs is None:
        return source.loader(path, **options)

    inputs = source.inputs(path, **options)
    entry = cache.entry_dir(cache.cache_root(cache_dir), name, cache.cache_key(name, options, inputs))
    try:
        cached = cache.read_entry(entry, mmap=mmap)
    except cache.CorruptCacheError as exc:
        warnings.warn(f"ignoring unreadable cache entry, rebuilding it from the source: {exc}",
                      stacklevel=2)
        cache.discard_entry(entry)
        cached = None
    if cached is not None:
        return cached
    data = source.loader(path, **options)
    try:
        cache.write_entry(entry, data, inputs)
    except OSError as exc:
        warnings.warn(f"could not write the data cache at {entry} ({exc}); "
                      "set DEQFL_CACHE_DIR or pass cache_dir to a writable directory",
                      stacklevel=2)
        return data
    return dataclasses.replace(data, folder=entry)
