"""End-to-end federated runs on real data (scikit-learn digits), kept small and fast."""

import json

import pytest
import torch
from safetensors.torch import load_file

from deqfl.cli.main import main
from deqfl.errors import ConfigError
from deqfl.experiments.config import load_config
from deqfl.experiments.results import read_jsonl
from deqfl.experiments.runner import run_experiment

SMALL = [
    "data.dataset=digits", "data.num_clients=6", "data.alpha=1.0", "data.eval_subset=0",
    "experiment.rounds=2", "experiment.threads=1", "sampling.fraction=1.0", "train.batch_size=16",
    "evaluation.anytime_every=1", "evaluation.anytime_budgets=[1, 4, 16]",
]

ROUND_KEYS = {
    "round", "accuracy", "loss", "bytes_up", "bytes_down", "wall_seconds", "clients",
    "tier_accuracy", "global_residual", "client_accuracy", "simulated_seconds", "rejected",
}
CLIENT_KEYS = {"id", "num_examples", "weight", "tier", "iterations", "residual"}
SUMMARY_KEYS = {
    "dataset", "model", "engine", "rounds", "num_clients", "seed", "final_accuracy",
    "best_accuracy", "bytes_up", "bytes_down", "wall_seconds", "versions", "commit",
    "tier_accuracy", "anytime", "fusion",
}
MEASURED = {"wall_seconds", "train_seconds", "eval_seconds", "compute_seconds"}


def _run(tmp_path, name, extra=(), **kwargs):
    config = load_config(None, SMALL + list(extra) + [f"data.cache_dir={json.dumps(str(tmp_path / 'cache'))}"])
    out = tmp_path / name
    summary = run_experiment(config, out, **kwargs)
    return out, summary


def _strip_measured(value):
    if isinstance(value, dict):
        return {k: _strip_measured(v) for k, v in value.items() if k not in MEASURED}
    if isinstance(value, list):
        return [_strip_measured(v) for v in value]
    return value


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("runs")
    return _run(tmp, "a"), _run(tmp, "b")


def test_run_beats_chance_and_writes_the_schema(two_runs):
    (out, summary), _ = two_runs
    assert summary["final_accuracy"] > 0.5  # chance is 0.1
    records = read_jsonl(out / "metrics.jsonl")
    assert [r["round"] for r in records] == [1, 2]
    for r in records:
        assert ROUND_KEYS <= set(r)
        assert 0 <= r["accuracy"] <= 1 and r["bytes_up"] > 0 and r["bytes_down"] > 0
        assert set(r["tier_accuracy"]) == {"strong", "medium", "weak"}
        assert sum(c["weight"] for c in r["clients"]) == pytest.approx(1.0)
        assert {"mean", "p10"} == set(r["client_accuracy"])
        for c in r["clients"]:
            assert CLIENT_KEYS <= set(c)
    assert set(records[0]["anytime"]) == {"1", "4", "16"}
    assert SUMMARY_KEYS <= set(json.loads((out / "summary.json").read_text()))
    assert summary["bytes_up"] == sum(r["bytes_up"] for r in records)
    assert (out / "config.toml").exists() and (out / "model.safetensors").exists()
    for png in ("accuracy_vs_round.png", "accuracy_vs_mb.png", "client_weights.png"):
        assert (out / png).stat().st_size > 1000


def test_same_config_and_seed_give_identical_results(two_runs):
    (a, _), (b, _) = two_runs
    ra, rb = read_jsonl(a / "metrics.jsonl"), read_jsonl(b / "metrics.jsonl")
    assert _strip_measured(ra) == _strip_measured(rb)
    ma, mb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert all(torch.equal(ma[k], mb[k]) for k in ma)


def test_resume_equals_an_uninterrupted_run(two_runs, tmp_path):
    (full, _), _ = two_runs
    config = load_config(None, SMALL + [f"data.cache_dir={json.dumps(str(tmp_path / 'cache'))}"])
    out = tmp_path / "interrupted"
    assert run_experiment(config, out, stop_after=1) == {}
    assert not (out / "summary.json").exists()
    run_experiment(config, out, resume=True)
    resumed, uninterrupted = load_file(str(out / "model.safetensors")), load_file(str(full / "model.safetensors"))
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in resumed)
    assert [r["round"] for r in read_jsonl(out / "metrics.jsonl")] == [1, 2]


def test_an_existing_run_is_not_overwritten(two_runs):
    (out, _), _ = two_runs
    config = load_config(None, SMALL)
    with pytest.raises(ConfigError, match="--resume"):
        run_experiment(config, out)


def test_cli_run_and_eval(tmp_path, capsys):
    cache = json.dumps(str(tmp_path / "cache"))
    args = ["run", "--quiet", "--out", str(tmp_path / "cli")]
    for item in SMALL + ["experiment.rounds=1", "fusion.weighting=examples", f"data.cache_dir={cache}"]:
        args += ["--set", item]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "test accuracy" in out
    assert main(["eval", str(tmp_path / "cli"), "--forward-cap", "2", "--budget", "16", "--json"]) == 0  # old name kept
    rows = json.loads(capsys.readouterr().out)
    assert [r["forward_cap"] for r in rows] == [2, 16] and all(0 <= r["accuracy"] <= 1 for r in rows)


def test_cli_reports_config_errors_without_traceback(capsys):
    assert main(["run", "--set", "train.lrr=1"]) == 2
    err = capsys.readouterr().err
    assert "train.lrr: unknown key" in err and "Traceback" not in err


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_export_runs_and_matches_the_fixed_budget_model(two_runs, tmp_path, fmt):
    from deqfl.data import load_dataset
    from deqfl.experiments.export import export_model, fixed_budget_model
    from deqfl.experiments.model_io import load_saved_model

    (run, _), _ = two_runs
    data = load_dataset("digits", cache_dir=tmp_path)
    saved = load_saved_model(run, data.input_shape, data.num_classes)
    x = data.normalise(data.x_test[:64])
    expected = fixed_budget_model(saved.model, 6)(x).detach()
    path = export_model(saved.model, x[:2], 6, fmt, tmp_path / f"m.{fmt}")
    if fmt == "torchscript":
        got = torch.jit.load(str(path))(x)
    else:
        ort = pytest.importorskip("onnxruntime")
        session = ort.InferenceSession(str(path))
        got = torch.as_tensor(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
    assert torch.allclose(got, expected, atol=1e-4)
    assert (expected.argmax(1) == torch.as_tensor(data.y_test[:64])).float().mean() > 0.3


def test_the_commit_is_the_one_the_process_started_with(monkeypatch):
    # a long-lived reproduce worker must not record a HEAD that moved after it imported deqfl
    from deqfl.experiments import results

    results.git_commit.cache_clear()
    first = results.git_commit()

    def moved(*args, **kwargs):
        raise AssertionError("git asked again")

    monkeypatch.setattr(results.subprocess, "run", moved)
    assert results.git_commit() == first


HALF_WIDTH = "fleet.tiers=[{name='strong', share=0.5}, {name='weak', share=0.5, width=0.5}]"


def test_heterofl_baseline_trains_sub_models_and_counts_their_bytes(tmp_path):
    out, summary = _run(tmp_path, "heterofl", [
        "model.name=cnn-small", "train.lr=0.05", HALF_WIDTH, "fusion.weighting=examples", "fusion.aggregator=heterofl",
    ])
    for record in read_jsonl(out / "metrics.jsonl"):
        assert not record["rejected"]
        payload = {c["tier"]: c["bytes_up"] for c in record["clients"]}
        assert payload["weak"] < payload["strong"] / 2  # about a quarter of the parameters
        tiers = [c["tier"] for c in record["clients"]]
        assert record["bytes_down"] == sum(payload[t] for t in tiers)  # each client gets its own slices
    assert summary["tier_accuracy"]["weak"] > 0.5  # the sliced global model, evaluated as a weak device runs it


def test_width_slicing_needs_the_heterofl_aggregator_and_a_sliceable_model(tmp_path):
    with pytest.raises(ConfigError, match="needs fusion.aggregator = 'heterofl'"):
        load_config(None, SMALL + ["model.name=cnn-small", HALF_WIDTH])
    with pytest.raises(ConfigError, match="fleet.tiers 'weak' has width 0.5, but model.name = 'deq-mnist'"):
        _run(tmp_path, "deq", [HALF_WIDTH, "fusion.aggregator=heterofl"])


def test_a_programming_error_stops_the_run_with_a_clear_message(tmp_path):
    """A bug inside a client (here a registered model whose forward breaks in round 2) is
    not a client failure: the run stops with RunFailed naming the round and the last
    checkpoint, the traceback goes to run.log, and round 1 is kept."""
    from torch import nn  # noqa: PLC0415

    from deqfl.errors import RunFailed  # noqa: PLC0415
    from deqfl.models import register_model  # noqa: PLC0415

    class BreaksInRoundTwo(nn.Module):
        evaluated = False  # set by the server's evaluation of round 1 (the whole test split)

        def __init__(self, input_shape, num_classes):
            super().__init__()
            self.linear = nn.Linear(int(torch.tensor(input_shape).prod()), num_classes)

        def forward(self, x):
            if x.shape[0] >= 300:
                BreaksInRoundTwo.evaluated = True
            elif self.training and BreaksInRoundTwo.evaluated:
                raise RuntimeError("a bug in the model")
            return self.linear(x.flatten(1))

    register_model("test-breaks-in-round-two", input_shape=(1, 8, 8))(BreaksInRoundTwo)
    with pytest.raises(RunFailed, match=r"round 2 failed on an unexpected error \(client \d: RuntimeError: a bug in the model\).*last checkpoint is round 1"):
        _run(tmp_path, "broken", ["model.name=test-breaks-in-round-two", "experiment.rounds=3"])
    assert "Traceback" in (tmp_path / "broken" / "run.log").read_text()
    assert (tmp_path / "broken" / "checkpoints").is_dir()


@pytest.mark.parametrize("override, key", [
    ("train.lr=inf", "train.lr"),
    ("train.weight_decay=inf", "train.weight_decay"),
    ("fleet.tiers=[{name='a', share=1.0, speed=inf}]", "fleet.tiers.0.speed"),
    ("evaluation.anytime_forward_caps=[0, 4]", "evaluation.anytime_forward_caps"),
    ("experiment.seed=18446744073709551616", "experiment.seed"),
])
def test_values_that_would_fail_late_fail_at_validation(override, key, capsys):
    assert main(["run", "--set", override]) == 2
    err = capsys.readouterr().err
    assert err.startswith("deqfl: error: invalid") and key in err and "Traceback" not in err


def test_out_naming_a_file_is_a_clear_error(tmp_path, capsys):
    target = tmp_path / "a-file"
    target.write_text("x")
    assert main(["run", "--out", str(target), "--set", "data.dataset=digits"]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


def test_a_run_whose_every_round_was_skipped_says_so_and_exits_non_zero(tmp_path, capsys):
    cache = json.dumps(str(tmp_path / "cache"))
    args = ["run", "--quiet", "--out", str(tmp_path / "dead")]
    for item in SMALL + ["experiment.rounds=1", "faults.crash_clients=[0, 1, 2, 3, 4, 5]", f"data.cache_dir={cache}"]:
        args += ["--set", item]
    assert main(args) == 1
    assert "every one of the 1 rounds was skipped" in capsys.readouterr().err
    assert json.loads((tmp_path / "dead" / "summary.json").read_text())["skipped_rounds"] == 1


@pytest.mark.parametrize("command", ["eval", "export"])
@pytest.mark.parametrize("damage", ["{not json", '["a list"]', '{"model": "deq-mnist", "options": []}'])
def test_a_broken_model_json_is_a_clear_error(two_runs, tmp_path, capsys, command, damage):
    import shutil  # noqa: PLC0415

    (out, _), _ = two_runs
    run = tmp_path / "copy"
    shutil.copytree(out, run)
    (run / "model.json").write_text(damage)
    args = [command, str(run)] + (["--forward-cap", "4"] if command == "export" else [])
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("deqfl: error:") and "model.json" in err and "Traceback" not in err


def test_a_holdout_share_that_leaves_clients_without_training_rows_is_refused(tmp_path):
    config = load_config(None, SMALL + [
        "data.train_subset=600", "data.num_clients=300", "data.partition=iid", "data.holdout_fraction=0.9",
        f"data.cache_dir={json.dumps(str(tmp_path / 'cache'))}",
    ])
    with pytest.raises(ConfigError, match=r"data.holdout_fraction = 0.9 leaves \d+ client\(s\) without training rows"):
        run_experiment(config, tmp_path / "run")
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
