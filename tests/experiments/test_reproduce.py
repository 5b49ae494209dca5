"""The evidence suite's arithmetic, store and report on small synthetic inputs."""

import math

import pytest

from deqfl.cli.main import main
from deqfl.experiments.config import load_config
from deqfl.experiments.reproduce.analysis import mb_to_target, rounds_to_target, stat, within_spread
from deqfl.experiments.reproduce.report import build_report
from deqfl.experiments.reproduce.store import load_results, save_result
from deqfl.experiments.reproduce.runner import _claim
from deqfl.experiments.reproduce.suite import (
    E2_ALPHA,
    E3_FROM_E2,
    FULL,
    FUSION_PARAMETERS,
    FUSION_SWEEP,
    LEARNING_RATES,
    QUICK,
    SWEEP_LRS,
    WEAK_CAP,
    RunSpec,
    build_suite,
)

ROUNDS = [
    {"round": 1, "accuracy": 0.90, "bytes_up": 1_000_000, "bytes_down": 500_000},
    {"round": 2, "accuracy": 0.97, "bytes_up": 1_000_000, "bytes_down": 500_000},
    {"round": 3, "accuracy": 0.985, "bytes_up": 1_000_000, "bytes_down": 500_000},
    {"round": 4, "accuracy": 0.99, "bytes_up": 1_000_000, "bytes_down": 500_000},
]


def test_rounds_and_mb_to_target():
    assert rounds_to_target(ROUNDS, 0.98) == 3
    assert mb_to_target(ROUNDS, 0.98) == pytest.approx(4.5)
    assert rounds_to_target(ROUNDS, 0.90) == 1 and mb_to_target(ROUNDS, 0.90) == pytest.approx(1.5)
    assert rounds_to_target(ROUNDS, 0.995) is None and mb_to_target(ROUNDS, 0.995) is None


def test_mean_std_over_seeds_and_spread_rule():
    s = stat([0.97, 0.98, 0.99])
    assert s.mean == pytest.approx(0.98) and s.std == pytest.approx(0.01) and s.n == 3
    assert stat([0.5]).std == 0.0
    missing = stat([None, 3, 5])
    assert missing.n == 2 and missing.missing == 1 and missing.mean == 4 and missing.std == pytest.approx(math.sqrt(2))
    assert stat([None]).mean is None and "not reached" in stat([None]).format()
    assert within_spread(stat([0.97, 0.98, 0.99]), stat([0.975, 0.985, 0.995]))
    assert not within_spread(stat([0.90, 0.91, 0.92]), stat([0.97, 0.98, 0.99]))
    assert within_spread(stat([0.9]), stat([0.99]))  # one seed: no spread known, never ranked


def test_suite_is_well_formed():
    quick = build_suite(QUICK)
    assert {s.dataset for s in quick} == {"mnist"} and {s.seed for s in quick} == {0}
    assert {s.experiment for s in quick} == {"E1", "E2", "E3"}
    ids = [s.run_id for s in quick]
    assert len(ids) == len(set(ids))
    full = build_suite(FULL, only=("E1",))
    assert {s.seed for s in full} == {0, 1, 2} and {s.dataset for s in full} == {"mnist", "fashion-mnist"}
    assert len(full) == 2 * 3 * 4
    assert all(s.experiment == "E1" for s in full)
    drop = [s for s in quick if s.method == "deq-drop-weak"]
    assert drop and all(s.group == "mixed" for s in drop)


def test_full_suite_sweeps_first_then_runs_whole_experiments_with_the_chosen_rates():
    full = build_suite(FULL)
    tables = [(s.experiment, s.dataset) for s in full]
    assert tables == sorted(tables, key=lambda t: (t[0] not in ("T0", "T1"), t[0] == "E3"))  # sweeps, E1/E2, E3
    starts = {t: tables.index(t) for t in dict.fromkeys(tables)}
    assert starts[("E1", "fashion-mnist")] > starts[("E2", "mnist")]  # a data set's headline tables together
    for table, first in starts.items():  # every seed of a table before the next table
        assert all(t == table for t in tables[first:first + tables.count(table)])
    sweep = [s for s in full if s.experiment == "T0"]
    assert len(sweep) == 4 * len(SWEEP_LRS) and {s.seed for s in sweep}.isdisjoint(FULL.seeds)
    for spec in full:
        if spec.experiment != "T0":
            model = next(o.split("=", 1)[1] for o in spec.overrides if o.startswith("model.name="))
            assert f"train.lr={LEARNING_RATES[model]}" in spec.overrides
    mixed = next(s for s in full if s.experiment == "E2" and s.group == "mixed")
    assert f"max_iter={WEAK_CAP}" in next(o for o in mixed.overrides if o.startswith("fleet.tiers="))


def test_fusion_sweep_feeds_e3_and_e3_reuses_the_identical_e2_runs():
    full = build_suite(FULL)
    sweep = [s for s in full if s.experiment == "T1"]
    assert len(sweep) == sum(len(values) for _, values in FUSION_SWEEP.values())
    assert {s.seed for s in sweep}.isdisjoint(FULL.seeds) and all("data.alpha=0.1" in s.overrides for s in sweep)
    for rule, (key, _) in FUSION_SWEEP.items():
        assert {f"{key}={FUSION_PARAMETERS[rule]}"} == {
            o for s in full if s.experiment == "E3" and s.method == rule for o in s.overrides if o.startswith(key)
        }
    e3 = {(s.dataset, s.seed, s.group, s.method): s for s in full if s.experiment == "E3"}
    e2 = {(s.dataset, s.seed, s.method): s for s in full if s.experiment == "E2" and s.group == "mixed"}
    for rule, method in E3_FROM_E2.items():
        assert ("mnist", 0, f"alpha={E2_ALPHA:g}", rule) not in e3
        # the E2 run resolves to the very config of the E3 run it stands in for
        at_01 = e3[("mnist", 0, "alpha=0.1", rule)].overrides
        replaced = [o.replace("data.alpha=0.1", f"data.alpha={E2_ALPHA}") for o in at_01]
        assert load_config(None, list(e2[("mnist", 0, method)].overrides)) == load_config(None, replaced)


def test_a_claimed_run_is_skipped_by_another_worker_until_released(tmp_path):
    lock = tmp_path / "runs" / "r.lock"
    with _claim(lock) as first:
        assert first
        # flock is per open file description: a second open (as another worker's) fails
        with _claim(lock) as second:
            assert not second
    with _claim(lock) as again:
        assert again


def _fake(spec: RunSpec, final: float, anytime: dict | None = None):
    summary = {
        "final_accuracy": final, "model": "m", "parameters": 7436, "commit": "abc",
        "tier_accuracy": {"strong": final, "weak": final - 0.01}, "simulated_seconds": 3.0,
        "global_residual": 1e-4, "anytime": anytime or {},
    }
    clients = [{"tier": "strong", "weight": 0.6}, {"tier": "weak", "weight": 0.4}]
    rounds = [dict(r, accuracy=min(r["accuracy"], final), clients=clients, client_accuracy={"mean": 0.9, "p10": 0.8})
              for r in ROUNDS]
    return spec, summary, rounds


def test_report_builds_from_the_store_alone(tmp_path):
    store = tmp_path / "store"
    specs = []
    for seed, (a, b) in enumerate([(0.99, 0.97), (0.985, 0.968), (0.992, 0.972)]):
        specs += [
            _fake(RunSpec("E1", "deq", "mnist", seed, ("x",)), a),
            _fake(RunSpec("E1", "cnn", "mnist", seed, ("y",)), b),
            _fake(RunSpec("E2", "deq-quality", "mnist", seed, ("z",), "mixed"), a, {"1": 0.5, "4": 0.9, "16": a}),
        ]
    for spec, summary, rounds in specs:
        save_result(store, spec, summary, rounds)
    results = load_results(store)
    assert len(results) == 9
    report = build_report(results, tmp_path / "out", "test report")
    text = report.read_text()
    assert "## E1 communication" in text and "## E2 heterogeneity" in text and "## E4 anytime" in text
    assert "98.90 ± 0.36" in text  # deq final accuracy over 3 seeds
    assert "deq leads cnn by more than the spread" in text
    assert "- deq against cnn: final accuracy +1.90 pt (outside the spread); MB to target: only deq reached it" in text
    e2_row = next(line for line in text.splitlines() if line.startswith("| deq-quality"))
    assert "| 90.00 ± 0.00 / 80.00 ± 0.00 | 40.0 ± 0.0 |" in e2_row  # client mean / p10, weak tier's weight
    assert (tmp_path / "out" / "results.json").exists()
    assert (tmp_path / "out" / "e1_mnist_accuracy_vs_mb.png").stat().st_size > 1000
    assert (tmp_path / "out" / "e4_anytime.png").exists()


def _store_sweep(store, experiment: str, method: str, held_by_group: dict[str, float], **summary) -> None:
    """Store one fake sweep run per group, ending at test accuracy 0.9 and the given held-back accuracy."""
    sweep = {s.group: s for s in build_suite(FULL, only=(experiment,)) if s.method == method}
    for group, held in held_by_group.items():
        spec, fake_summary, rounds = _fake(sweep[group], 0.9)
        rounds[-1]["client_accuracy"] = {"mean": held, "p10": held}
        save_result(store, spec, dict(fake_summary, **summary), rounds)


def test_report_shows_the_learning_rate_sweep(tmp_path):
    store = tmp_path / "store"
    _store_sweep(store, "T0", "deq", {"lr=0.01": 0.91, "lr=0.1": 0.95}, model="deq-mnist")
    # the CLI's default selection includes the sweep
    assert main(["reproduce", "--full", "--report-only", "--store", str(store), "--out", str(tmp_path / "out")]) == 0
    text = (tmp_path / "out" / "report.md").read_text()
    assert "## T0 learning-rate sweep" in text
    row = next(line for line in text.splitlines() if line.startswith("| deq-mnist"))
    assert "91.00 / 90.00" in row and "95.00 / 90.00" in row and "| 0.1 |" in row


def test_report_shows_the_fusion_sweep_and_e3_with_its_e2_stand_ins(tmp_path):
    store = tmp_path / "store"
    _store_sweep(store, "T1", "fednova", {"server_lr=1": 0.2, "server_lr=0.5": 0.9})
    for seed in (0, 1):
        save_result(store, *_fake(RunSpec("E3", "fednova", "mnist", seed, ("a",), "alpha=0.5"), 0.95))
        save_result(store, *_fake(RunSpec("E2", "deq-fedavg", "mnist", seed, ("b",), "mixed"), 0.97))
        save_result(store, *_fake(RunSpec("E2", "deq-fedavg", "mnist", seed, ("c",), "all-weak"), 0.10))
    text = build_report(load_results(store), tmp_path / "out", "t").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| fednova | fusion.server_lr"))
    assert "0.5: 90.00 / 90.00, 1: 20.00 / 90.00 | 0.5 |" in row
    e3 = text.split("## E3")[1].split("## E4")[0]
    assert "| fedavg | 97.00 ± 0.00 | 96.00 ± 0.00 |" in e3 and "| fednova | 95.00 ± 0.00 |" in e3
    fednova = next(line for line in e3.splitlines() if line.startswith("| fednova"))
    assert "| 40.0 ± 0.0 |" in fednova  # the weak tier's share of the fusion weight
    assert "10.00" not in e3  # only the mixed fleet stands in
    assert "fedavg leads fednova by more than the spread" in e3


def test_cli_report_only_and_bad_arguments(tmp_path, capsys):
    assert main(["reproduce", "--report-only", "--out", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "report.md").exists()
    assert main(["reproduce", "--only", "E9"]) == 2
    assert "unknown experiment" in capsys.readouterr().err
    assert main(["reproduce", "--full", "--out", str(tmp_path / "f")]) == 2
    assert "--data-dir" in capsys.readouterr().err


def test_deq_against_each_baseline_states_difference_ratio_and_spread():
    from deqfl.experiments.reproduce.analysis import Stat
    from deqfl.experiments.reproduce.report import _against

    finals = {"deq": Stat(0.980, 0.001, 3), "cnn": Stat(0.986, 0.001, 3), "resnet": Stat(0.981, 0.002, 3)}
    to_target = {"deq": Stat(7.0, 0.4, 3), "cnn": Stat(11.5, 1.6, 3), "resnet": Stat(7.5, 1.0, 3)}
    lines = _against("deq", finals, to_target)
    assert lines[0] == "- deq against cnn: final accuracy -0.60 pt (outside the spread); MB to target x0.61 (outside the spread)"
    assert lines[1] == "- deq against resnet: final accuracy -0.10 pt (within the spread); MB to target x0.93 (within the spread)"
    assert _against("deq", finals)[0] == "- deq against cnn: final accuracy -0.60 pt (outside the spread)"
    single = _against("deq", {"deq": Stat(0.98, 0.0, 1), "cnn": Stat(0.99, 0.0, 1)})
    assert single == ["- deq against cnn: final accuracy -1.00 pt (one seed: no spread known)", ""]
