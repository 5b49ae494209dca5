"""`deqfl bench robustness`: a one-round run on digits writes the JSON report; targets."""

from __future__ import annotations

import json

from deqfl.bench.robustness_bench import evaluate_targets
from deqfl.cli.main import main


def test_bench_robustness_writes_results_and_targets(tmp_path, monkeypatch):
    monkeypatch.setenv("DEQFL_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "robustness.json"
    args = ["bench", "robustness", "--dataset", "digits", "--clients", "5", "--rounds", "1",
            "--train-subset", "600", "--eval-subset", "0", "--attacks", "inject-nan", "--rules", "median",
            "--out", str(out)]
    assert main(args) == 0
    report = json.loads(out.read_text())
    pairs = {(r["attack"], r["rule"]) for r in report["results"]}
    assert pairs == {("none", "median"), ("inject-nan", "median")}
    attacked = next(r for r in report["results"] if r["attack"] == "inject-nan")
    assert attacked["finite"] and attacked["rejected"] == attacked["rejected_malicious"] == attacked["attackers"] == 2
    assert report["targets"]["no_corrupted_model_30pct"]["pass"] is True


def test_targets_fail_when_they_should():
    rows = [
        {"attack": "none", "rule": "median", "final_accuracy": 0.9, "finite": True},
        {"attack": "sign-flip", "rule": "median", "final_accuracy": 0.85, "finite": True},
        {"attack": "inject-nan", "rule": "median", "final_accuracy": 0.9, "finite": False},
        {"attack": "wrong-shape", "rule": "median", "final_accuracy": 0.3, "finite": True},
    ]
    targets = evaluate_targets(rows)
    assert targets["no_corrupted_model_30pct"]["corrupted"] == ["inject-nan/median", "wrong-shape/median"]
    assert not targets["no_corrupted_model_30pct"]["pass"]
    assert not targets["sign_flip_20pct_within_2_points"]["pass"]
    assert targets["sign_flip_20pct_within_2_points"]["drop_points"]["median"] > 2
