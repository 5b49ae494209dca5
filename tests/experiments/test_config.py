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


def test_fusion_options_old_and_new_spellings_give_one_config(tmp_path):
    """`fusion.quality=budget` (the suite's stored override) and the weighting's own table
    give the same config; config.toml writes the table; an old config.toml (every flat key
    spelled out, as before rules had options) loads to the same config."""
    old = load_config(None, ["fusion.quality=budget", "fusion.aggregator=multi-krum", "fusion.krum_select=3"])
    new = load_config(None, ["fusion.weighting_options.source=budget", "fusion.aggregator=multi-krum",
                             "fusion.aggregator_options={select = 3}"])
    assert old == new and new.fusion.aggregator_options == {"select": 3}
    text = new.to_toml()
    assert "source" in text and "krum_select" not in text and "quality = " not in text
    legacy = text.replace("[fusion]\n", '[fusion]\nquality = "budget"\ntrim_fraction = 0.1\nkrum_byzantine = 1\nkrum_select = 3\n', 1)
    legacy = legacy.replace("[fusion.weighting_options]\nsource = \"budget\"\n", "").replace("[fusion.aggregator_options]\nselect = 3\n", "")
    path = tmp_path / "config.toml"
    path.write_text(legacy)
    assert "source" not in legacy and load_config(path) == new


def test_fusion_old_key_and_its_option_together_are_an_error():
    with pytest.raises(ConfigError, match="give fusion.weighting_options.source or its old name fusion.quality"):
        load_config(None, ["fusion.quality=loss", "fusion.weighting_options.source=budget"])
