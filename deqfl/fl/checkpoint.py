"""Atomic, verified round checkpoints: `DIR/checkpoints/round-NNNNN/`.

A round-r checkpoint holds everything the run's future depends on as of round r:

    model.safetensors     the global model's federated state
    fusion.safetensors    the fusion rule's state (`Fusion.state_dict()`)
    client_state/         the client-state store (`ClientStateStore.snapshot`: hard links)
    state.json            round, extra (e.g. wall_seconds), the config's hash, the
                          `tensor_digest` of the model, of the rule's state and of every
                          client's state, and `checksum`: sha256 of all of the above

It is written into a temporary folder (every file fsynced), then renamed into place (an
atomic rename on POSIX), so a crash leaves either the whole checkpoint or none. The last
`keep` checkpoints are kept. Nothing is unpickled: tensors are safetensors, metadata JSON.

Loading (`load_latest_checkpoint`) tries the newest checkpoint first and uses the first
one that passes every check: it parses; `checksum` matches; its config hash is the run's;
every digest matches the tensors read back; the model has exactly the reference's keys,
shapes and dtypes; every floating-point tensor (model, rule, client states) is finite.
A checkpoint that fails is skipped with a log line naming the failure. No checkpoint at
all gives None (the run starts at round 1); checkpoints that all fail raise
`CheckpointError`, which lists every failure (the run directory's owner decides: delete
the checkpoints to start again). Checkpoints written before checksums existed (no
`format` in state.json, no rule or client state) are accepted after the model checks.

Randomness needs no saved state: every random choice is drawn from generators seeded by
(seed, round, client), so the saved state and the round number determine what follows.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from deqfl.errors import DeqflError
from deqfl.fl.client_state import (
    ClientStateError,
    ClientStateSnapshot,
    ClientStateStore,
    fsync_dir,
    tensor_digest,
    verify_snapshot,
)

log = logging.getLogger(__name__)

FORMAT = 2
MODEL_FILE = "model.safetensors"
FUSION_FILE = "fusion.safetensors"
CLIENT_STATE_DIR = "client_state"
STATE_FILE = "state.json"


class CheckpointError(DeqflError):
    """Checkpoints exist but none of them can be used."""


@dataclass(frozen=True)
class Checkpoint:
    round: int
    state: dict[str, torch.Tensor]
    """The global model's federated state (CPU tensors)."""
    extra: dict[str, Any]
    path: Path
    fusion_state: dict[str, torch.Tensor] = field(default_factory=dict)
    """`Fusion.state_dict()` as of the round."""
    client_state: ClientStateSnapshot | None = None
    """The client-state store as of the round, for `ClientStateStore.restore` (None: a
    checkpoint written before client state existed, i.e. an empty store)."""


def json_digest(value: Any) -> str:
    """sha256 of `value` as canonical JSON (sorted keys, no spaces). A run's config hash is
    this digest of its config's settings (the runner says which)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def save_checkpoint(
    root: Path,
    round_number: int,
    state: Mapping[str, torch.Tensor],
    extra: Mapping[str, Any],
    keep: int = 2,
    *,
    fusion_state: Mapping[str, torch.Tensor] | None = None,
    client_state: ClientStateStore | None = None,
    config_hash: str = "",
) -> Path:
    """Write the round-`round_number` checkpoint under `root/checkpoints` (see the module
    docstring); keep the newest `keep`. `extra` must be JSON."""
    folder = root / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"round-{round_number:05d}"
    tmp = folder / f".tmp-round-{round_number:05d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    model = _cpu(state)
    fusion = _cpu(fusion_state or {})
    _write_synced(tmp / MODEL_FILE, save(model))
    _write_synced(tmp / FUSION_FILE, save(fusion))
    clients = client_state.snapshot(tmp / CLIENT_STATE_DIR) if client_state else None
    record = {
        "format": FORMAT,
        "round": round_number,
        "extra": dict(extra),
        "config_hash": config_hash,
        "digests": {
            "model": tensor_digest(model),
            "fusion": tensor_digest(fusion),
            "client_state": {str(k): v for k, v in (clients.digests if clients else {}).items()},
        },
    }
    record["checksum"] = json_digest(record)
    _write_synced(tmp / STATE_FILE, json.dumps(record).encode())
    fsync_dir(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    fsync_dir(folder)
    for old in sorted(folder.glob("round-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint_round(root: Path) -> int | None:
    """The round of the newest checkpoint folder under `root` (not verified), or None."""
    rounds = [int(p.name.removeprefix("round-")) for p in (root / "checkpoints").glob("round-*")]
    return max(rounds, default=None)


def has_checkpoints(root: Path) -> bool:
    return latest_checkpoint_round(root) is not None


def load_latest_checkpoint(
    root: Path,
    *,
    reference: Mapping[str, torch.Tensor] | None = None,
    config_hash: str | None = None,
) -> Checkpoint | None:
    """The newest checkpoint that passes every check (module docstring); None if there is
    none. `reference`: a model state with the expected keys, shapes and dtypes;
    `config_hash`: the run's. Raises `CheckpointError` if checkpoints exist but all fail."""
    failures = []
    for path in sorted((root / "checkpoints").glob("round-*"), reverse=True):
        try:
            return _load(path, reference, config_hash)
        except (_Invalid, ClientStateError, SafetensorError, OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("checkpoint %s is unreadable or invalid (%s); trying the previous one", path, exc)
            failures.append(f"{path.name}: {exc}")
    if failures:
        raise CheckpointError(
            f"no usable checkpoint in {root / 'checkpoints'}: " + "; ".join(failures)
            + f". Delete {root / 'checkpoints'} to run again from round 1."
        )
    return None


class _Invalid(Exception):
    """A checkpoint failed one check (the message says which)."""


def _load(path: Path, reference: Mapping[str, torch.Tensor] | None, run_hash: str | None) -> Checkpoint:
    record = json.loads((path / STATE_FILE).read_text())
    if not isinstance(record, dict):
        raise _Invalid(f"{STATE_FILE} is not a JSON object")
    if "format" not in record:  # written before checksums: the model alone, unverifiable
        state = load_file(str(path / MODEL_FILE))
        _check_model(state, reference)
        log.info("checkpoint %s predates checksums: checked its model's keys, shapes, dtypes and values", path)
        extra = {k: v for k, v in record.items() if k != "round"}
        return Checkpoint(int(record["round"]), state, extra, path)
    if record["format"] != FORMAT:
        raise _Invalid(f"unknown format {record['format']!r}")
    if record.get("checksum") != json_digest({k: v for k, v in record.items() if k != "checksum"}):
        raise _Invalid(f"{STATE_FILE} does not match its checksum")
    if run_hash is not None and record["config_hash"] != run_hash:
        raise _Invalid("it was written under another config (config hash differs)")
    digests = record["digests"]
    state = _read_tensors(path / MODEL_FILE, digests["model"], "model")
    _check_model(state, reference)
    fusion = _read_tensors(path / FUSION_FILE, digests["fusion"], "fusion rule state")
    clients = ClientStateSnapshot(
        path / CLIENT_STATE_DIR, {int(k): v for k, v in digests["client_state"].items()}
    )
    verify_snapshot(clients)
    return Checkpoint(int(record["round"]), state, dict(record["extra"]), path, fusion, clients)


def _read_tensors(file: Path, digest: str, what: str) -> dict[str, torch.Tensor]:
    try:
        tensors = load_file(str(file))
    except (SafetensorError, OSError) as exc:
        raise _Invalid(f"{what} unreadable: {exc}") from None
    if tensor_digest(tensors) != digest:
        raise _Invalid(f"{what} does not match its digest")
    bad = _non_finite(tensors)
    if bad is not None:
        raise _Invalid(f"{what} has non-finite values in {bad!r}")
    return tensors


def _check_model(state: Mapping[str, torch.Tensor], reference: Mapping[str, torch.Tensor] | None) -> None:
    """Same keys, shapes and dtypes as `reference` (when given), and finite values."""
    if reference is not None:
        if set(state) != set(reference):
            missing, extra = sorted(set(reference) - set(state)), sorted(set(state) - set(reference))
            raise _Invalid(f"model keys differ: missing {missing[:5]}, unexpected {extra[:5]}")
        for key, want in reference.items():
            got = state[key]
            if got.dtype != want.dtype or got.shape != want.shape:
                raise _Invalid(
                    f"model tensor {key!r} is {got.dtype} {tuple(got.shape)}, "
                    f"expected {want.dtype} {tuple(want.shape)}"
                )
    bad = _non_finite(state)
    if bad is not None:
        raise _Invalid(f"model has non-finite values in {bad!r}")


def _non_finite(tensors: Mapping[str, torch.Tensor]) -> str | None:
    return next((k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)


def _cpu(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in tensors.items()}


def _write_synced(path: Path, blob: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(blob)
        fh.flush()
        os.fsync(fh.fileno())

