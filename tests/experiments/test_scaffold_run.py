"""SCAFFOLD end to end on digits (4 clients, 3 rounds): it learns, the control variates
are counted in the bytes, the run is bitwise the same for one and two workers, and resuming
(from the newest checkpoint, or from an older one when the newest is damaged) is bitwise
with the rule's and the clients' state; the unsupported combinations are refused."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from deqfl.errors import ConfigError
from deqfl.experiments.config import load_config
from deqfl.experiments.results import read_jsonl
from deqfl.experiments.runner import run_experiment
from deqfl.fl.client_state import ClientStateStore
from deqfl.fl.transport import encode_state, with_extras

SCAFFOLD = [
    "data.dataset=digits", "data.num_clients=4", "data.partition=iid", "data.train_subset=400",
    "data.eval_subset=200", "experiment.rounds=3", "sampling.fraction=1.0", "sampling.min_clients=1",
    "train.batch_size=32", "train.residual_samples=32", "train.momentum=0.5", "evaluation.anytime_every=0",
    "evaluation.anytime_budgets=[4]", 'fusion.control_variates="scaffold"',
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """An uninterrupted run with one worker, and the same run stopped after round 2."""
    root = tmp_path_factory.mktemp("scaffold")

    def config(extra=()):
        return load_config(None, SCAFFOLD + list(extra) + [f"data.cache_dir={json.dumps(str(root / 'cache'))}"])

    summary = run_experiment(config(["experiment.workers=1"]), root / "full")
    assert run_experiment(config(["experiment.workers=1"]), root / "stopped", stop_after=2) == {}
    return root, config, summary


def _model(out):
    return load_file(str(out / "model.safetensors"))


def _same_model(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _client_states(out):
    store = ClientStateStore(out / "client_state")
    return {cid: store.get(cid) for cid in store.clients()}


def _same_states(a, b):
    return a.keys() == b.keys() and all(_same_model(a[c], b[c]) for c in a)


def test_scaffold_learns_and_counts_its_control_variates(runs):
    root, _, summary = runs
    assert summary["final_accuracy"] > 0.5  # chance is 0.1
    model = _model(root / "full")
    controls = {f"control/{k}": torch.zeros_like(v) for k, v in model.items() if v.is_floating_point()}
    one_way = len(encode_state(with_extras(dict(model), controls)))
    assert one_way > len(encode_state(dict(model))) * 1.9  # the model and c: about twice the model
    for record in read_jsonl(root / "full" / "metrics.jsonl"):
        assert record["bytes_down"] == record["bytes_up"] == 4 * one_way
        assert record["rejected"] == []
    states = _client_states(root / "full")
    assert sorted(states) == [0, 1, 2, 3]
    assert all(sorted(s) == sorted(controls) for s in states.values())


def test_scaffold_is_bitwise_the_same_with_two_workers(runs, tmp_path):
    root, config, _ = runs
    run_experiment(config(["experiment.workers=2"]), tmp_path / "w2")
    assert _same_model(_model(tmp_path / "w2"), _model(root / "full"))
    assert _same_states(_client_states(tmp_path / "w2"), _client_states(root / "full"))


def _resumed(root, config, tmp_path, damage_newest: bool):
    out = tmp_path / "run"
    shutil.copytree(root / "stopped", out)
    if damage_newest:
        model = out / "checkpoints" / "round-00002" / "model.safetensors"
        data = bytearray(model.read_bytes())
        data[len(data) // 2] ^= 0x01
        model.write_bytes(bytes(data))
    run_experiment(config(["experiment.workers=1"]), out, resume=True)
    return out


@pytest.mark.parametrize("damage_newest", [False, True], ids=["newest", "older-checkpoint"])
def test_resume_is_bitwise_with_control_variates_and_client_states(runs, tmp_path, damage_newest):
    root, config, _ = runs
    out = _resumed(root, config, tmp_path, damage_newest)
    assert f"resuming after round {1 if damage_newest else 2}" in (out / "run.log").read_text()
    assert _same_model(_model(out), _model(root / "full"))
    assert _same_states(_client_states(out), _client_states(root / "full"))
    full = read_jsonl(root / "full" / "metrics.jsonl")
    assert [r["accuracy"] for r in read_jsonl(out / "metrics.jsonl")] == [r["accuracy"] for r in full]


@pytest.mark.parametrize(("extra", "message"), [
    (['privacy.mode="local"', 'fusion.weighting="uniform"'], "privacy.mode is 'local'"),
    (['fleet.tiers=[{name="half", share=1.0, width=0.5}]', 'fusion.aggregator="heterofl"'], "fleet.tiers has tier 'half' of width < 1"),
])
def test_unsupported_combinations_are_refused(extra, message):
    with pytest.raises(ConfigError, match=f"fusion.control_variates = 'scaffold' is not supported when {message}"):
        load_config(None, SCAFFOLD + extra)
