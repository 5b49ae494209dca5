"""The evidence report's arithmetic and its sections (sweeps, E1 frontiers, E2/E2B fleets,
E2W, E3), built from synthetic stored runs alone."""

import math

import pytest

from deqfl.cli.main import main
from deqfl.experiments.config import load_config
from deqfl.experiments.reproduce.analysis import mb_to_target, rounds_to_target, stat, within_spread
from deqfl.experiments.reproduce.report import build_report
from deqfl.experiments.reproduce.store import load_results, save_result
from deqfl.experiments.reproduce.suite import FULL, RunSpec, build_suite


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


def test_e3_ranks_the_rules_not_fednovas_sgd_control_and_compares_fednova_with_it(tmp_path):
    store = tmp_path / "store"
    for seed in (0, 1):
        for method, final in (("fednova", 0.50), ("fedavg-sgd", 0.52), ("fedavg", 0.44)):
            save_result(store, *_fake(RunSpec("E3", method, "cifar10", seed, (method,), "alpha=0.1"), final + seed / 100))
    e3 = build_report(load_results(store), tmp_path / "out", "t").read_text().split("## E3")[1].split("## E4")[0]
    assert "| fedavg-sgd | 52.50 ± 0.71 |" in e3  # in the table
    assert "fednova leads fedavg by more than the spread" in e3  # ranked without the control, which is higher
    assert "- fednova against fedavg-sgd: final accuracy -2.00 pt (outside the spread)" in e3


def test_deq_against_each_baseline_states_difference_ratio_and_spread():
    from deqfl.experiments.reproduce.analysis import Stat
    from deqfl.experiments.reproduce.report_common import against_lines

    finals = {"deq": Stat(0.980, 0.001, 3), "cnn": Stat(0.986, 0.001, 3), "resnet": Stat(0.981, 0.002, 3)}
    to_target = {"deq": Stat(7.0, 0.4, 3), "cnn": Stat(11.5, 1.6, 3), "resnet": Stat(7.5, 1.0, 3)}
    lines = against_lines("deq", finals, to_target)
    assert lines[0] == "- deq against cnn: final accuracy -0.60 pt (outside the spread); MB to target x0.61 (outside the spread)"
    assert lines[1] == "- deq against resnet: final accuracy -0.10 pt (within the spread); MB to target x0.93 (within the spread)"
    assert against_lines("deq", finals)[0] == "- deq against cnn: final accuracy -0.60 pt (outside the spread)"
    single = against_lines("deq", {"deq": Stat(0.98, 0.0, 1), "cnn": Stat(0.99, 0.0, 1)})
    assert single == ["- deq against cnn: final accuracy -1.00 pt (one seed: no spread known)", ""]


def _fake_frontier(spec: RunSpec, model: str, final: float, mb: float):
    """A frontier run whose rounds each send `mb` MB and reach `final` in round 3."""
    spec, summary, rounds = _fake(spec, final)
    rounds = [dict(r, bytes_up=mb * 1e6 / 2, bytes_down=mb * 1e6 / 2, accuracy=final if r["round"] >= 3 else 0.5)
              for r in rounds]
    return spec, dict(summary, model=model), rounds


def test_frontier_section_places_each_deq_width_against_the_explicit_points(tmp_path):
    store = tmp_path / "store"
    points = [  # (experiment, family, group, model, final accuracy, MB per round)
        ("E1", "deq", "", "deq-mnist", 0.85, 0.6), ("E1F", "deq", "channels=8", "deq-mnist", 0.80, 0.2),
        ("E1F", "deq", "channels=32", "deq-mnist", 0.90, 2.0),
        ("E1", "cnn", "", "cnn-small", 0.88, 1.6), ("E1F", "cnn", "widths=8-16", "cnn-small", 0.855, 0.7),
        ("E1F", "cnn", "widths=32-64", "cnn-small", 0.89, 4.0),
        ("E1", "resnet", "", "resnet-small", 0.87, 2.0), ("E1", "unrolled", "", "unrolled-mnist", 0.99, 6.0),
    ]
    for experiment, family, group, model, final, mb in points:
        options = ("model.options={" + group.replace("-", ", ").replace("=", "=[" if "-" in group else "=")
                   + ("]" if "-" in group else "") + "}",) if group else ()
        overrides = ("data.dataset=fashion-mnist", f"model.name={model}", "fleet.preset=homogeneous") + options
        save_result(store, *_fake_frontier(RunSpec(experiment, family, "fashion-mnist", 0, overrides, group),
                                           model, final, mb))
    text = build_report(load_results(store), tmp_path / "out", "t").read_text()
    section = text.split("## E1F frontiers")[1].split("\n## ")[0]
    rows = [line for line in section.splitlines() if line.startswith("| deq") or line.startswith("| cnn")]
    assert [r.split(" | ")[1] for r in rows] == ["channels=8", "channels=16", "channels=32",
                                                 "widths=8-16", "widths=16-32", "widths=32-64"]  # E1's width named
    assert "| 0.600 | 3.0 | 1.80 | 16.94 (at cap 16) | 85.00 | 1 |" in rows[1]  # MB, rounds, MB to target, MACs
    assert "| 0.81 | 85.50 |" in rows[3]  # cnn widths 8-16 on 28x28: 0.81 M MACs (the count is tested in test_cifar_bench)
    assert "unrolled" not in section
    lines = {line.split(" (")[0]: line for line in section.splitlines() if line.startswith("- deq")}
    # 16 channels: the 0.7 MB CNN is within 1 point (0.5 pt better) but sends more; no explicit model is as small
    assert "smaller than every explicit model" in lines["- deq channels=16"]
    assert "MACs per training sample x" in lines["- deq channels=16"] and "(at cap 16: an upper bound)" in lines["- deq channels=16"]
    assert "the smallest, cnn widths=8-16, sends x1.17 its bytes per round and ends +0.50 pt" in lines["- deq channels=16"]
    assert "smallest explicit model at most 1 point below it is cnn widths=8-16 (-0.50 pt for the DEQ" in lines["- deq channels=16"]
    assert "x0.86" in lines["- deq channels=16"]  # 0.6 / 0.7 MB per round
    # 32 channels at 2.0 MB: the 1.6 MB CNN sends less but is less accurate, so not below
    assert "above the explicit frontier: every explicit model with at most" in lines["- deq channels=32"]
    assert "is cnn widths=32-64" in lines["- deq channels=32"]
    assert "at most 1 point below it is cnn widths=8-16 (-5.50 pt" in lines["- deq channels=8"]
    assert "x0.29" in lines["- deq channels=8"]
    assert (tmp_path / "out" / "e1f_fashion-mnist_frontier.png").stat().st_size > 1000


def test_frontier_section_takes_cifar10_e1_models_by_family(tmp_path):
    from deqfl.experiments.reproduce import cifar_protocol as cp  # noqa: PLC0415

    store = tmp_path / "store"
    for label, final, mb in (("mdeq-small-8", 0.70, 0.7), ("resnet-8", 0.69, 0.6), ("cnn-w32", 0.62, 0.5)):
        spec = next(s for s in cp.cifar_suite(cp.CPU, ("E1",)) if s.method == label)
        model = next(o for o in cp.MODELS[label] if o.startswith("model.name=")).split("=")[1]
        save_result(store, *_fake_frontier(spec, model, final, mb))
    # a CIFAR-10 sweep run is no frontier point
    sweep = next(s for s in cp.sweep(cp.CPU) if s.method == "resnet-14")
    save_result(store, *_fake_frontier(sweep, "resnet-14", 0.9, 0.9))
    text = build_report(load_results(store), tmp_path / "out", "t").read_text()
    section = text.split("## E1F frontiers")[1].split("\n## ")[0]
    assert "### cifar10 (target 60%)" in section
    rows = [line.split(" | ")[:2] for line in section.splitlines() if line.startswith("| ") and " | cifar" not in line]
    assert rows[1:] == [["| deq", "mdeq-small-8"], ["| cnn", "cnn-w32"], ["| resnet", "resnet-8"]]
    deq = next(line for line in section.splitlines() if line.startswith("- deq mdeq-small-8"))
    # resnet-8 sends less (0.6 MB) and is 1 point less accurate; cnn-w32 sends less and is 8 points less
    assert "above the explicit frontier" in deq and "at most 1 point below it is resnet resnet-8" in deq
    assert (tmp_path / "out" / "e1f_cifar10_frontier.png").exists()


def test_frontier_dominated_deq_is_said_to_lie_below():
    from deqfl.experiments.reproduce.frontier_report import FrontierPoint, deq_position  # noqa: PLC0415

    def point(family, mb, final):
        return FrontierPoint(family, "w", 1, mb, stat([final]), stat([mb * 3]), stat([3]), 1)

    text = deq_position(point("deq", 0.6, 0.84), [point("cnn", 0.5, 0.88)])
    assert "below the explicit frontier: cnn w sends x0.83 the bytes per round and ends +4.00 pt" in text
    assert "one seed" in text


def test_e2b_section_reports_capped_solves_per_tier_and_the_residual(tmp_path):
    store = tmp_path / "store"
    for method, fleet, final in (("deq-quality", "mixed", 0.86), ("deq-fedavg", "mixed", 0.85),
                                 ("cnn-heterofl", "mixed", 0.84), ("deq-fedavg", "all-strong", 0.87)):
        for seed in (0, 1):
            spec, summary, rounds = _fake(RunSpec("E2B", method, "fashion-mnist", seed, (method,), fleet), final)
            deq = method.startswith("deq")
            for i, row in enumerate(rounds):
                row["global_residual"] = 0.1 / (i + 1) if deq else None
                if deq:  # 2 of the 4 strong updates stopped at the cap (mean = cap), every weak one
                    row["clients"] = ([{"tier": "strong", "weight": 0.15, "forward_cap": 16, "iterations": it}
                                       for it in (16.0, 12.0)] +
                                      [{"tier": "weak", "weight": 0.2, "forward_cap": 4, "iterations": 4.0}] * 2)
            if fleet == "all-strong":
                for row in rounds:
                    row["clients"] = [c for c in row["clients"] if c["tier"] == "strong"]
            save_result(store, spec, dict(summary, global_residual=0.025 if deq else None), rounds)
    stored = load_results(store)
    deq_round = next(r for r in stored if r["method"] == "deq-quality")["rounds"][0]
    assert deq_round["tier_solves"] == {"strong": {"caps": [16, 16], "iterations": [16.0, 12.0]},
                                        "weak": {"caps": [4, 4], "iterations": [4.0, 4.0]}}
    assert "tier_solves" not in next(r for r in stored if r["method"] == "cnn-heterofl")["rounds"][0]
    text = build_report(stored, tmp_path / "out", "t").read_text()
    section = text.split("## E2B")[1]
    quality = next(line for line in section.splitlines() if line.startswith("| deq-quality"))
    # strong means 16 (every solve capped) and 12 (between 0 and 11/15 capped); every weak solve capped
    assert ("strong: 14.0 of 16, capped 50-87% (last round 14.0 of 16, capped 50-87%); "
            "weak: 4.0 of 4, capped 100-100% (last round 4.0 of 4, capped 100-100%)") in quality
    assert "1.0e-01 ± 0.0e+00 → 2.5e-02 ± 0.0e+00" in quality
    heterofl = next(line for line in section.splitlines() if line.startswith("| cnn-heterofl"))
    assert "| n/a | n/a |" in heterofl  # no solves, no residual
    assert "- deq-quality (mixed) against cnn-heterofl (mixed): final accuracy +2.00 pt" in section
    strong = next(line for line in section.splitlines() if line.startswith("| deq-fedavg | all-strong"))
    assert strong.endswith("| n/a | 2 |")  # no weak tier: no weak share
    assert (tmp_path / "out" / "e2b_residual.png").exists()


def test_e2_section_adds_solves_residual_and_target_where_runs_recorded_solves(tmp_path):
    store = tmp_path / "store"
    runs = (("mnist", "deq-quality", "mixed", 0.97, False), ("cifar10", "deq-quality", "mixed", 0.55, True),
            ("cifar10", "deq-drop-weak", "mixed", 0.50, True), ("cifar10", "cnn-heterofl", "mixed", 0.58, False),
            ("cifar10", "deq-fedavg", "all-strong", 0.552, True))
    for dataset, method, fleet, final, solves in runs:
        spec, summary, rounds = _fake(RunSpec("E2", method, dataset, 0, (dataset, method, fleet), fleet), final)
        for i, row in enumerate(rounds):
            row["global_residual"] = 0.2 / (i + 1) if solves else None
            if solves:  # every weak update stopped at its cap 2; strong ones took 4 of 8
                row["clients"] = ([{"tier": "strong", "weight": 0.3, "forward_cap": 8, "iterations": 4.0}] +
                                  [{"tier": "weak", "weight": 0.2, "forward_cap": 2, "iterations": 2.0}] * 2)
        save_result(store, spec, dict(summary, global_residual=0.05 if solves else None), rounds)
    text = build_report(load_results(store), tmp_path / "out", "t").read_text()
    section = text.split("## E2 heterogeneity")[1].split("\n## ")[0]
    mnist = section.split("### mnist, fleet mixed")[1].split("###")[0]
    assert "forward solves" not in mnist  # runs stored without solves keep the plain table
    cifar = section.split("### cifar10, fleet mixed")[1]
    quality = next(line for line in cifar.splitlines() if line.startswith("| deq-quality"))
    assert "strong: 4.0 of 8, capped 0-43% (last round 4.0 of 8, capped 0-43%); weak: 2.0 of 2, capped 100-100%" in quality
    assert "2.0e-01 → 5.0e-02" in quality
    heterofl = next(line for line in cifar.splitlines() if line.startswith("| cnn-heterofl"))
    assert "| n/a | n/a |" in heterofl and heterofl.count("|") == quality.count("|")
    assert "- against deq-fedavg (all-strong), final accuracy: -0.20 pt (s0 -0.20)" in cifar
    assert "**holds (within 0.5 pt)**" in cifar
    assert "spread over seeds unknown, not judged" in cifar  # one seed: the lead cannot be judged
    assert (tmp_path / "out" / "e2_residual_cifar10.png").exists()
    assert not (tmp_path / "out" / "e2_residual_mnist.png").exists()


def test_capped_share_bounds_follow_from_the_mean_iterations():
    from deqfl.experiments.reproduce.fleet_report import capped_share_bounds  # noqa: PLC0415

    assert capped_share_bounds(4.0, 4) == (1.0, 1.0)
    assert capped_share_bounds(1.0, 16) == (0.0, 0.0)  # every solve converged at once
    lo, hi = capped_share_bounds(3.5, 4)  # half at 4 and half at 3, or at most 5/6 at 4 and the rest at 1
    assert lo == pytest.approx(0.5) and hi == pytest.approx(2.5 / 3)


def test_e2w_section_answers_the_iteration_target_against_e2b_plain_run(tmp_path):
    store = tmp_path / "store"
    # (experiment, method, seed, final, iterations per step, anytime curve)
    plain_curve = {"1": 0.70, "2": 0.80, "4": 0.84, "8": 0.86, "16": 0.86}
    for experiment, method, seed, final, iterations, curve in (
        ("E2B", "deq-fedavg", 0, 0.86, 12.0, plain_curve),
        ("E2B", "deq-fedavg", 1, 0.80, 3.0, plain_curve),
        ("E2B", "deq-fedavg", 2, 0.50, 1.0, plain_curve),  # a seed E2W has not run: not compared
        ("E2W", "deq-warm", 0, 0.858, 5.0, plain_curve),  # against seed 0 alone: x2.4, -0.2 pt
        ("E2W", "deq-cap4", 0, 0.83, 4.0, plain_curve),
        ("E2W", "deq-cap4", 1, 0.79, 1.5, plain_curve),  # over seeds 0 and 1: x7.5/2.75, -2 pt
        ("E2W", "deq-correction", 0, 0.85, 12.0, {"1": 0.80, "2": 0.856, "4": 0.85, "8": 0.85, "16": 0.85}),  # -1 pt
        # equal accuracy, x1.5 fewer training iterations, x4 smaller inference budget: judged on training alone
        ("E2W", "deq-correction-w0.1-cap4", 0, 0.86, 8.0, {"1": 0.80, "2": 0.856, "4": 0.86, "8": 0.86, "16": 0.86}),
    ):
        overrides = (f"experiment.name={method}",)  # valid overrides: the section counts each run's MACs from them
        spec, summary, rounds = _fake(RunSpec(experiment, method, "fashion-mnist", seed, overrides, "all-strong"), final, curve)
        for row in rounds:
            row["clients"] = [{"tier": "strong", "weight": 0.5, "forward_cap": 16, "iterations": iterations}] * 2
        save_result(store, spec, summary, rounds)
    text = build_report(load_results(store), tmp_path / "out", "t").read_text()
    section = text.split("## E2W")[1].split("\n## ")[0]
    plain = next(line for line in section.splitlines() if line.startswith("| deq-plain"))
    # seeds 0 and 1; equal K: 8 reaches each seed's own accuracy at K=16 minus 0.5
    assert "| 16 ± 0 | 83.00 ± 4.24 | 7.5 ± 6.4 |" in plain and plain.endswith("| 8 ± 0 | 2 |")
    warm, cap4 = (next(line for line in section.splitlines() if line.startswith(f"| {m} |")) for m in ("deq-warm", "deq-cap4"))
    macs = [float(line.split(" | ")[6].split(" ")[0]) for line in (warm, cap4)]
    assert macs[0] > macs[1] > 0  # 5 iterations per step against 2.75 on average, the same model
    assert ("deq-warm: final accuracy -0.20 pt; training iterations x2.40 fewer: **holds** (one seed); inference "
            "budget for deq-plain's accuracy x1.00 smaller (not the target's measure).") in section
    # correction: K=2 reaches plain's accuracy (x4 smaller), but its final accuracy is 1 point lower, and the
    # target's measure is the training iterations (x1.00): it does not hold
    assert "deq-correction: final accuracy -1.00 pt; training iterations x1.00 fewer: **does not hold** (one seed); " \
           "inference budget for deq-plain's accuracy x4.00 smaller" in section
    assert "deq-correction-w0.1-cap4: final accuracy +0.00 pt; training iterations x1.50 fewer: **does not hold** " \
           "(one seed); inference budget for deq-plain's accuracy x4.00 smaller (not the target's measure)." in section
    assert "- Control deq-cap4 (neither warm starts nor correction): final accuracy -2.00 pt; training iterations " \
           "x2.73 fewer (2 seeds)." in section


def test_borrowed_runs_are_the_other_experiments_runs_a_section_reads(tmp_path):
    from deqfl.experiments.reproduce.suite import borrowed_runs  # noqa: PLC0415

    store = tmp_path / "store"
    for spec in (RunSpec("E2B", "deq-fedavg", "fashion-mnist", 0, ("p0",), "all-strong"),
                 RunSpec("E2B", "deq-fedavg", "fashion-mnist", 1, ("p1",), "all-strong"),  # a seed not chosen
                 RunSpec("E2B", "deq-fedavg", "fashion-mnist", 0, ("m0",), "mixed"),  # not the plain run
                 RunSpec("E2", "deq-quality", "mnist", 0, ("q0",), "mixed"),
                 RunSpec("E2", "deq-quality", "mnist", 0, ("q1",), "all-weak")):
        save_result(store, *_fake(spec, 0.8))
    stored = load_results(store)
    e2w = [s for s in build_suite(FULL, ("E2W",)) if s.seed == 0]
    assert [(r["experiment"], r["group"], r["seed"]) for r in borrowed_runs(e2w, stored)] == [("E2B", "all-strong", 0)]
    e3 = [s for s in build_suite(FULL, ("E3",)) if s.seed == 0 and s.dataset == "mnist"]
    assert [(r["method"], r["group"]) for r in borrowed_runs(e3, stored)] == [("deq-quality", "mixed")]
    assert borrowed_runs([s for s in build_suite(FULL, ("E1",))], stored) == []


def test_run_macs_add_each_correction_point_the_training_cap_allows():
    from deqfl.deq.accounting import correction_steps  # noqa: PLC0415
    from deqfl.experiments.reproduce.compute import run_macs  # noqa: PLC0415
    from deqfl.models import build_model  # noqa: PLC0415
    from deqfl.models.macs import correction_point_macs, macs_at_iterations  # noqa: PLC0415

    rounds = [{"round": 1, "tier_solves": {"strong": {"caps": [8, 8], "iterations": [3.0, 4.0]}}}]
    plain = ["model.options={channels=4}"]
    corrected = plain + ["train.fixed_point_correction=0.1", "train.correction_points=3"]
    model = build_model("deq-mnist", (1, 28, 28), channels=4)
    cap = max(t.forward_cap for t in load_config(None, plain).fleet.resolved_tiers())
    base, how = run_macs({"overrides": plain, "dataset": "mnist", "rounds": rounds})
    assert how == "measured" and base == macs_at_iterations(model, (1, 28, 28), 3.5)
    with_points, _ = run_macs({"overrides": corrected, "dataset": "mnist", "rounds": rounds})
    points = len(correction_steps(cap, 3))
    assert points >= 1 and with_points == pytest.approx(base + points * correction_point_macs(model, (1, 28, 28)))
