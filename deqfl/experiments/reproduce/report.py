"""Build `report.md` (tables, PNG plots) and `results.json` from stored runs alone.

Every table states how many seeds each cell rests on (values are mean ± sample std over
seeds). Where the best method's lead over the runner-up is within their spread, the
report says so instead of ranking them.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from deqfl.experiments.reproduce import cifar_protocol  # noqa: E402
from deqfl.experiments.reproduce.analysis import Stat, mb_to_target, rounds_to_target, stat  # noqa: E402
from deqfl.experiments.reproduce.fleet_report import section_e2, section_e2b  # noqa: E402
from deqfl.experiments.reproduce.frontier_report import section_frontier  # noqa: E402
from deqfl.experiments.reproduce.report_common import (  # noqa: E402
    against_lines,
    final_stat,
    group_runs,
    md_table,
    rank_verdict,
    save_figure,
    weak_weight_share,
)
from deqfl.experiments.reproduce.suite import (  # noqa: E402
    E2_ALPHA,
    E3_FROM_E2,
    FUSION_PARAMETERS,
    FUSION_SWEEP,
    LEARNING_RATES,
    TARGETS,
)
from deqfl.experiments.reproduce.warm_report import section_e2w  # noqa: E402
from deqfl.experiments.results import atomic_write_text, json_safe  # noqa: E402


def _sweep_choice(runs: dict[float, dict[str, Any]]) -> tuple[dict[float, str], str]:
    """Per swept value, the cell "held-back / test accuracy (%)" (n/a without a held-back
    figure), and the value with the best held-back accuracy (n/a if none has one)."""
    held = {v: (r["rounds"][-1].get("client_accuracy") or {}).get("mean") for v, r in runs.items()}
    cells = {
        v: f"{100 * held[v]:.2f} / {100 * r['summary']['final_accuracy']:.2f}" if held[v] is not None else "n/a"
        for v, r in runs.items()
    }
    best = max((v for v in held if held[v] is not None), key=lambda v: held[v], default=None)
    return cells, f"{best:g}" if best is not None else "n/a"


def section_t0(results: list[dict[str, Any]], out: Path) -> list[str]:
    """The learning-rate sweep: per model, the clients' held-back accuracy (training-side
    data) and the test accuracy at each rate, the sweep's best rate and the one in use."""
    groups = group_runs(results, "T0", ("method", "group"))
    if not groups:
        return []
    lines = ["## T0 learning-rate sweep (MNIST, FedAvg, homogeneous devices, one seed)", "",
             "Chosen by the clients' held-back accuracy, never by the test set.", ""]
    by_model: dict[str, dict[float, dict[str, Any]]] = defaultdict(dict)
    for (_, group), runs in groups.items():
        run = runs[0]
        by_model[run["summary"]["model"]][float(group.removeprefix("lr="))] = run
    rates = sorted({lr for runs in by_model.values() for lr in runs})
    rows = []
    for model, runs in by_model.items():
        cells, best = _sweep_choice(runs)
        rows.append([model, *[cells.get(lr, "n/a") for lr in rates], best, f"{LEARNING_RATES.get(model, 'n/a')}"])
    lines += md_table(["model", *[f"lr {lr:g}: held-back / test (%)" for lr in rates], "best", "in use"], rows)
    return lines


def section_t1(results: list[dict[str, Any]], out: Path) -> list[str]:
    """The fusion-parameter sweep: per rule and value, held-back / test accuracy, the
    sweep's best value and the one E3 uses."""
    groups = group_runs(results, "T1", ("method", "group"))
    if not groups:
        return []
    lines = ["## T1 fusion-parameter sweep (MNIST, DEQ, mixed fleet, Dirichlet 0.1, one seed)", "",
             "Chosen by the clients' held-back accuracy, never by the test set.", ""]
    rows = []
    for rule, (key, _) in FUSION_SWEEP.items():
        runs = {float(group.split("=", 1)[1]): rs[0] for (method, group), rs in groups.items() if method == rule}
        if not runs:
            continue
        cells, best = _sweep_choice(runs)
        listed = ", ".join(f"{v:g}: {cells[v]}" for v in sorted(runs))
        rows.append([rule, key, listed, best, f"{FUSION_PARAMETERS[rule]:g}"])
    lines += md_table(["rule", "parameter", "value: held-back / test accuracy (%)", "best", "in use"], rows)
    return lines


def section_e1(results: list[dict[str, Any]], out: Path) -> list[str]:
    groups = group_runs(results, "E1", ("dataset", "method"))
    if not groups:
        return []
    lines = ["## E1 communication (FedAvg, homogeneous devices)", ""]
    by_dataset: dict[str, dict[str, list]] = defaultdict(dict)
    for (dataset, method), runs in groups.items():
        by_dataset[dataset][method] = runs
    for dataset, methods in by_dataset.items():
        target = TARGETS.get(dataset, 0.9)
        rows, finals, to_target = [], {}, {}
        for method, runs in methods.items():
            s = runs[0]["summary"]
            per_round = stat([
                (r["rounds"][0]["bytes_up"] + r["rounds"][0]["bytes_down"]) / 1e6 for r in runs if r["rounds"]
            ])
            finals[method] = final_stat(runs)
            to_target[method] = stat([mb_to_target(r["rounds"], target) for r in runs])
            rows.append([
                f"{method} ({s['model']})", f"{s.get('parameters', 'n/a')}", per_round.format(digits=3),
                stat([rounds_to_target(r["rounds"], target) for r in runs]).format(digits=1),
                to_target[method].format(digits=2),
                finals[method].format(100), str(len(runs)),
            ])
        lines += [f"### {dataset} (target {100 * target:.0f}%)", ""]
        lines += md_table(["model", "parameters", "MB per round", "rounds to target", "MB to target",
                         "final accuracy (%)", "seeds"], rows)
        verdict = rank_verdict(finals, "final accuracy")
        if verdict:
            lines += [verdict, ""]
        lines += against_lines("deq", finals, to_target)
        plot = _plot_curves(
            {m: runs[0]["rounds"] for m, runs in methods.items()}, out / f"e1_{dataset}_accuracy_vs_mb.png",
            x="mb", title=f"E1 {dataset}: accuracy against MB (seed {methods[next(iter(methods))][0]['seed']})",
        )
        lines += [f"![E1 {dataset}]({plot.name})", ""]
    return lines


def _e3_runs(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """E3's runs, with E2's mixed-fleet runs standing in for the E3 rules they equal
    (`E3_FROM_E2`, at the default alpha) under their E3 name and alpha group."""
    from_e2 = {method: rule for rule, method in E3_FROM_E2.items()}
    stand_ins = [
        {**r, "experiment": "E3", "method": from_e2[r["method"]], "group": f"alpha={E2_ALPHA:g}"}
        for r in results
        if r["experiment"] == "E2" and r["group"] == "mixed" and r["method"] in from_e2
    ]
    return [r for r in results if r["experiment"] == "E3"] + stand_ins


def section_e3(results: list[dict[str, Any]], out: Path) -> list[str]:
    runs_e3 = _e3_runs(results)
    if not any(r["run_id"].startswith("E3-") for r in runs_e3):
        return []
    groups = group_runs(runs_e3, "E3", ("dataset", "group", "method"))
    lines = ["## E3 fusion ablation (mixed fleet)", "",
             f"At Dirichlet {E2_ALPHA:g}, {' and '.join(E3_FROM_E2)} are E2's mixed-fleet "
             f"{' and '.join(E3_FROM_E2.values())} runs (the same configuration).", ""]
    tables: dict[tuple, list] = defaultdict(list)
    finals: dict[tuple, dict[str, Stat]] = defaultdict(dict)
    for (dataset, alpha, method), runs in groups.items():
        target = TARGETS.get(dataset, 0.9)
        finals[(dataset, alpha)][method] = final_stat(runs)
        tables[(dataset, alpha)].append([
            method, finals[(dataset, alpha)][method].format(100),
            stat([r["summary"].get("tier_accuracy", {}).get("weak") for r in runs]).format(100),
            stat([rounds_to_target(r["rounds"], target) for r in runs]).format(digits=1),
            stat([weak_weight_share(r["rounds"]) for r in runs]).format(100, 1),
            stat([r["summary"].get("global_residual") for r in runs]).format(digits=5), str(len(runs)),
        ])
    for (dataset, alpha), rows in tables.items():
        lines += [f"### {dataset}, Dirichlet {alpha}", ""]
        lines += md_table(["fusion", "final accuracy (%)", "accuracy at the weak budget (%)", "rounds to target",
                         "weak tier's fusion weight (%)", "global residual", "seeds"], rows)
        here, control = finals[(dataset, alpha)], cifar_protocol.SGD_CONTROL
        rules = {m: s for m, s in here.items() if m != control}  # the control is not a fusion rule: not ranked
        verdict = rank_verdict(rules, "final accuracy")
        if verdict:
            lines += [verdict, ""]
        lines += against_lines("quality-residual", rules)
        if control in here:  # FedNova's normalisation alone: the same SGD clients
            lines += against_lines("fednova", {m: here[m] for m in ("fednova", control) if m in here})
    return lines


def section_e4(results: list[dict[str, Any]], out: Path) -> list[str]:
    groups = group_runs(results, "E2", ("dataset", "group", "method"))
    curves = {k: runs for k, runs in groups.items() if runs[0]["summary"].get("anytime")}
    if not curves:
        return []
    lines = ["## E4 anytime inference (final global model of each E2 run)", ""]
    budgets = sorted({int(b) for runs in curves.values() for b in runs[0]["summary"]["anytime"]})
    rows = []
    for (dataset, fleet, method), runs in curves.items():
        cells = [stat([r["summary"]["anytime"].get(str(b)) for r in runs]).format(100, 1) for b in budgets]
        rows.append([dataset, fleet, method, *cells, str(len(runs))])
    lines += md_table(["data set", "fleet", "method", *[f"K={b}" for b in budgets], "seeds"], rows)
    fig, ax = plt.subplots(figsize=(6, 4))
    for (dataset, fleet, method), runs in curves.items():
        curve = runs[0]["summary"]["anytime"]
        ax.plot(budgets, [100 * curve[str(b)] for b in budgets], marker="o", label=f"{dataset} {fleet} {method}")
    ax.set(xscale="log", xlabel="forward iterations at inference", ylabel="test accuracy (%)", title="E4 anytime")
    ax.set_xticks(budgets, [str(b) for b in budgets])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
    path = save_figure(fig, out / "e4_anytime.png")
    return lines + [f"![E4 anytime]({path.name})", ""]


def _plot_curves(series: dict[str, list[dict[str, Any]]], path: Path, x: str, title: str) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, rounds in series.items():
        xs, total = [], 0.0
        for row in rounds:
            total += (row["bytes_up"] + row["bytes_down"]) / 1e6
            xs.append(total if x == "mb" else row["round"])
        ax.plot(xs, [100 * row["accuracy"] for row in rounds], marker="o", label=label)
    ax.set(xlabel="MB communicated (log scale)" if x == "mb" else "round", ylabel="test accuracy (%)", title=title)
    if x == "mb":
        ax.set_xscale("log")  # the models' payloads differ by 10x: a linear axis hides the small ones
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def build_report(results: list[dict[str, Any]], out: Path, title: str, preamble: str = "") -> Path:
    """Write `out/report.md`, its PNG plots and `out/results.json`; returns the report path."""
    out.mkdir(parents=True, exist_ok=True)
    seeds = sorted({r["seed"] for r in results})
    commits = sorted({str(r["summary"].get("commit")) for r in results})
    dates = sorted(r.get("date", "") for r in results)
    machines = sorted({r.get("machine", "unknown") for r in results})
    lines = [f"# {title}", ""]
    if preamble:
        lines += [preamble, ""]
    lines += [
        f"{len(results)} runs; seeds {seeds}; code commits {commits}; finished "
        f"{dates[0] if dates else 'n/a'} to {dates[-1] if dates else 'n/a'} on {', '.join(machines) or 'n/a'}. "
        "Values are mean ± sample standard deviation over seeds; the `seeds` column says how many "
        "each row rests on.", "",
    ]
    for section in (section_t0, section_t1, section_e1, section_frontier, section_e2, section_e2b, section_e2w,
                    section_e3, section_e4):
        lines += section(results, out)
    lines += cifar_protocol.sweep_section(results)
    report = out / "report.md"
    atomic_write_text(report, "\n".join(lines))
    atomic_write_text(out / "results.json", json.dumps(json_safe(results), indent=1, allow_nan=False))
    return report
