"""TensorBoard tracking: every round metric is written and reads back; resume does not
show a round twice; a missing package is a clear error."""

import json

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from deqfl.experiments.config import load_config
from deqfl.experiments.results import read_jsonl
from deqfl.experiments.runner import run_experiment
from deqfl.experiments.tracking import round_scalars

TINY = [
    "data.dataset=digits", "data.num_clients=4", "data.train_subset=300", "experiment.rounds=3",
    "sampling.fraction=1.0", "evaluation.anytime_every=0", "evaluation.anytime_forward_caps=[4]",
    "experiment.tensorboard=true",
]


def _events(run_dir):
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_every_round_metric_reads_back(tmp_path):
    config = load_config(None, TINY + [f"data.cache_dir={json.dumps(str(tmp_path / 'cache'))}"])
    run_experiment(config, tmp_path / "run")
    rows = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    scalars = _events(tmp_path / "run")
    expected = round_scalars(rows[0])
    assert {"accuracy", "loss", "bytes_up", "clients", "rejected", "global_residual"} <= set(expected)
    assert any(tag.startswith("tier_accuracy/") for tag in expected)
    assert set(scalars) == set(expected)
    for tag in ("accuracy", "bytes_down", "simulated_seconds"):
        assert scalars[tag] == [(r["round"], pytest.approx(float(r[tag]))) for r in rows]


def test_a_resumed_run_shows_each_round_once(tmp_path):
    config = load_config(None, TINY + [f"data.cache_dir={json.dumps(str(tmp_path / 'cache'))}"])
    out = tmp_path / "run"
    run_experiment(config, out, stop_after=2)
    (out / "checkpoints" / "round-00002").rename(out / "checkpoints" / "gone")  # lose round 2's checkpoint
    run_experiment(config, out, resume=True)
    assert [step for step, _ in _events(out)["accuracy"]] == [1, 2, 3]


def test_round_scalars_flatten_the_record():
    row = {"round": 2, "accuracy": 0.5, "skipped": False, "epsilon": None, "tier_accuracy": {"weak": 0.4},
           "clients": [{}, {}], "anytime": {"4": 0.3}}
    assert round_scalars(row) == {"accuracy": 0.5, "skipped": 0.0, "tier_accuracy/weak": 0.4, "clients": 2.0,
                                  "anytime/4": 0.3}


def test_without_the_package_the_run_fails_before_any_work(tmp_path, monkeypatch):
    import sys  # noqa: PLC0415

    from deqfl.errors import ConfigError  # noqa: PLC0415

    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if it were not installed
    config = load_config(None, TINY)
    with pytest.raises(ConfigError, match=r"pip install 'deqfl\[tracking\]'"):
        run_experiment(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()
