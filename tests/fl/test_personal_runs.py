"""Personalised runs end to end on tiny digits: only shared parts travel (bytes), the
server's copy of the personal part never moves, personal state and duals survive
`--resume` bitwise, unseen clients are held out, fitted and evaluated, and the round
record reports personalised accuracy per tier."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from deqfl.experiments.config import load_config
from deqfl.experiments.results import read_jsonl
from deqfl.experiments.runner import run_experiment
from deqfl.fl.checkpoint import CLIENT_STATE_DIR
from deqfl.fl.client_state import ClientStateStore, tensor_digest
from deqfl.fl.personal.split import split_model
from deqfl.fl.personal.unseen import unseen_clients
from deqfl.fl.transport import encode_state
from deqfl.models import build_model, federated_state

TINY = [
    "data.dataset=digits", "data.num_clients=4", "data.partition=pathological", "data.train_subset=400",
    "data.eval_subset=100", "experiment.rounds=2", "sampling.fraction=1.0", "sampling.min_clients=1",
    "train.batch_size=32", "train.residual_samples=16", "evaluation.anytime_every=0",
    "evaluation.anytime_budgets=[4]", "personalization.test_rows=40", "experiment.workers=1",
]
pytestmark = pytest.mark.filterwarnings("ignore:'pathological' partition")


def _config(tmp_path, *extra):
    return load_config(None, TINY + [f"data.cache_dir={json.dumps(str(tmp_path.parent / 'cache'))}", *extra])


def _initial(config):
    torch.manual_seed(config.experiment.seed)
    return federated_state(build_model(config.model.name, input_shape=(1, 8, 8), num_classes=10))


def test_only_the_shared_part_travels(tmp_path):
    config = _config(tmp_path, "personalization.algorithm=fedper", "experiment.rounds=1")
    run_experiment(config, tmp_path / "fedper")
    (record,) = read_jsonl(tmp_path / "fedper" / "metrics.jsonl")
    initial = _initial(config)
    split = split_model(build_model(config.model.name, input_shape=(1, 8, 8), num_classes=10))
    shared = len(encode_state({k: initial[k] for k in split.shared}))
    assert shared < len(encode_state(initial))
    assert [c["bytes_up"] for c in record["clients"]] == [shared] * 4
    assert record["bytes_down"] == 4 * shared and record["bytes_up"] == 4 * shared
    final = load_file(str(tmp_path / "fedper" / "model.safetensors"))
    assert all(torch.equal(final[k], initial[k]) for k in split.personal)  # the heads never reached the server
    assert not all(torch.equal(final[k], initial[k]) for k in split.shared)
    assert record["personal_accuracy"]["clients"] == 4 and 0 <= record["personal_accuracy"]["p10"] <= record["personal_accuracy"]["mean"]

    config = _config(tmp_path, "personalization.algorithm=local", "experiment.rounds=1")
    run_experiment(config, tmp_path / "local")
    (record,) = read_jsonl(tmp_path / "local" / "metrics.jsonl")
    assert record["bytes_up"] == record["bytes_down"] == 4 * len(encode_state({}))


def _digests(run_dir):
    store = ClientStateStore(run_dir / CLIENT_STATE_DIR)
    return {cid: tensor_digest(store.get(cid)) for cid in store.clients()}


def test_personal_state_and_duals_survive_resume_bitwise(tmp_path):
    extra = ("personalization.algorithm=fedeq", "personalization.options={rho=0.1}", "experiment.rounds=3",
             "sampling.fraction=0.5")
    run_experiment(_config(tmp_path, *extra), tmp_path / "full")
    assert run_experiment(_config(tmp_path, *extra), tmp_path / "resumed", stop_after=1) == {}
    run_experiment(_config(tmp_path, *extra), tmp_path / "resumed", resume=True)
    a, b = load_file(str(tmp_path / "full" / "model.safetensors")), load_file(str(tmp_path / "resumed" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    full, resumed = read_jsonl(tmp_path / "full" / "metrics.jsonl"), read_jsonl(tmp_path / "resumed" / "metrics.jsonl")
    assert [r["personal_accuracy"] for r in full] == [r["personal_accuracy"] for r in resumed]
    digests = _digests(tmp_path / "full")
    assert digests == _digests(tmp_path / "resumed") and len(digests) >= 2
    state = ClientStateStore(tmp_path / "full" / CLIENT_STATE_DIR).get(min(digests))
    assert any(k.startswith("dual/") for k in state) and any(k.startswith("personal/head.") for k in state)
    assert any(float(v.abs().max()) > 0 for k, v in state.items() if k.startswith("dual/"))


def test_unseen_clients_are_held_out_fitted_and_evaluated_per_tier(tmp_path):
    tiers = "fleet.tiers=[{name='strong', clients=[0, 1], forward_cap=8}, {name='weak', clients=[2, 3], forward_cap=2}]"
    config = _config(tmp_path, "personalization.algorithm=fedrep", "personalization.unseen_fraction=0.25",
                     "personalization.unseen_steps=5", tiers)
    summary = run_experiment(config, tmp_path / "run")
    records = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    (held,) = unseen_clients(config.data.num_clients, config.personalization.unseen_fraction, config.experiment.seed)
    assert all(held not in [c["id"] for c in r["clients"]] for r in records)
    assert "unseen_accuracy" not in records[0]
    unseen = records[-1]["unseen_accuracy"]
    assert unseen["clients"] == 1 and list(unseen["tiers"]) == ["strong" if held < 2 else "weak"]
    assert set(records[-1]["personal_accuracy"]["tiers"]) == {"strong", "weak"}
    assert summary["unseen_accuracy"] == unseen and summary["personal_accuracy"] == records[-1]["personal_accuracy"]
    assert summary["megabytes"] == pytest.approx(sum(r["bytes_up"] + r["bytes_down"] for r in records) / 1e6)


def test_unseen_evaluation_is_deterministic(tmp_path):
    extra = ("personalization.algorithm=ditto", "personalization.unseen_fraction=0.25", "experiment.rounds=1")
    for name in ("a", "b"):
        run_experiment(_config(tmp_path, *extra), tmp_path / name)
    (a,), (b,) = read_jsonl(tmp_path / "a" / "metrics.jsonl"), read_jsonl(tmp_path / "b" / "metrics.jsonl")
    assert a["unseen_accuracy"] == b["unseen_accuracy"] and a["unseen_accuracy"]["clients"] == 1


def test_worker_processes_give_the_same_personalised_round(tmp_path):
    """Each worker completes downloads from its own rebuilt model (the run's seed), so the
    round is bitwise the same with two workers as with one."""
    extra = ("personalization.algorithm=fedrep", "experiment.rounds=1")
    run_experiment(_config(tmp_path, *extra), tmp_path / "one")
    run_experiment(_config(tmp_path, *extra, "experiment.workers=2"), tmp_path / "two")
    a, b = load_file(str(tmp_path / "one" / "model.safetensors")), load_file(str(tmp_path / "two" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    (ra,), (rb,) = read_jsonl(tmp_path / "one" / "metrics.jsonl"), read_jsonl(tmp_path / "two" / "metrics.jsonl")
    assert ra["personal_accuracy"] == rb["personal_accuracy"]
    assert _digests(tmp_path / "one") == _digests(tmp_path / "two")
