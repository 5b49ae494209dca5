"""The evidence suite's composition (which runs, in which order, with which settings), the
claim two workers share, and the CLI's selection, on small inputs. The report built from
stored runs: test_reproduce_report.py."""

import pytest

from deqfl.cli.main import main
from deqfl.experiments.config import load_config
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
    build_suite,
)


def test_suite_is_well_formed():
    quick = build_suite(QUICK)
    assert {s.dataset for s in quick} == {"mnist"} and {s.seed for s in quick} == {0}
    assert {s.experiment for s in quick} == {"E1", "E2", "E3", "E1F"}  # E2B runs on Fashion-MNIST only
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
    phase = {"T0": 0, "T1": 0, "E1": 1, "E2": 1, "E3": 2, "E2B": 3, "E2W": 3, "E1F": 3}
    assert tables == sorted(tables, key=lambda t: phase[t[0]])  # sweeps, E1/E2, E3, E2B/E2W/E1F
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


def test_cli_report_only_and_bad_arguments(tmp_path, capsys):
    assert main(["reproduce", "--report-only", "--out", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "report.md").exists()
    assert main(["reproduce", "--only", "E9"]) == 2
    assert "unknown experiment" in capsys.readouterr().err
    assert main(["reproduce", "--full", "--out", str(tmp_path / "f")]) == 2
    assert "--data-dir" in capsys.readouterr().err


def test_suite_adds_frontier_widths_and_binding_budgets_without_touching_older_runs():
    from deqfl.experiments.reproduce.suite import (  # noqa: PLC0415
        E2B_CAPS, E2B_MAX_NORM, FRONTIER_FAMILIES, FRONTIER_WIDTHS, MODELS,
    )
    from deqfl.models.registry import build_model  # noqa: PLC0415

    full = build_suite(FULL)
    older = build_suite(FULL, only=("T0", "T1", "E1", "E2", "E3", "E4"))
    assert full[:len(older)] == older  # the new experiments come after, the older ids are unchanged
    frontier = [s for s in full if s.experiment == "E1F" and s.seed == 0 and s.dataset == "mnist"]
    assert len(frontier) == 2 * len(FRONTIER_FAMILIES)
    for family in FRONTIER_FAMILIES:
        model = MODELS["mnist"][family]
        sizes = [sum(p.numel() for p in build_model(model, (1, 28, 28), 10, **options).parameters())
                 for options in FRONTIER_WIDTHS[family]]
        e1_size = sum(p.numel() for p in build_model(model, (1, 28, 28), 10).parameters())
        assert sizes[0] < e1_size < sizes[1]  # a narrower and a wider point around E1's
    for spec in frontier:
        assert load_config(None, list(spec.overrides)).model.options  # the width reaches the model
    binding = [s for s in full if s.experiment == "E2B"]
    assert {s.dataset for s in binding} == {"fashion-mnist"} and {s.seed for s in binding} == {0, 1, 2}
    assert E2B_CAPS[1] * 4 == E2B_CAPS[0]
    mixed = load_config(None, list(next(s for s in binding if s.method == "deq-quality").overrides))
    assert mixed.model.options == {"max_norm": E2B_MAX_NORM} and mixed.fusion.weighting == "quality"
    assert sorted(t.forward_cap for t in mixed.fleet.tiers) == [E2B_CAPS[1], E2B_CAPS[0]]
    drop = load_config(None, list(next(s for s in binding if s.method == "deq-drop-weak").overrides))
    assert drop.sampling.min_forward_cap == E2B_CAPS[0]
    heterofl = load_config(None, list(next(s for s in binding if s.method == "cnn-heterofl").overrides))
    assert heterofl.fusion.aggregator == "heterofl" and min(t.width for t in heterofl.fleet.tiers) == 0.5


def test_e2w_runs_are_e2b_all_strong_plus_warm_starts_or_correction():
    from deqfl.experiments.reproduce.suite import E2W_PLAIN, E2W_VARIANTS  # noqa: PLC0415

    full = build_suite(FULL)
    plain = {s.seed: s for s in full if (s.experiment, s.method, s.group) == E2W_PLAIN}
    variants = [s for s in full if s.experiment == "E2W"]
    assert len(variants) == len(E2W_VARIANTS) * 3 and {s.dataset for s in variants} == {"fashion-mnist"}
    for spec in variants:
        cap, extra = E2W_VARIANTS[spec.method]
        fleet = {o for o in spec.overrides if o.startswith("fleet.tiers=")}
        plain_fleet = {o for o in plain[spec.seed].overrides if o.startswith("fleet.tiers=")}
        assert set(spec.overrides) - set(plain[spec.seed].overrides) - fleet == set(extra)
        assert set(plain[spec.seed].overrides) - plain_fleet <= set(spec.overrides)  # the same run but for the variant
        config = load_config(None, list(spec.overrides))
        assert [t.forward_cap for t in config.fleet.tiers] == [cap] and cap in (16, 4)
        assert (fleet == plain_fleet) == (cap == 16)
        assert config.train.warm_start == ("warm" in spec.method)
        assert (config.train.fixed_point_correction > 0) == ("correction" in spec.method)


def test_select_keeps_the_chosen_data_sets_and_seeds(tmp_path, capsys):
    from deqfl.errors import ConfigError  # noqa: PLC0415
    from deqfl.experiments.reproduce.suite import select  # noqa: PLC0415

    full = build_suite(FULL)
    chosen = select(full, "fashion-mnist", "0")
    assert chosen and {s.seed for s in chosen if s.experiment not in ("T0", "T1")} == {0}
    assert {s.dataset for s in chosen} == {"fashion-mnist"}  # the sweeps run on MNIST: dropped
    assert {s.experiment for s in select(full, None, "1")} >= {"T0", "T1"}  # the sweeps keep their seed
    chosen = select(full, "fashion-mnist", "0", "deq-quality,cnn-heterofl")
    assert chosen and {s.method for s in chosen} == {"deq-quality", "cnn-heterofl"}
    widths = select(full, "mnist", "1", "resnet,cnn", "widths=8-16")
    assert {(s.experiment, s.method, s.group, s.seed) for s in widths} == {
        ("E1F", "resnet", "widths=8-16", 1), ("E1F", "cnn", "widths=8-16", 1)}
    for bad in (("cifar10", None), (None, "7"), (None, "x"), (None, None, "no-such-method"), (None, None, " ,"),
                (None, None, None, "no-such-group")):
        with pytest.raises(ConfigError):
            select(full, *bad)
    assert main(["reproduce", "--full", "--report-only", "--only", "E2B", "--seeds", "9",
                 "--out", str(tmp_path / "o")]) == 2
    assert "--seeds" in capsys.readouterr().err
    assert main(["reproduce", "--full", "--report-only", "--only", "E1F", "--datasets", "mnist", "--seeds", "0",
                 "--store", str(tmp_path / "s"), "--out", str(tmp_path / "o")]) == 0
