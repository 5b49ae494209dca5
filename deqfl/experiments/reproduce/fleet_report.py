"""The report's fleet sections, E2 (heterogeneity) and E2B (budgets that bind): per fleet
and method the final and per-tier accuracy, the weak tier's fusion weight, and where runs
recorded them, each tier's forward solves against its cap and the global residual."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from deqfl.experiments.reproduce.analysis import Stat, stat  # noqa: E402
from deqfl.experiments.reproduce.budget_targets import budget_target_lines  # noqa: E402
from deqfl.experiments.reproduce.report_common import (  # noqa: E402
    against_lines,
    final_stat,
    group_runs,
    md_table,
    rank_verdict,
    save_figure,
    sci,
    weak_weight_share,
)
from deqfl.experiments.reproduce.suite import E2B_CAPS, E2B_MAX_NORM  # noqa: E402


def section_e2(results: list[dict[str, Any]], out: Path) -> list[str]:
    """E2's table per data set and fleet; where the runs recorded their solves (the CIFAR-10
    protocol's runs), also each tier's forward solves against its cap and the global residual,
    with a plot of the residual over rounds per data set."""
    groups = group_runs(results, "E2", ("dataset", "group", "method"))
    if not groups:
        return []
    lines = ["## E2 heterogeneity (mixed: half the clients at a quarter of the budget)", ""]
    tables: dict[tuple, list] = defaultdict(list)
    finals: dict[tuple, dict[str, Stat]] = defaultdict(dict)
    with_solves: set[tuple] = set()
    residuals: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(dict)
    for (dataset, fleet, method), runs in groups.items():
        tiers = _tiers(runs)
        tier_text = _tier_accuracy_text(runs, tiers)
        clients = [(r["rounds"][-1].get("client_accuracy") or {}) for r in runs]
        client_text = (f"{stat([c.get('mean') for c in clients]).format(100)} / "
                       f"{stat([c.get('p10') for c in clients]).format(100)}")
        sim = stat([r["summary"]["simulated_seconds"] / max(1, len(r["rounds"])) for r in runs])
        weak_share = stat([w for w in (weak_weight_share(r["rounds"]) for r in runs) if w is not None])
        finals[(dataset, fleet)][method] = final_stat(runs)
        solves = _solves_cell(runs, tiers)
        row = [method, finals[(dataset, fleet)][method].format(100), tier_text, client_text,
               weak_share.format(100, 1), sim.format(digits=3), str(len(runs))]
        if solves is not None:
            with_solves.add((dataset, fleet))
            row[5:5] = [solves, _residual_cell(runs)]
            if row[6] != "n/a":
                residuals[dataset][f"{method} ({fleet})"] = runs[0]["rounds"]
        tables[(dataset, fleet)].append(row)
    if with_solves:
        lines += [SOLVES_LEGEND, ""]
    for (dataset, fleet), rows in tables.items():
        lines += [f"### {dataset}, fleet {fleet}", ""]
        header = ["method", "final accuracy (%)", "accuracy at each tier's budget (%)",
                  "client held-back accuracy mean / p10 (%)", "weak tier's fusion weight (%)",
                  "simulated s / round", "seeds"]
        if (dataset, fleet) in with_solves:
            header[5:5] = ["forward solves per tier (all rounds; last round)", "global residual round 1 → final"]
            rows = [row if len(row) == len(header) else [*row[:5], "n/a", "n/a", *row[5:]] for row in rows]
        lines += md_table(header, rows)
        verdict = rank_verdict(finals[(dataset, fleet)], "final accuracy")
        if verdict:
            lines += [verdict, ""]
        lines += against_lines("deq-quality", finals[(dataset, fleet)])
        if fleet == "mixed" and (dataset, fleet) in with_solves:
            lines += budget_target_lines(results, "E2", dataset)
    for dataset, series in residuals.items():
        seed = min(r["seed"] for r in results if r["experiment"] == "E2" and r["dataset"] == dataset)
        path = _plot_residuals(series, out / f"e2_residual_{dataset}.png",
                               f"E2 {dataset}: global residual over rounds (seed {seed})")
        lines += [f"![E2 {dataset} global residual]({path.name})", ""]
    return lines


SOLVES_LEGEND = ("Forward solves per tier: each fused client's mean forward iterations per training step, "
                 "averaged over clients and rounds (and in the last round alone), against the tier's cap; "
                 "capped lo-hi%: bounds on the share of training solves that stopped at the cap, from each "
                 "client's mean m (a converged solve takes 1 to cap - 1 iterations, so the share lies in "
                 "[1 - (cap - m), (m - 1) / (cap - 1)]); means over seeds.")


def capped_share_bounds(iterations: float, cap: float) -> tuple[float, float]:
    """Bounds on the share p of a client's solves that stopped at the cap, from its mean
    iterations m per solve: a solve that converged took between 1 and cap - 1 iterations,
    so m <= p * cap + (1 - p) * (cap - 1) and m >= p * cap + (1 - p), i.e.
    max(0, 1 - (cap - m)) <= p <= (m - 1) / (cap - 1)."""
    if cap <= 1:
        return 1.0, 1.0
    return max(0.0, 1.0 - (cap - iterations)), min(1.0, max(0.0, (iterations - 1) / (cap - 1)))


def tier_solves(rounds: list[dict[str, Any]], tier: str) -> tuple[float, float, float, float] | None:
    """A tier's fused clients over `rounds`: mean forward iterations per training step, mean
    cap, and the mean lower and upper bounds on the share of capped solves
    (`capped_share_bounds` per client update); None when no solves were recorded."""
    pairs = []
    for row in rounds:
        solves = (row.get("tier_solves") or {}).get(tier)
        if solves:
            pairs += zip(solves["iterations"], solves["caps"])
    if not pairs:
        return None
    bounds = [capped_share_bounds(i, c) for i, c in pairs]
    n = len(pairs)
    return (sum(i for i, _ in pairs) / n, sum(c for _, c in pairs) / n,
            sum(lo for lo, _ in bounds) / n, sum(hi for _, hi in bounds) / n)


def _solves_text(runs: list[dict[str, Any]], tier: str, last: bool) -> str | None:
    """"iterations of cap, capped lo-hi%" for a tier over all rounds or the last round only,
    means over the runs (seeds)."""
    per_run = [tier_solves(r["rounds"][-1:] if last else r["rounds"], tier) for r in runs]
    per_run = [v for v in per_run if v is not None]
    if not per_run:
        return None
    it, cap, lo, hi = (sum(v[i] for v in per_run) / len(per_run) for i in range(4))
    return f"{it:.1f} of {cap:g}, capped {100 * lo:.0f}-{100 * hi:.0f}%"


def _tiers(runs: list[dict[str, Any]]) -> list[str]:
    """The tiers any of the runs reported an accuracy for, sorted."""
    return sorted({t for r in runs for t in r["summary"].get("tier_accuracy", {})})


def _tier_accuracy_text(runs: list[dict[str, Any]], tiers: list[str]) -> str:
    """"tier mean ± std, ..." of the global model's accuracy at each tier's budget (%)."""
    return ", ".join(f"{t} {stat([r['summary']['tier_accuracy'].get(t) for r in runs]).format(100)}" for t in tiers)


def _solves_cell(runs: list[dict[str, Any]], tiers: list[str]) -> str | None:
    """Each tier's forward solves over all rounds and the last round (`_solves_text`); None
    when the runs recorded no solves."""
    solves = [f"{t}: {_solves_text(runs, t, False)} (last round {_solves_text(runs, t, True)})"
              for t in tiers if _solves_text(runs, t, False) is not None]
    return "; ".join(solves) if solves else None


def _residual_cell(runs: list[dict[str, Any]]) -> str:
    """The global residual after round 1 → after the last round, means over the runs."""
    first = stat([r["rounds"][0].get("global_residual") for r in runs if r["rounds"]])
    last = stat([r["summary"].get("global_residual") for r in runs])
    return f"{sci(first)} → {sci(last)}" if last.mean is not None else "n/a"


def _plot_residuals(series: dict[str, list[dict[str, Any]]], path: Path, title: str) -> Path:
    """The global residual over rounds, one line per labelled run, on a log scale."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, rounds in series.items():
        ax.plot([r["round"] for r in rounds], [r["global_residual"] for r in rounds], marker="o", label=label)
    ax.set(yscale="log", xlabel="round", ylabel="global relative residual", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def section_e2b(results: list[dict[str, Any]], out: Path) -> list[str]:
    """E2B: the mixed fleet where the weak cap truncates the looser cell's solves."""
    groups = group_runs(results, "E2B", ("dataset", "group", "method"))
    if not groups:
        return []
    lines = [f"## E2B budgets that bind (DEQ cell max_norm {E2B_MAX_NORM:g}; caps: strong {E2B_CAPS[0]}, "
             f"weak {E2B_CAPS[1]})", "", SOLVES_LEGEND, ""]
    tables: dict[str, list] = defaultdict(list)
    finals: dict[str, dict[str, Stat]] = defaultdict(dict)
    residuals: dict[str, list[dict[str, Any]]] = {}
    for (dataset, fleet, method), runs in groups.items():
        key = f"{method} ({fleet})"
        tiers = _tiers(runs)
        finals[dataset][key] = final_stat(runs)
        residual = _residual_cell(runs)
        tables[dataset].append([
            method, fleet, finals[dataset][key].format(100),
            _tier_accuracy_text(runs, tiers),
            _solves_cell(runs, tiers) or "n/a", residual,
            stat([w for w in (weak_weight_share(r["rounds"]) for r in runs) if w is not None]).format(100, 1), str(len(runs)),
        ])
        if residual != "n/a":
            residuals[f"{dataset} {key}"] = runs[0]["rounds"]
    for dataset, rows in tables.items():
        lines += [f"### {dataset}", ""]
        lines += md_table(["method", "fleet", "final accuracy (%)", "accuracy at each tier's budget (%)",
                         "forward solves per tier (all rounds; last round)", "global residual round 1 → final",
                         "weak tier's fusion weight (%)", "seeds"], rows)
        verdict = rank_verdict(finals[dataset], "final accuracy")
        if verdict:
            lines += [verdict, ""]
        lines += against_lines("deq-quality (mixed)", finals[dataset])
        lines += budget_target_lines(results, "E2B", dataset)
    if residuals:
        seed = min(r["seed"] for r in results if r["experiment"] == "E2B")
        path = _plot_residuals(residuals, out / "e2b_residual.png", f"E2B: global residual over rounds (seed {seed})")
        lines += [f"![E2B global residual]({path.name})", ""]
    return lines
