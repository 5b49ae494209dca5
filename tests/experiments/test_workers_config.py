"""`experiment.workers`: default the usable cores, validated, absent from configs that leave it unset."""

import os

import pytest

from deqfl.errors import ConfigError
from deqfl.experiments import config as config_module
from deqfl.experiments.config import ExperimentSection, load_config, usable_cores


def test_usable_cores_is_the_affinity_mask():
    assert usable_cores() == len(os.sched_getaffinity(0)) >= 1


def test_workers_resolve_to_the_setting_or_the_usable_cores():
    assert ExperimentSection(workers=3).resolved_workers() == 3
    assert ExperimentSection().resolved_workers() == config_module.usable_cores()


def test_bad_workers_fail_naming_the_key():
    with pytest.raises(ConfigError, match="experiment.workers"):
        load_config(None, ["experiment.workers=0"])


def test_unset_workers_stay_out_of_the_resolved_config():
    assert "workers" not in load_config(None).to_toml()
    assert "workers = 2" in load_config(None, ["experiment.workers=2"]).to_toml()
