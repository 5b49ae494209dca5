"""`deqfl bench engine --figures workers`: one benchmark run times 1 and 2 workers."""

import json

from deqfl.cli.main import main


def test_workers_speedup_figure_on_a_small_experiment(tmp_path, monkeypatch):
    monkeypatch.setenv("DEQFL_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "engine.json"
    small = ["data.dataset=digits", "data.num_clients=4", "experiment.rounds=1", "sampling.fraction=1.0",
             "data.eval_subset=0", "evaluation.anytime_every=0", "train.residual_samples=16"]
    args = ["bench", "engine", "--figures", "workers", "--out", str(out)]
    for item in small:
        args += ["--set", item]
    assert main(args) == 0
    figures = json.loads(out.read_text())
    assert figures["workers_bitwise_identical"] is True
    walls = figures["workers_wall_seconds"]
    assert set(walls) == {"1", "2"} and all(w > 0 for w in walls.values())
    assert figures["workers_speedup"] == walls["1"] / walls["2"]
    assert "compute_fraction" not in figures  # only the chosen group ran


def test_unknown_figure_group_is_a_clear_error(capsys):
    assert main(["bench", "engine", "--figures", "speed"]) == 2
    assert "--figures: unknown group(s) ['speed']" in capsys.readouterr().err
