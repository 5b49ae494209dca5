"""What a stored run's model costs per training sample: multiply-accumulates of one
training step (`deqfl.models.macs`), for a DEQ at the run's measured mean forward
iterations per training step, or at its training cap when the run recorded none (runs
stored before per-client solves were kept: an upper bound); under fixed-point correction
training, plus `correction_point_macs` for each correction step the training cap (the
config's largest tier cap: exact for a one-tier fleet, an upper bound otherwise) allows
(`deqfl.deq.accounting.correction_steps`).
"""

from __future__ import annotations

import functools
import json
from typing import Any

from deqfl.experiments.config import load_config
from deqfl.models import build_model, find_deq
from deqfl.deq.accounting import correction_steps
from deqfl.models.macs import correction_point_macs, macs_at_iterations

INPUT_SHAPES = {"mnist": (1, 28, 28), "fashion-mnist": (1, 28, 28), "cifar10": (3, 32, 32)}
"""The input shape of each data set of the evidence suite."""


def training_iterations(rounds: list[dict[str, Any]]) -> float | None:
    """Mean forward iterations per training step over every fused client of `rounds`
    (all tiers, from the store's `tier_solves`); None when no solve was recorded."""
    values = [it for row in rounds for solves in (row.get("tier_solves") or {}).values() for it in solves["iterations"]]
    return sum(values) / len(values) if values else None


def training_cap(rounds: list[dict[str, Any]]) -> float | None:
    """The mean forward cap of every fused client of `rounds`; None without solves."""
    caps = [c for row in rounds for solves in (row.get("tier_solves") or {}).values() for c in solves["caps"]]
    return sum(caps) / len(caps) if caps else None


@functools.lru_cache(maxsize=64)
def _macs(name: str, options_json: str, shape: tuple[int, int, int], iterations: float | None) -> tuple[float, bool]:
    model = build_model(name, shape, **json.loads(options_json))
    is_deq = find_deq(model) is not None
    return macs_at_iterations(model, shape, iterations if is_deq else None), is_deq


def run_macs(run: dict[str, Any]) -> tuple[float, str]:
    """(MACs per training sample, how it was counted: "explicit", "measured" or "at cap C")
    of a stored run's model (module docstring)."""
    config = load_config(None, list(run["overrides"]))
    shape = INPUT_SHAPES[run["dataset"]]
    options = json.dumps(dict(config.model.options), sort_keys=True, default=list)
    iterations = training_iterations(run["rounds"])
    how = "measured"
    if iterations is None:
        iterations = float(max(t.forward_cap for t in config.fleet.resolved_tiers()))
        how = f"at cap {iterations:g}"
    macs, is_deq = _macs(config.model.name, options, shape, iterations)
    if is_deq and config.train.fixed_point_correction > 0:
        cap = max(t.forward_cap for t in config.fleet.resolved_tiers())
        points = len(correction_steps(cap, config.train.correction_points))
        macs += points * _point_macs(config.model.name, options, shape)
    return macs, how if is_deq else "explicit"


@functools.lru_cache(maxsize=16)
def _point_macs(name: str, options_json: str, shape: tuple[int, int, int]) -> float:
    return correction_point_macs(build_model(name, shape, **json.loads(options_json)), shape)
