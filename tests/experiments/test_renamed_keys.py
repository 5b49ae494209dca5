"""One name for the forward iteration cap: `forward_cap` (tiers), `min_forward_cap`
(sampling), `anytime_forward_caps` (evaluation); the old names stay accepted, so every
stored evidence run still loads and keeps its run id."""

import json
import tomllib
from pathlib import Path

import pytest

from deqfl.errors import ConfigError
from deqfl.experiments.config import load_config, validate_config
from deqfl.experiments.reproduce import personal_protocol
from deqfl.experiments.reproduce.suite import FULL, RunSpec, build_suite

RESULTS = Path(__file__).resolve().parents[2] / "docs" / "results"
STORED = sorted(RESULTS.glob("*.json"))


def test_old_and_new_names_give_the_same_config():
    old = load_config(None, ["sampling.min_cap=4", "evaluation.anytime_budgets=[2, 8]",
                             "fleet.tiers=[{name='a', share=1.0, max_iter=6}]"])
    new = load_config(None, ["sampling.min_forward_cap=4", "evaluation.anytime_forward_caps=[2, 8]",
                             "fleet.tiers=[{name='a', share=1.0, forward_cap=6}]"])
    assert old == new
    assert new.sampling.min_forward_cap == 4 and new.evaluation.anytime_forward_caps == [2, 8]
    assert new.fleet.tiers[0].forward_cap == 6
    dumped = tomllib.loads(new.to_toml())  # a run directory's config.toml uses the new names
    assert "min_forward_cap" in dumped["sampling"] and "min_cap" not in dumped["sampling"]
    assert dumped["fleet"]["tiers"][0]["forward_cap"] == 6 and "max_iter" not in dumped["fleet"]["tiers"][0]


def test_a_later_layer_replaces_an_earlier_one_under_either_name(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text("[sampling]\nmin_cap = 4\n")
    assert load_config(path, ["sampling.min_forward_cap=8"]).sampling.min_forward_cap == 8
    path.write_text("[sampling]\nmin_forward_cap = 4\n")
    assert load_config(path, ["sampling.min_cap=8"]).sampling.min_forward_cap == 8


def test_both_names_in_one_place_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="give min_forward_cap or its old name min_cap, not both"):
        validate_config({"sampling": {"min_cap": 3, "min_forward_cap": 4}})
    with pytest.raises(ConfigError, match=r"fleet.tiers.0: .*give forward_cap or its old name max_iter"):
        load_config(None, ["fleet.tiers=[{name='a', share=1.0, max_iter=6, forward_cap=3}]"])
    path = tmp_path / "run.toml"
    path.write_text("[evaluation]\nanytime_budgets = [1]\nanytime_forward_caps = [2]\n")
    with pytest.raises(ConfigError, match="anytime_forward_caps or its old name anytime_budgets"):
        load_config(path)


def test_an_old_run_directory_config_still_loads(tmp_path):
    config = load_config(None, ["fleet.preset=two-tiers"])
    old_text = config.to_toml().replace("min_forward_cap", "min_cap").replace("anytime_forward_caps", "anytime_budgets")
    assert validate_config(tomllib.loads(old_text)) == config


@pytest.mark.skipif(not STORED, reason="no stored evidence runs")
def test_every_stored_run_loads_and_keeps_its_run_id():
    suite_ids = {s.run_id for s in build_suite(FULL, with_cifar=True)}
    suite_ids |= {s.run_id for s in personal_protocol.build_e5(personal_protocol.FULL)}
    old_names = 0
    for path in STORED:
        stored = json.loads(path.read_text())
        spec = RunSpec(stored["experiment"], stored["method"], stored["dataset"], stored["seed"],
                       tuple(stored["overrides"]), stored["group"])
        assert spec.run_id == stored["run_id"] == path.stem
        assert stored["run_id"] in suite_ids  # the suite still emits the same override strings
        load_config(None, stored["overrides"])
        old_names += any("max_iter=" in o or "min_cap=" in o for o in stored["overrides"])
    assert old_names > 0  # the old names are exercised
