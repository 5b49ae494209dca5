"""The registry (user-defined sources, unknown names/options) and the .npy cache."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from deqfl.data import DatasetArrays, list_datasets, load_dataset, register_dataset
from deqfl.data import registry
from deqfl.errors import DataError

CALLS: list[Path] = []


def _inputs(data_dir: Path | None, **_options: object) -> list[Path]:
    if data_dir is None or not (data_dir / "d.npz").is_file():
        raise DataError(f"npz-test: expected {data_dir}/d.npz")
    return [data_dir / "d.npz"]


@register_dataset("npz-test", inputs=_inputs)
def load_npz(data_dir: Path, *, scale: int = 1) -> DatasetArrays:
    """A user-style source: arrays from d.npz, optionally scaled."""
    CALLS.append(data_dir)
    z = np.load(data_dir / "d.npz")
    return DatasetArrays("npz-test", z["x"] * scale, z["y"], z["x"][:2], z["y"][:2], ("a", "b"))


@pytest.fixture
def npz_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "src"
    folder.mkdir()
    np.savez(folder / "d.npz", x=np.arange(64, dtype=np.uint8).reshape(4, 1, 4, 4), y=np.array([0, 1, 0, 1]))
    CALLS.clear()
    return folder


def test_builtin_and_user_sources_are_listed() -> None:
    assert {"mnist", "fashion-mnist", "cifar10", "digits", "synthetic", "npz-test"} <= set(list_datasets())


def test_unknown_name_and_option(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unknown data set 'nope'; known: .*mnist"):
        load_dataset("nope")
    with pytest.raises(DataError, match="has no option colour; valid options: num_train"):
        load_dataset("synthetic", colour="red")


def test_second_load_reads_the_cache(npz_dir: Path, tmp_path: Path) -> None:
    first = load_dataset("npz-test", data_dir=npz_dir, cache_dir=tmp_path / "c")
    second = load_dataset("npz-test", data_dir=npz_dir, cache_dir=tmp_path / "c")
    assert len(CALLS) == 1
    np.testing.assert_array_equal(first.x_train, second.x_train)
    assert second.mean == first.mean and second.classes == ("a", "b")
    entries = list((tmp_path / "c").iterdir())
    assert len(entries) == 1 and entries[0].name.startswith("npz-test-")
    assert sorted(p.name for p in entries[0].iterdir()) == [
        "meta.json", "x_test.npy", "x_train.npy", "y_test.npy", "y_train.npy"]


def test_options_and_changed_sources_get_new_entries(npz_dir: Path, tmp_path: Path) -> None:
    cache = tmp_path / "c"
    load_dataset("npz-test", data_dir=npz_dir, cache_dir=cache)
    assert load_dataset("npz-test", data_dir=npz_dir, cache_dir=cache, scale=2).x_train.max() == 126
    stat = (npz_dir / "d.npz").stat()
    os.utime(npz_dir / "d.npz", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    load_dataset("npz-test", data_dir=npz_dir, cache_dir=cache)
    assert len(CALLS) == 3 and len(list(cache.iterdir())) == 3


def test_default_cache_dir_from_environment(npz_dir: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("DEQFL_CACHE_DIR", str(tmp_path / "env-cache"))
    load_dataset("npz-test", data_dir=npz_dir)
    assert len(list((tmp_path / "env-cache").iterdir())) == 1


def test_corrupt_cache_entry_is_rebuilt_with_a_warning(npz_dir: Path, tmp_path: Path) -> None:
    first = load_dataset("npz-test", data_dir=npz_dir, cache_dir=tmp_path / "c")
    (entry,) = (tmp_path / "c").iterdir()
    (entry / "x_train.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.warns(UserWarning, match=rf"unreadable cache entry.*{entry.name}"):
        rebuilt = load_dataset("npz-test", data_dir=npz_dir, cache_dir=tmp_path / "c")
    np.testing.assert_array_equal(rebuilt.x_train, first.x_train)
    assert len(CALLS) == 2
    load_dataset("npz-test", data_dir=npz_dir, cache_dir=tmp_path / "c")  # the repaired entry
    assert len(CALLS) == 2
    assert [p.name for p in (tmp_path / "c").iterdir()] == [entry.name]  # nothing left over


def test_missing_source_is_reported_before_the_cache(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="expected .*d.npz"):
        load_dataset("npz-test", data_dir=tmp_path, cache_dir=tmp_path / "c")


def test_unwritable_cache_only_warns(npz_dir: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.warns(UserWarning, match="could not write the data cache"):
        d = load_dataset("npz-test", data_dir=npz_dir, cache_dir=blocker / "c")
    assert d.x_train.shape == (4, 1, 4, 4)


def test_real_source_cache_round_trip(shared_data: Path, tmp_path: Path, monkeypatch) -> None:
    first = load_dataset("fashion-mnist", data_dir=shared_data / "fashion-mnist", cache_dir=tmp_path)
    source = registry.get_source("fashion-mnist")
    monkeypatch.setitem(registry._REGISTRY, "fashion-mnist", source.__class__(
        source.name, lambda *a, **k: pytest.fail("decoded again"), source.inputs, source.options))
    cached = load_dataset("fashion-mnist", data_dir=shared_data / "fashion-mnist", cache_dir=tmp_path)
    np.testing.assert_array_equal(cached.x_test, first.x_test)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left
