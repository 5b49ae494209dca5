"""`train.optimizer`, `train.lr_schedule` and `data.augment` as config keys and in a run:
checked before any work, left out of the identity of runs that do not use them, the
round's rate in every record, and a run using all three resumes bitwise (digits, tiny)."""

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
from deqfl.fl.lr_schedule import LrSchedule


def test_spelled_out_defaults_keep_the_run_identity():
    plain = load_config(None, [])
    spelled = load_config(None, [
        'train.optimizer="sgd"', "train.optimizer_options={}", 'train.lr_schedule="constant"', "train.lr_min=0.0",
        "train.lr_warmup_rounds=0", 'data.augment="none"',
    ])
    assert run_config_hash(spelled) == run_config_hash(plain)
    adam = load_config(None, ['train.optimizer="adam"', "train.optimizer_options={beta_1 = 0.9, eps = 1e-6}"])
    same = load_config(None, ['train.optimizer="adam"', "train.optimizer_options={eps = 1e-6}"])
    assert adam.train.optimizer_options == {"eps": 1e-6} and run_config_hash(adam) == run_config_hash(same)


@pytest.mark.parametrize("overrides, message", [
    (['train.optimizer="adam"', "train.optimizer_options={beta3 = 0.5}"],
     r"train\.optimizer_options\.beta3: unknown option \(optimizer 'adam' takes options: beta_1, beta_2, eps\)"),
    (['train.optimizer="adam"', "train.optimizer_options={eps = 0}"], r"train\.optimizer_options\.eps: .*greater than 0"),
    (["train.optimizer_options={beta_1 = 0.9}"], r"train\.optimizer_options\.beta_1: unknown option \(optimizer 'sgd'"),
    (['train.optimizer="lion"'], r"train\.optimizer: .*unknown client optimizer 'lion'; valid choices: adam, adamw, sgd"),
    (['train.optimizer="adam"', 'fusion.aggregator="fednova"'], r"fusion\.aggregator = 'fednova' assumes; use train\.optimizer = 'sgd'"),
    (['train.optimizer="adamw"', 'fusion.control_variates="scaffold"'], r"fusion\.control_variates = 'scaffold' assumes"),
    (['train.lr_schedule="cosine"', "train.lr=0.1", "train.lr_min=0.2"], r"lr_min \(0\.2\) must be at most lr \(0\.1\)"),
    (["experiment.rounds=3", "train.lr_warmup_rounds=3"], r"train\.lr_warmup_rounds = 3 leaves no round after warmup"),
    (['train.lr_schedule="linear"'], r"train\.lr_schedule: .*'constant', 'cosine' or 'step'"),
    (['data.augment="rotate"'], r"data\.augment: .*valid choices: none, crop-flip"),
])
def test_bad_training_options_are_config_errors_naming_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


TINY = [
    "data.dataset=digits", "data.num_clients=4", "data.partition=iid", "data.train_subset=400",
    "data.eval_subset=200", "experiment.rounds=3", "sampling.fraction=1.0", "sampling.min_clients=1",
    "train.batch_size=32", "train.residual_samples=32", "evaluation.anytime_every=0",
    "evaluation.anytime_budgets=[4]", 'model.name="cnn-small"',
    'train.optimizer="adam"', "train.lr=0.005", "train.optimizer_options={beta_2 = 0.99}",
    'train.lr_schedule="cosine"', "train.lr_min=0.0005", "train.lr_warmup_rounds=1", 'data.augment="crop-flip"',
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("training-options")

    def config():
        return load_config(None, TINY + [f"data.cache_dir={json.dumps(str(root / 'cache'))}"])

    run_experiment(config(), root / "full")
    assert run_experiment(config(), root / "stopped", stop_after=1) == {}
    return root, config


def test_every_record_holds_the_rounds_rate(runs):
    root, _ = runs
    records = read_jsonl(root / "full" / "metrics.jsonl")
    schedule = LrSchedule("cosine", rounds=3, lr_min=0.0005, warmup_rounds=1)
    assert [r["lr"] for r in records] == [schedule.lr(r, 0.005) for r in (1, 2, 3)]
    assert [r["lr"] for r in records] == pytest.approx([0.0025, 0.005, 0.00275])
    assert all(r["clients"] and not r["skipped"] for r in records)


def test_a_resumed_run_gets_the_same_rates_augmentations_and_model(runs, tmp_path):
    root, config = runs
    out = tmp_path / "run"
    shutil.copytree(root / "stopped", out)
    run_experiment(config(), out, resume=True)
    a, b = load_file(str(out / "model.safetensors")), load_file(str(root / "full" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    resumed, full = read_jsonl(out / "metrics.jsonl"), read_jsonl(root / "full" / "metrics.jsonl")
    assert [(r["lr"], r["accuracy"]) for r in resumed] == [(r["lr"], r["accuracy"]) for r in full]
