"""Warm starts end to end on digits (4 clients, 2 rounds): later rounds solve in fewer
iterations, the cache is the clients' state and travels in no counted byte, the run is
bitwise the same for one and two workers, and resuming after round 1 is bitwise with the
clients' caches; a model without a DEQ is refused."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from deqfl.errors import ConfigError
from deqfl.experiments.config import load_config
from deqfl.experiments.results import read_jsonl
from deqfl.experiments.run_dir import run_config_hash
from deqfl.experiments.runner import run_experiment
from deqfl.fl.client.warm_start import ROWS, SEEN, Z
from deqfl.fl.client_state import ClientStateStore

WARM = [
    "data.dataset=digits", "data.num_clients=4", "data.partition=iid", "data.train_subset=400",
    "data.eval_subset=200", "experiment.rounds=2", "sampling.fraction=1.0", "sampling.min_clients=1",
    "train.batch_size=32", "train.residual_samples=32", "evaluation.anytime_every=0",
    "evaluation.anytime_budgets=[4]", "model.options={max_norm=2.0}",
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Uninterrupted runs with and without warm starts (one worker), and the warm run
    stopped after round 1."""
    root = tmp_path_factory.mktemp("warm")

    def config(extra=()):
        return load_config(None, WARM + list(extra) + [f"data.cache_dir={json.dumps(str(root / 'cache'))}"])

    summary = run_experiment(config(["train.warm_start=true", "experiment.workers=1"]), root / "full")
    run_experiment(config(["experiment.workers=1"]), root / "cold")
    assert run_experiment(config(["train.warm_start=true", "experiment.workers=1"]), root / "stopped", stop_after=1) == {}
    return root, config, summary


def _model(out):
    return load_file(str(out / "model.safetensors"))


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _client_states(out):
    store = ClientStateStore(out / "client_state")
    return {cid: store.get(cid) for cid in store.clients()}


def _same_states(a, b):
    return a.keys() == b.keys() and all(_same(a[c], b[c]) for c in a)


def _iterations(out):
    return [[c["iterations"] for c in r["clients"]] for r in read_jsonl(out / "metrics.jsonl")]


def test_warm_starts_cut_iterations_and_the_cache_is_uncounted_client_state(runs):
    root, _, summary = runs
    assert summary["final_accuracy"] > 0.5  # chance is 0.1
    warm, cold = _iterations(root / "full"), _iterations(root / "cold")
    # round 1: a miss the first time a sample is drawn (the reshuffled third batch repeats some)
    assert all(w <= c for w, c in zip(warm[0], cold[0]))
    for later_warm, later_cold in zip(warm[1:], cold[1:]):
        assert sum(later_warm) < sum(later_cold)
    for w, c in zip(read_jsonl(root / "full" / "metrics.jsonl"), read_jsonl(root / "cold" / "metrics.jsonl")):
        assert (w["bytes_down"], w["bytes_up"]) == (c["bytes_down"], c["bytes_up"])
        assert w["rejected"] == []
    states = _client_states(root / "full")
    assert sorted(states) == [0, 1, 2, 3]
    for state in states.values():
        n = len(state[ROWS])
        assert state[Z + "deq"].shape == (n, 16, 8, 8) and state[Z + "deq"].dtype == torch.float16
        assert float(state[SEEN + "deq"].float().mean()) > 0.9  # (a round draws 96 of its 90 rows with repeats)
    assert _client_states(root / "cold") == {}


def test_warm_starts_are_bitwise_the_same_with_two_workers(runs, tmp_path):
    root, config, _ = runs
    run_experiment(config(["train.warm_start=true", "experiment.workers=2"]), tmp_path / "w2")
    assert _same(_model(tmp_path / "w2"), _model(root / "full"))
    assert _same_states(_client_states(tmp_path / "w2"), _client_states(root / "full"))


def test_resume_after_round_one_is_bitwise_with_the_caches(runs, tmp_path):
    root, config, _ = runs
    out = tmp_path / "run"
    shutil.copytree(root / "stopped", out)
    assert sorted(_client_states(out)) == [0, 1, 2, 3]
    run_experiment(config(["train.warm_start=true", "experiment.workers=1"]), out, resume=True)
    assert "resuming after round 1" in (out / "run.log").read_text()
    assert _same(_model(out), _model(root / "full"))
    assert _same_states(_client_states(out), _client_states(root / "full"))
    full = read_jsonl(root / "full" / "metrics.jsonl")
    resumed = read_jsonl(out / "metrics.jsonl")
    assert [r["accuracy"] for r in resumed] == [r["accuracy"] for r in full]
    assert _iterations(out) == _iterations(root / "full")


def test_a_model_without_a_deq_is_refused(tmp_path):
    config = load_config(None, WARM[:-1] + ["train.warm_start=true", "model.name=cnn-small"])
    with pytest.raises(ConfigError, match="train.warm_start = true needs a DEQ model, but model.name = 'cnn-small'"):
        run_experiment(config, tmp_path / "run")


def test_correction_training_on_a_model_without_a_deq_is_refused(tmp_path):
    config = load_config(None, WARM[:-1] + ["train.fixed_point_correction=1.0", "model.name=cnn-small"])
    with pytest.raises(ConfigError, match="train.fixed_point_correction = 1 needs a DEQ model, but model.name = 'cnn-small'"):
        run_experiment(config, tmp_path / "run")


def test_the_default_leaves_the_run_identity_unchanged():
    assert run_config_hash(load_config(None, ["train.warm_start=false"])) == run_config_hash(load_config(None))
    assert run_config_hash(load_config(None, ["train.warm_start=true"])) != run_config_hash(load_config(None))
