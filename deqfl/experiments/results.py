"""Results files of a run directory, written atomically (temp file, fsync, rename).

- `config.toml`: the resolved config;
- `metrics.jsonl`: one JSON object per round (appended; rewritten atomically on resume so
  that it ends at the checkpoint's round);
- `summary.json`: run totals and traceability (versions, commit);
- `model.safetensors` + `model.json`: the final global model and how to rebuild it.
"""

from __future__ import annotations

import functools
import json
import math
import os
import subprocess
from pathlib import Path
from typing import Any

import torch

import deqfl


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def json_safe(value: Any) -> Any:
    """`value` with non-finite floats replaced by strings ("inf", "nan"), so files stay
    strict JSON (client-reported numbers may be anything)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a") as fh:
        fh.write(json.dumps(json_safe(record), allow_nan=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Records of a JSONL file; a torn last line (crash mid-write) is ignored."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return records


def rewrite_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in records))


def versions() -> dict[str, str]:
    found = {"deqfl": deqfl.__version__, "torch": torch.__version__}
    try:
        import flwr  # noqa: PLC0415 - optional

        found["flwr"] = flwr.__version__
    except ImportError:
        pass
    return found


@functools.cache
def git_commit() -> str | None:
    """The commit of deqfl's source tree, when it is a git checkout, as this process first
    asked (`run_experiment` asks at its start): a long-lived process, such as a
    `deqfl reproduce` worker, keeps naming the code it imported, not a HEAD moved since."""
    source = Path(deqfl.__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True, text=True, timeout=5,
    ).stdout.strip()
    return commit + ("-dirty" if dirty else "")
