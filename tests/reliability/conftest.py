"""Small real runs for the reliability tests: scikit-learn digits, 4-5 clients, 2-4 rounds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deqfl.experiments.config import load_config
from deqfl.experiments.runner import run_experiment

SMALL = [
    "data.dataset=digits", "data.num_clients=5", "data.alpha=1.0", "data.partition=iid",
    "data.train_subset=1000", "experiment.rounds=2", "sampling.fraction=1.0",
    "sampling.min_clients=1", "train.batch_size=32", "train.residual_samples=64",
    "evaluation.anytime_every=0", "evaluation.anytime_budgets=[4, 16]",
]


def small_overrides(tmp: Path, extra=()) -> list[str]:
    return SMALL + list(extra) + [f"data.cache_dir={json.dumps(str(tmp / 'cache'))}"]


@pytest.fixture(scope="session")
def run_small(tmp_path_factory):
    """run_small(name, extra overrides, **run_experiment kwargs) -> (out_dir, summary)."""
    root = tmp_path_factory.mktemp("reliability")

    def run(name: str, extra=(), **kwargs):
        config = load_config(None, small_overrides(root, extra))
        out = root / name
        return out, run_experiment(config, out, **kwargs)

    run.root = root
    run.overrides = lambda extra=(): small_overrides(root, extra)
    return run
