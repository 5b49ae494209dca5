from pathlib import Path

import pytest

from deqfl.errors import ConfigError
from deqfl.experiments.config import load_config
from deqfl.experiments.config_docs import render

ROOT = Path(__file__).resolve().parents[2]


def test_default_config_is_the_documented_default_experiment():
    c = load_config()
    assert c.data.dataset == "mnist" and c.data.num_clients == 20
    assert c.data.partition == "dirichlet" and c.data.alpha == 0.5
    assert c.fleet.preset == "three-tiers" and c.fusion.weighting == "quality"
    assert c.model.name.startswith("deq")


def test_file_and_overrides_merge(tmp_path):
    path = tmp_path / "e.toml"
    path.write_text('[experiment]\nrounds = 3\n[data]\ndataset = "digits"\n')
    c = load_config(path, ["train.lr=0.1", "fusion.weighting=examples", "experiment.name=x y"])
    assert c.experiment.rounds == 3 and c.data.dataset == "digits"
    assert c.train.lr == 0.1 and c.fusion.weighting == "examples" and c.experiment.name == "x y"
    assert c.data.num_clients == 20  # default kept


def test_resolved_config_round_trips(tmp_path):
    c = load_config(None, ["fleet.preset=two-tiers", "data.eval_subset=100"])
    path = tmp_path / "c.toml"
    path.write_text(c.to_toml())
    assert load_config(path) == c


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.lrr=0.1", r"train\.lrr: unknown key; valid keys here: .*lr"),
        ("data.partition=banana", r"data\.partition: .*'iid'"),
        ("experiment.rounds=0", r"experiment\.rounds: .*greater than 0"),
        ("fusion.weighting=nope", r"fusion\.weighting: .*valid choices"),
        ("bogus.key=1", r"bogus: unknown key"),
        ("fleet.tiers=[{name='a', share=0.5, max_iter=-1}]", r"fleet\.tiers\.0\.max_iter"),
        ("fleet.tiers=[{name='a', share=1.0, colour=1}]", r"fleet\.tiers\.0\.colour: unknown key; valid keys here: .*forward_cap"),
        ("noequals", r"expected section\.key=value"),
    ],
)
def test_bad_config_fails_naming_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_missing_or_broken_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[experiment\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_config_docs_are_up_to_date():
    assert (ROOT / "docs" / "CONFIG.md").read_text() == render()
