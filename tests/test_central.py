"""Central training (`deqfl central`): it learns, resumes bitwise, refuses bad input."""

import json
from dataclasses import asdict

import pytest
import torch
from safetensors.torch import load_file

from deqfl.cli.main import main
from deqfl.errors import ConfigError
from deqfl.experiments.central import METRICS_FILE, MODEL_FILE, central_config, train_central

SETTINGS = {
    "data": {"dataset": "digits", "train_subset": 320},
    "model": {"name": "deq-mnist"},
    "train": {"optimizer": "adam", "lr": 0.003, "batch_size": 32, "lr_schedule": "cosine"},
    "epochs": 2, "forward_cap": 6, "checkpoint_steps": 3,
}


class _Crash(Exception):
    pass


def _rows(result):
    return [{k: v for k, v in asdict(r).items() if k != "seconds"} for r in result.rows]


def test_central_learns_and_logs_iterations(tmp_path):
    seen = []
    result = train_central(central_config(SETTINGS), tmp_path / "run", on_epoch=seen.append)
    assert seen == result.rows
    assert result.steps == 20
    assert [r.epoch for r in result.rows] == [1, 2]
    assert result.final_accuracy > 0.5  # 10 classes: chance is 0.1
    assert all(0 < r.train_iterations <= 6 and 0 < r.test_iterations <= 6 for r in result.rows)
    assert len((tmp_path / "run" / METRICS_FILE).read_text().splitlines()) == 2


@pytest.mark.parametrize("crash_at", [7, 10])  # mid-epoch (checkpoint at 6), and at an epoch's end
def test_central_resumes_bitwise(tmp_path, crash_at):
    config = central_config({**SETTINGS, "data": {**SETTINGS["data"], "augment": "crop-flip"},
                             "train": {**SETTINGS["train"], "fixed_point_correction": 0.5}})
    whole = train_central(config, tmp_path / "whole")

    def crash(step, total):
        if step == crash_at:
            raise _Crash

    with pytest.raises(_Crash):
        train_central(config, tmp_path / "cut", on_step=crash)
    assert not (tmp_path / "cut" / MODEL_FILE).exists()
    resumed = train_central(config, tmp_path / "cut", resume=True)
    assert _rows(resumed) == _rows(whole)
    a, b = load_file(tmp_path / "whole" / MODEL_FILE), load_file(tmp_path / "cut" / MODEL_FILE)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert len((tmp_path / "cut" / METRICS_FILE).read_text().splitlines()) == 2


def test_central_refuses_bad_settings_and_reused_dirs(tmp_path):
    with pytest.raises(ConfigError, match="train.optimizer"):
        central_config({**SETTINGS, "train": {"optimizer": "lion"}})
    with pytest.raises(ConfigError, match="epochs"):
        central_config({**SETTINGS, "epochs": 0})
    with pytest.raises(ConfigError, match="device"):
        central_config({**SETTINGS, "device": "tpu"})
    with pytest.raises(ConfigError, match="lr_warmup_rounds"):
        central_config({**SETTINGS, "train": {"lr_warmup_rounds": 2}})
    explicit = central_config({**SETTINGS, "model": {"name": "cnn-small"}, "train": {"fixed_point_correction": 1.0}})
    with pytest.raises(ConfigError, match="needs a DEQ model, but model.name = 'cnn-small'"):
        train_central(explicit, tmp_path / "explicit")
    assert not (tmp_path / "explicit").exists()  # refused before the run folder is made
    config = central_config({**SETTINGS, "epochs": 1, "checkpoint_steps": 0})
    train_central(config, tmp_path / "run")
    with pytest.raises(ConfigError, match="--resume"):
        train_central(config, tmp_path / "run")


def test_central_cli(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["central", "--model", "cnn-small", "--model-options", '{"widths": [4, 8]}', "--dataset", "digits",
            "--train-subset", "128", "--epochs", "1", "--optimizer", "sgd", "--lr", "0.05", "--out", str(out)]
    assert main([*args, "--json"]) == 0
    row = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert row["epoch"] == 1 and row["test_iterations"] == 0.0
    assert main(["central", "--resume", str(out), "--json"]) == 0  # done already: reports, trains nothing
    assert main(["central", "--resume", str(out), "--lr", "0.1"]) == 2
    assert "drop --lr" in capsys.readouterr().err
    assert main(["central", "--model", "cnn-small", "--dataset", "digits"]) == 2
    assert main([*args[:-2], "--out", str(tmp_path / "x"), "--model-options", "[1]"]) == 2
    assert main(["central", "--model", "nope", "--dataset", "digits", "--out", str(tmp_path / "y")]) == 2
    assert main(["central", "--resume", str(tmp_path)]) == 2
