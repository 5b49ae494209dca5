"""One JSON file per finished run: `<store>/<run_id>.json`, so that runs finished in many
sittings add up and the report can be rebuilt from the store alone.

A stored run keeps the run's spec, its summary, a compact per-round series and where it
came from (commit, date, machine). Writes are atomic (temp file, then rename).
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

from deqfl.experiments.reproduce.suite import RunSpec
from deqfl.experiments.results import atomic_write_text, json_safe

ROUND_FIELDS = ("round", "accuracy", "loss", "bytes_up", "bytes_down", "simulated_seconds",
                "global_residual", "tier_accuracy", "wall_seconds")
PERSONAL_FIELDS = ("personal_accuracy", "unseen_accuracy")  # kept only in rounds that have them (E5)


def result_path(store: Path, spec: RunSpec) -> Path:
    return store / f"{spec.run_id}.json"


def compact_rounds(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per-round fields the report needs, plus the fusion weight each tier received; for a
    DEQ, each tier's forward solves: `tier_solves[tier]` = {"caps": each fused client's
    forward cap, "iterations": its mean forward iterations per training step}; under
    personalisation, the round's personalised and unseen accuracies."""
    rows = []
    for r in records:
        row = {k: r.get(k) for k in ROUND_FIELDS}
        tier_weight: dict[str, float] = {}
        tier_solves: dict[str, dict[str, Any]] = {}
        for client in r.get("clients", []):
            tier_weight[client["tier"]] = tier_weight.get(client["tier"], 0.0) + client["weight"]
            if client.get("forward_cap") and client.get("iterations") is not None:
                solves = tier_solves.setdefault(client["tier"], {"caps": [], "iterations": []})
                solves["caps"].append(client["forward_cap"])
                solves["iterations"].append(client["iterations"])
        row["tier_weight"] = tier_weight
        if tier_solves:
            row["tier_solves"] = tier_solves
        row["client_accuracy"] = r.get("client_accuracy")
        row.update({k: r[k] for k in PERSONAL_FIELDS if k in r})
        rows.append(row)
    return rows


def save_result(store: Path, spec: RunSpec, summary: dict[str, Any], records: list[dict[str, Any]]) -> Path:
    store.mkdir(parents=True, exist_ok=True)
    payload = {
        "run_id": spec.run_id,
        "experiment": spec.experiment,
        "method": spec.method,
        "group": spec.group,
        "dataset": spec.dataset,
        "seed": spec.seed,
        "overrides": list(spec.overrides),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{platform.machine()} {platform.processor() or ''} {_cores()} cores".strip(),
        "summary": summary,
        "rounds": compact_rounds(records),
    }
    path = result_path(store, spec)
    atomic_write_text(path, json.dumps(json_safe(payload), indent=1, allow_nan=False))
    return path


def find_twin(stored: list[dict[str, Any]], spec: RunSpec) -> dict[str, Any] | None:
    """A stored run of the same configuration as `spec` under another label (another
    experiment's table runs the same data set, seed and overrides): None if there is none.
    Runs are deterministic in their configuration, so its result is `spec`'s result."""
    wanted = sorted(spec.overrides)
    return next((r for r in stored if r["run_id"] != spec.run_id and r["dataset"] == spec.dataset
                 and r["seed"] == spec.seed and sorted(r["overrides"]) == wanted), None)


def save_twin(store: Path, spec: RunSpec, twin: dict[str, Any]) -> Path:
    """Store `twin`'s result as `spec`'s (its date, machine, summary and rounds, under
    `spec`'s labels), naming the run it came from in `same_as`."""
    payload = {**twin, "run_id": spec.run_id, "experiment": spec.experiment, "method": spec.method,
               "group": spec.group, "overrides": list(spec.overrides), "same_as": twin.get("same_as", twin["run_id"])}
    path = result_path(store, spec)
    atomic_write_text(path, json.dumps(json_safe(payload), indent=1, allow_nan=False))
    return path


def load_results(store: Path) -> list[dict[str, Any]]:
    """Every stored run (files that do not parse are skipped with a note on stderr)."""
    results = []
    for path in sorted(store.glob("*.json")):
        try:
            results.append(json.loads(path.read_text()))
        except json.JSONDecodeError as exc:
            print(f"deqfl reproduce: skipping unreadable result {path}: {exc}")
    return results


def _cores() -> int:
    import os  # noqa: PLC0415

    return os.cpu_count() or 0
