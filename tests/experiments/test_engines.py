"""The engine is chosen from the config, in one place (issue 15, item 8): `run_experiment`
honours `experiment.engine`; a launcher asked to run another engine than the config's
refuses. (The Flower simulation chosen this way: tests/engines/test_flower.py.)"""

import json

import pytest

from deqfl.errors import ConfigError
from deqfl.experiments import engines
from deqfl.experiments.config import load_config
from deqfl.experiments.engines import resolve_engine, run_on_superlink
from deqfl.experiments.runner import run_experiment

SMALL = [
    "data.dataset=digits", "data.num_clients=3", "data.eval_subset=0", "experiment.rounds=1",
    "experiment.threads=1", "sampling.fraction=1.0", "evaluation.anytime_every=0",
]


def _config(tmp_path, *extra):
    return load_config(None, SMALL + [f"data.cache_dir={json.dumps(str(tmp_path / 'cache'))}", *extra])


def test_run_experiment_honours_engine_flower(tmp_path):
    """Before: engine "flower" from Python ran the embedded engine and wrote "flower" in
    the summary. Now the flower launcher runs, and without a SuperLink says so; nothing
    is trained and no run directory is made."""
    pytest.importorskip("flwr")
    with pytest.raises(ConfigError, match="needs the SuperLink address"):
        run_experiment(_config(tmp_path, 'experiment.engine="flower"'), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_run_experiment_runs_embedded_by_default(tmp_path):
    summary = run_experiment(_config(tmp_path), tmp_path / "run")
    assert summary["engine"] == "embedded" and (tmp_path / "run" / "summary.json").exists()
    assert not (tmp_path / "cache" / "flower-partitions").exists()  # written only by Flower's ClientApp


def test_a_launcher_refuses_a_config_naming_another_engine(tmp_path):
    pytest.importorskip("flwr")
    with pytest.raises(ConfigError, match="experiment.engine = 'embedded'"):
        run_on_superlink(_config(tmp_path), tmp_path / "run")
    with pytest.raises(ConfigError, match="stop_after is not available on engine 'flower'"):
        run_on_superlink(_config(tmp_path, 'experiment.engine="flower"', 'flower.superlink="127.0.0.1:1"'),
                         tmp_path / "run", stop_after=1)


def test_flower_engines_without_flower_say_how_to_install_it(tmp_path, monkeypatch):
    """Where flwr is not installed (simulated: its import spec not found)."""
    real = engines.importlib.util.find_spec
    monkeypatch.setattr(engines.importlib.util, "find_spec", lambda name, *a: None if name == "flwr" else real(name, *a))
    for name in ("flower-sim", "flower"):
        with pytest.raises(ConfigError, match=rf"experiment.engine = '{name}' needs Flower: pip install"):
            resolve_engine(_config(tmp_path, f'experiment.engine="{name}"'))
    assert resolve_engine(_config(tmp_path)) is engines.LAUNCHERS["embedded"]


def test_an_unknown_engine_is_refused(tmp_path):
    config = _config(tmp_path)
    object.__setattr__(config.experiment, "engine", "warp-drive")  # past validation, as a hand-built config could be
    with pytest.raises(ConfigError, match="'warp-drive' is not an engine; choose one of embedded, flower-sim, flower"):
        resolve_engine(config)
