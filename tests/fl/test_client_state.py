"""The on-disk client-state store: round trips, many clients, snapshots, damage."""

import gc
import os

import pytest
import torch

from deqfl.fl.client_state import ClientStateError, ClientStateStore, tensor_digest, verify_snapshot


def _state(client: int, version: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(client * 1000 + version)
    return {"c": torch.randn(4, 3, generator=g), "steps": torch.tensor([client + version])}


def _equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)


def test_put_then_get_is_bitwise_for_every_dtype(tmp_path):
    store = ClientStateStore(tmp_path / "s")
    state = {
        "f32": torch.randn(5), "f64": torch.randn(2, 2, dtype=torch.float64),
        "bf16": torch.randn(3).to(torch.bfloat16), "i64": torch.arange(4), "mask": torch.tensor([True, False]),
        "scalar": torch.tensor(2.5), "empty": torch.empty(0),
    }
    state["same_storage"] = state["f32"]  # shared and strided tensors are stored too
    state["transposed"] = torch.randn(3, 4).t()
    assert store.get(3) is None
    store.put(3, state)
    assert _equal(store.get(3), state)
    store.put(3, _state(3, 1))  # replaced whole
    assert _equal(store.get(3), _state(3, 1))
    assert store.clients() == [3]
    assert not [p for p in (tmp_path / "s").iterdir() if p.name.startswith(".tmp-")]


def test_a_thousand_clients_are_held_on_disk_not_in_memory(tmp_path):
    store = ClientStateStore(tmp_path / "s")
    for client in range(1200):
        store.put(client, _state(client))
    # the store's only attribute is its directory: no tensor, no per-client entry in memory
    assert vars(store) == {"directory": tmp_path / "s"}
    assert not [o for o in gc.get_referents(store, *vars(store).values()) if isinstance(o, torch.Tensor)]
    assert store.clients() == list(range(1200))
    assert len(list((tmp_path / "s").glob("client-*.safetensors"))) == 1200
    for client in (0, 1, 599, 1199):
        assert _equal(store.get(client), _state(client))
    # another process (a worker) given only the directory sees the same states
    assert _equal(ClientStateStore(tmp_path / "s").get(777), _state(777))


def test_restore_gives_back_the_snapshot_bitwise_after_later_puts(tmp_path):
    store = ClientStateStore(tmp_path / "live")
    for client in range(50):
        store.put(client, _state(client))
    snapshot = store.snapshot(tmp_path / "snap")
    assert snapshot.digests == {c: tensor_digest(_state(c)) for c in range(50)}
    live, snap = store.path(7), snapshot.directory / store.path(7).name
    if os.stat(live).st_nlink == 2:  # a hard link, not a copy, where the file system has them
        assert os.stat(live).st_ino == os.stat(snap).st_ino
    for client in range(0, 50, 3):  # later rounds change some clients and add others
        store.put(client, _state(client, 1))
    store.put(99, _state(99))
    verify_snapshot(snapshot)  # copy-on-write: the snapshot did not change
    store.restore(snapshot)
    assert store.clients() == list(range(50))
    assert all(_equal(store.get(c), _state(c)) for c in range(50))
    store.restore(None)
    assert store.clients() == [] and store.get(0) is None


def test_damaged_files_are_detected(tmp_path):
    store = ClientStateStore(tmp_path / "live")
    for client in range(3):
        store.put(client, _state(client))
    snapshot = store.snapshot(tmp_path / "snap")
    store.put(1, _state(1, 1))  # the snapshot's file of client 1 is no longer the live one
    damaged = snapshot.directory / "client-1.safetensors"
    data = bytearray(damaged.read_bytes())
    data[-3] ^= 0x01  # one flipped bit in the tensor bytes
    damaged.write_bytes(bytes(data))
    with pytest.raises(ClientStateError, match="does not match its digest"):
        verify_snapshot(snapshot)
    assert _equal(store.get(1), _state(1, 1))  # the live state was not touched
    store.path(2).write_bytes(b"garbage")
    with pytest.raises(ClientStateError, match="unreadable"):
        store.get(2)
    damaged.unlink()
    with pytest.raises(ClientStateError, match=r"missing \[1\]"):
        verify_snapshot(snapshot)


def test_bad_client_ids_and_values_are_refused(tmp_path):
    store = ClientStateStore(tmp_path)
    for bad in (-1, "3", True, 1.0):
        with pytest.raises(TypeError, match="client id"):
            store.put(bad, {})
    with pytest.raises(TypeError, match="str -> torch.Tensor"):
        store.put(1, {"x": [1.0]})
