"""`deqfl reproduce --parallel K`: K runs at once, sharing the cores through experiment.workers."""

import os
import tomllib

from deqfl.experiments.reproduce.runner import run_suite
from deqfl.experiments.reproduce.store import result_path
from deqfl.experiments.reproduce.suite import RunSpec

TINY = ("data.dataset=digits", "data.num_clients=4", "experiment.rounds=1", "data.eval_subset=0",
        "evaluation.anytime_every=0", "train.residual_samples=16", "model.name=cnn-small")


def test_parallel_runs_store_every_result_and_split_the_cores(tmp_path):
    specs = [RunSpec("T", f"m{seed}", "digits", seed, TINY) for seed in (0, 1)]
    results = run_suite(specs, tmp_path / "store", tmp_path / "out", {}, parallel=2)
    assert sorted(r["run_id"] for r in results) == sorted(s.run_id for s in specs)
    for spec in specs:
        assert result_path(tmp_path / "store", spec).exists()
        config = tomllib.loads((tmp_path / "out" / "runs" / spec.run_id / "config.toml").read_text())
        assert config["experiment"]["workers"] == max(1, len(os.sched_getaffinity(0)) // 2)
