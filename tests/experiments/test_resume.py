"""Resume is bitwise from any kept checkpoint, a bad newest checkpoint falls back to the
older one, and a run directory holding another run's files is refused (digits, tiny)."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from deqfl.errors import ConfigError
from deqfl.experiments.config import load_config
from deqfl.experiments.results import read_jsonl
from deqfl.experiments.runner import run_experiment
from deqfl.fl.checkpoint import CheckpointError

TINY = [
    "data.dataset=digits", "data.num_clients=4", "data.partition=iid", "data.train_subset=400",
    "data.eval_subset=200", "experiment.rounds=4", "sampling.fraction=1.0", "sampling.min_clients=1",
    "train.batch_size=32", "train.residual_samples=32", "evaluation.anytime_every=0",
    "evaluation.anytime_budgets=[4]",
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """An uninterrupted 4-round run, and the same run stopped after round 2."""
    root = tmp_path_factory.mktemp("resume")

    def config(extra=()):
        return load_config(None, TINY + list(extra) + [f"data.cache_dir={json.dumps(str(root / 'cache'))}"])

    run_experiment(config(), root / "full")
    assert run_experiment(config(), root / "stopped", stop_after=2) == {}
    return root, config


def _copy(root, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(root / "stopped", out)
    return out


def _assert_same_run(out, full):
    a, b = load_file(str(out / "model.safetensors")), load_file(str(full / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ra, rb = read_jsonl(out / "metrics.jsonl"), read_jsonl(full / "metrics.jsonl")
    assert [r["round"] for r in ra] == [1, 2, 3, 4]
    assert [r["accuracy"] for r in ra] == [r["accuracy"] for r in rb]


def _retype(model_file):
    state = load_file(str(model_file))
    key = next(k for k, v in state.items() if v.is_floating_point())
    save_file({**state, key: state[key].double()}, str(model_file))


def _nan(model_file):
    state = load_file(str(model_file))
    key = next(k for k, v in state.items() if v.is_floating_point())
    value = state[key].clone()
    value.view(-1)[0] = float("nan")
    save_file({**state, key: value}, str(model_file))


def _flip(model_file):
    data = bytearray(model_file.read_bytes())
    data[len(data) // 2] ^= 0x01
    model_file.write_bytes(bytes(data))


def test_resume_after_round_two_is_bitwise(runs, tmp_path):
    root, config = runs
    out = _copy(root, tmp_path)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["round-00001", "round-00002"]
    assert (out / "checkpoints" / "round-00002" / "fusion.safetensors").exists()
    run_experiment(config(), out, resume=True)
    assert "resuming after round 2" in (out / "run.log").read_text()
    _assert_same_run(out, root / "full")


@pytest.mark.parametrize("damage", [_nan, _retype, _flip], ids=["nan", "retyped", "flipped-byte"])
def test_a_bad_newest_checkpoint_resumes_from_the_older_one_bitwise(runs, tmp_path, damage):
    root, config = runs
    out = _copy(root, tmp_path)
    newest = out / "checkpoints" / "round-00002"
    damage(newest / "model.safetensors")
    run_experiment(config(), out, resume=True)
    log = (out / "run.log").read_text()
    assert f"checkpoint {newest} is unreadable or invalid (model does not match its digest)" in log
    assert "resuming after round 1" in log
    _assert_same_run(out, root / "full")


def test_no_good_checkpoint_is_a_clear_error(runs, tmp_path):
    root, config = runs
    out = _copy(root, tmp_path)
    for ckpt in (out / "checkpoints").iterdir():
        _flip(ckpt / "model.safetensors")
    with pytest.raises(CheckpointError, match="no usable checkpoint .* round-00002: model does not match"):
        run_experiment(config(), out, resume=True)


def test_a_run_directory_with_empty_metrics_and_another_runs_checkpoints_is_not_adopted(runs, tmp_path):
    root, config = runs
    out = _copy(root, tmp_path)
    (out / "metrics.jsonl").write_text("")  # the defect: an empty metrics file let a new run in
    other = config(["experiment.seed=1"])
    for resume in (False, True):
        with pytest.raises(ConfigError, match=r"holds another run: its config.toml differs .* experiment.seed"):
            run_experiment(other, out, resume=resume)
    with pytest.raises(ConfigError, match="holds checkpoints of this config's run; resume it"):
        run_experiment(config(), out)
    (out / "config.toml").unlink()
    for resume in (False, True):
        with pytest.raises(ConfigError, match="holds checkpoints but no config.toml"):
            run_experiment(other, out, resume=resume)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["round-00001", "round-00002"]


def test_the_run_hash_ignores_file_locations_and_defaults_spelled_out():
    from deqfl.experiments.run_dir import run_config_hash

    base = load_config(None, TINY)
    same = [
        load_config(None, TINY + ['data.cache_dir="/elsewhere"', 'data.data_dir="/data"']),
        load_config(None, TINY + [f"experiment.seed={base.experiment.seed}"]),
    ]
    assert all(run_config_hash(c) == run_config_hash(base) for c in same)
    for change in ("experiment.seed=1", "train.lr=0.01", 'fusion.aggregator="median"'):
        assert run_config_hash(load_config(None, TINY + [change])) != run_config_hash(base), change


def test_a_config_toml_that_is_not_toml_is_a_clear_error(runs, tmp_path):
    _, config = runs
    out = tmp_path / "garbage"
    out.mkdir()
    (out / "config.toml").write_text("[[[ not toml")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        run_experiment(config(), out)


def test_resume_rolls_the_client_state_store_back_to_the_checkpoints(runs, tmp_path):
    from deqfl.experiments.run_dir import run_config_hash
    from deqfl.fl.checkpoint import load_latest_checkpoint, save_checkpoint
    from deqfl.fl.client_state import ClientStateStore

    root, config = runs
    out = _copy(root, tmp_path)
    # round 2's checkpoint as a run with client state writes it: clients 1 and 3 hold state
    ckpt = load_latest_checkpoint(out)
    held = {1: {"c": torch.full((5,), 1.5)}, 3: {"c": torch.arange(4.0), "n": torch.tensor([7])}}
    staging = ClientStateStore(tmp_path / "staging")
    for client, state in held.items():
        staging.put(client, state)
    save_checkpoint(out, 2, ckpt.state, ckpt.extra, client_state=staging, config_hash=run_config_hash(config()))
    # what a crash during round 3 leaves in the live store: later states, a new client
    live = ClientStateStore(out / "client_state")
    live.put(1, {"c": torch.zeros(5)})
    live.put(2, {"c": torch.ones(5)})
    run_experiment(config(), out, resume=True)
    assert live.clients() == [1, 3]
    for client, state in held.items():
        got = live.get(client)
        assert got.keys() == state.keys() and all(torch.equal(got[k], state[k]) for k in state)
    final = load_latest_checkpoint(out)
    assert final.round == 4 and sorted(final.client_state.digests) == [1, 3]
    _assert_same_run(out, root / "full")


def test_resume_with_a_stateful_server_optimiser_is_bitwise(runs, tmp_path):
    """FedAdam's moments and step counter travel in the checkpoint: a run stopped after
    round 2 and resumed ends bitwise where the uninterrupted one does, and differs from a
    run whose optimiser state would have been lost (it is not the plain-FedAvg model)."""
    root, config = runs
    adam = ["fusion.server_optimizer=fedadam", "fusion.server_optimizer_options.lr=0.01"]
    run_experiment(config(adam), tmp_path / "full")
    assert run_experiment(config(adam), tmp_path / "stopped", stop_after=2) == {}
    state = load_file(str(tmp_path / "stopped" / "checkpoints" / "round-00002" / "fusion.safetensors"))
    assert int(state["server_optimizer/step"]) == 2 and any(k.startswith("server_optimizer/m/") for k in state)
    run_experiment(config(adam), tmp_path / "stopped", resume=True)
    _assert_same_run(tmp_path / "stopped", tmp_path / "full")
    plain = load_file(str(root / "full" / "model.safetensors"))
    adam_model = load_file(str(tmp_path / "full" / "model.safetensors"))
    assert any(not torch.equal(plain[k], adam_model[k]) for k in plain)
