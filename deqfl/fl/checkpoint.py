"""Atomic round checkpoints: `DIR/checkpoints/round-NNNNN/{model.safetensors,state.json}`.

A checkpoint is written into a temporary folder, fsynced, then renamed into place (an
atomic rename on POSIX), so a crash leaves either the whole checkpoint or none. The last
`keep` checkpoints are kept. Loading reads tensors with safetensors and metadata with
JSON: nothing is unpickled. A checkpoint that fails to load (truncated, corrupted) is
reported and the previous one is used.

Randomness needs no saved state: every random choice is drawn from generators seeded by
(seed, round, client), so the global model and the round number determine what follows.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

log = logging.getLogger(__name__)

MODEL_FILE = "model.safetensors"
STATE_FILE = "state.json"


@dataclass(frozen=True)
class Checkpoint:
    round: int
    state: dict[str, torch.Tensor]
    extra: dict[str, Any]
    path: Path


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(
    root: Path, round_number: int, state: dict[str, torch.Tensor], extra: dict[str, Any], keep: int = 2
) -> Path:
    folder = root / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"round-{round_number:05d}"
    tmp = folder / f".tmp-round-{round_number:05d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp / MODEL_FILE))
    with open(tmp / STATE_FILE, "w") as fh:
        json.dump({"round": round_number, **extra}, fh)
        fh.flush()
        os.fsync(fh.fileno())
    _fsync_dir(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(folder)
    for old in sorted(folder.glob("round-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint_round(root: Path) -> int | None:
    """The round of the newest checkpoint folder under `root` (not verified), or None."""
    rounds = [int(p.name.removeprefix("round-")) for p in (root / "checkpoints").glob("round-*")]
    return max(rounds, default=None)


def load_latest_checkpoint(root: Path) -> Checkpoint | None:
    """The newest checkpoint that loads; older ones are tried when a newer one is corrupt."""
    folder = root / "checkpoints"
    for path in sorted(folder.glob("round-*"), reverse=True):
        try:
            extra = json.loads((path / STATE_FILE).read_text())
            state = load_file(str(path / MODEL_FILE))
            return Checkpoint(round=int(extra.pop("round")), state=state, extra=extra, path=path)
        except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint is skipped
            log.warning("checkpoint %s is unreadable (%s); trying the previous one", path, exc)
    return None
