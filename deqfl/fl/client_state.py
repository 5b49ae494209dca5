"""Per-client state kept on disk: `ClientStateStore(directory)`.

A client's state (for example SCAFFOLD's control variate) is a flat
`dict[str, torch.Tensor]` stored as `directory/client-<id>.safetensors`. The store holds
no tensors in memory, only its directory, so memory stays flat however many clients hold
state; `get` reads a client's file and `put` replaces it.

Contract:

- `put` is atomic: the tensors are written to a temporary file, fsynced and renamed over
  the client's file, so a reader (or a crash) sees the old state or the new one, never a
  mix. A file is never modified after it is renamed into place.
- every file carries the digest of its tensors (`tensor_digest`) in its safetensors
  metadata; `get` recomputes it and raises `ClientStateError` on a mismatch.
- `snapshot(destination)` hard-links every client's file into `destination` (a copy
  where the file system has no hard links) and returns the digests: O(clients) links, no
  tensor is read or copied. Because `put` replaces files instead of writing into them,
  a snapshot never changes after it is taken (copy-on-write); a client's state that did
  not change between two snapshots is one file on disk shared by both.
- `restore(snapshot)` replaces the store's contents with the snapshot's (linked, not
  copied); `restore(None)` empties the store. `verify_snapshot` checks a snapshot's
  files against its digests.

Files are named by client id only, so any process given the directory (a worker, say)
reads and writes the same state.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from deqfl.errors import DeqflError

DIGEST_KEY = "sha256"
_PREFIX, _SUFFIX = "client-", ".safetensors"


class ClientStateError(DeqflError):
    """A stored client state is unreadable or does not match its digest."""


def tensor_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """sha256 over every entry in key order: key, dtype, shape, then the raw bytes.

    Equal digests mean bitwise-equal tensors with equal names, dtypes and shapes."""
    h = hashlib.sha256()
    for key in sorted(tensors):
        value = tensors[key].detach().cpu().contiguous()
        h.update(f"{key}\0{value.dtype}\0{tuple(value.shape)}\0".encode())
        h.update(memoryview(value.reshape(-1).view(torch.uint8).numpy()))
    return h.hexdigest()


@dataclass(frozen=True)
class ClientStateSnapshot:
    """The client-state store as of one moment: one file per client in `directory`."""

    directory: Path
    digests: dict[int, str]
    """Client id -> `tensor_digest` of its state."""


class ClientStateStore:
    """Per-client `dict[str, torch.Tensor]` on disk (see the module docstring)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def path(self, client_id: int) -> Path:
        return self.directory / f"{_PREFIX}{_check_id(client_id)}{_SUFFIX}"

    def get(self, client_id: int) -> dict[str, torch.Tensor] | None:
        """The client's state, or None if it holds none."""
        path = self.path(client_id)
        if not path.exists():
            return None
        tensors, _ = read_verified(path)
        return tensors

    def put(self, client_id: int, tensors: Mapping[str, torch.Tensor]) -> None:
        """Replace the client's state by `tensors` (copied to the CPU), atomically."""
        if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in tensors.items()):
            raise TypeError(f"client {client_id}: a state is a dict of str -> torch.Tensor")
        cpu = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}
        blob = save(cpu, metadata={DIGEST_KEY: tensor_digest(cpu)})
        final = self.path(client_id)
        tmp = self.directory / f".tmp-{final.name}-{os.getpid()}-{uuid.uuid4().hex}"
        try:
            with open(tmp, "wb") as fh:
                fh.write(blob)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)

    def clients(self) -> list[int]:
        """Ids of the clients holding state, ascending."""
        ids = (_client_id(entry.name) for entry in os.scandir(self.directory))
        return sorted(i for i in ids if i is not None)

    def snapshot(self, destination: Path) -> ClientStateSnapshot:
        """Hard-link (or copy) every client's file into `destination` (created; must not
        hold client files yet) and fsync it; the digests come from the files' metadata."""
        destination.mkdir(parents=True, exist_ok=True)
        digests = {}
        for client_id in self.clients():
            source = self.path(client_id)
            _link_or_copy(source, destination / source.name)
            digests[client_id] = _stored_digest(destination / source.name)
        fsync_dir(destination)
        return ClientStateSnapshot(destination, digests)

    def restore(self, snapshot: ClientStateSnapshot | None) -> None:
        """Make the store hold exactly `snapshot`'s states (none for None). The snapshot
        is trusted: check one that may be damaged with `verify_snapshot` first (loading a
        checkpoint does)."""
        self.clear()
        for client_id in sorted(snapshot.digests if snapshot else ()):
            _link_or_copy(snapshot.directory / self.path(client_id).name, self.path(client_id))
        fsync_dir(self.directory)

    def clear(self) -> None:
        """Remove every client's state (and temporary files a crash left behind)."""
        for entry in os.scandir(self.directory):
            if _client_id(entry.name) is not None or entry.name.startswith(".tmp-"):
                os.unlink(entry.path)


def verify_snapshot(snapshot: ClientStateSnapshot) -> None:
    """Raise `ClientStateError` unless the snapshot holds exactly its clients' files, each
    matching its digest, with finite values."""
    present = {
        i for i in (_client_id(e.name) for e in os.scandir(snapshot.directory)) if i is not None
    } if snapshot.directory.is_dir() else set()
    if present != set(snapshot.digests):
        missing, extra = sorted(set(snapshot.digests) - present), sorted(present - set(snapshot.digests))
        raise ClientStateError(f"client state files missing {missing[:5]} or unlisted {extra[:5]}")
    for client_id, digest in snapshot.digests.items():
        tensors, stored = read_verified(snapshot.directory / f"{_PREFIX}{client_id}{_SUFFIX}")
        if stored != digest:
            raise ClientStateError(f"client {client_id}'s state has digest {stored[:12]}, expected {digest[:12]}")
        bad = next((k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
        if bad is not None:
            raise ClientStateError(f"client {client_id}'s state has non-finite values in {bad!r}")


def read_verified(path: Path) -> tuple[dict[str, torch.Tensor], str]:
    """A client file's tensors and digest, after checking the digest against the tensors."""
    try:
        blob = path.read_bytes()
        tensors = load(blob)
        stored = _metadata(blob).get(DIGEST_KEY)
    except (OSError, SafetensorError, ValueError) as exc:
        raise ClientStateError(f"{path} is unreadable: {exc}") from None
    if stored != tensor_digest(tensors):
        raise ClientStateError(f"{path} does not match its digest: the file is damaged")
    return tensors, stored


def _metadata(blob: bytes) -> dict[str, str]:
    size = int.from_bytes(blob[:8], "little")
    return json.loads(blob[8 : 8 + size]).get("__metadata__", {}) or {}


def _stored_digest(path: Path) -> str:
    """The digest in a file's header, without reading its tensors."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
            digest = _metadata(head + fh.read(int.from_bytes(head, "little"))).get(DIGEST_KEY)
    except (OSError, ValueError, AttributeError) as exc:
        raise ClientStateError(f"{path} is unreadable: {exc}") from None
    if not isinstance(digest, str):
        raise ClientStateError(f"{path} carries no digest: it was not written by ClientStateStore")
    return digest


def _check_id(client_id: int) -> int:
    if isinstance(client_id, bool) or not isinstance(client_id, int) or client_id < 0:
        raise TypeError(f"a client id is a non-negative int, got {client_id!r}")
    return client_id


def _client_id(name: str) -> int | None:
    digits = name[len(_PREFIX) : -len(_SUFFIX)]
    if name.startswith(_PREFIX) and name.endswith(_SUFFIX) and digits.isdigit():
        return int(digits)
    return None


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EMLINK):
            raise
        shutil.copyfile(source, target)
        with open(target, "rb+") as fh:
            os.fsync(fh.fileno())


def fsync_dir(path: Path) -> None:
    """Make a folder's entries (renames, new files) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
