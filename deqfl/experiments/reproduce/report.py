"""Build `report.md` (tables, PNG plots) and `results.json` from stored runs alone.

Every table states how many seeds each cell rests on (values are mean ± sample std over
seeds). Where the best method's lead over the runner-up is within their spread, the
report says so instead of ranking them.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from deqfl.experiments.reproduce import cifar_protocol  # noqa: E402
from deqfl.experiments.reproduce.analysis import Stat, mb_to_target, rounds_to_target, stat, within_spread  # noqa: E402
from deqfl.experiments.reproduce.budget_targets import budget_target_lines  # noqa: E402
from deqfl.experiments.reproduce.compute import run_macs  # noqa: E402
from deqfl.experiments.reproduce.suite import (  # noqa: E402
    E2_ALPHA,
    E2B_CAPS,
    E2B_MAX_NORM,
    E3_FROM_E2,
    FRONTIER_FAMILIES,
    FRONTIER_WIDTHS,
    FUSION_PARAMETERS,
    FUSION_SWEEP,
    LEARNING_RATES,
    TARGETS,
    width_label,
)
from deqfl.experiments.reproduce.warm_report import section_e2w  # noqa: E402
from deqfl.experiments.results import atomic_write_text, json_safe  # noqa: E402
from deqfl.models.registry import model_options  # noqa: E402

Group = dict[tuple, list[dict[str, Any]]]


def _group(results: list[dict[str, Any]], experiment: str, keys: tuple[str, ...]) -> Group:
    groups: Group = defaultdict(list)
    for r in results:
        if r["experiment"] == experiment:
            groups[tuple(r[k] for k in keys)].append(r)
    return dict(sorted(groups.items()))


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines + [""]


def _verdict(named: dict[str, Stat], what: str, higher_is_better: bool = True) -> str:
    ranked = sorted(
        ((k, s) for k, s in named.items() if s.mean is not None),
        key=lambda kv: kv[1].mean, reverse=higher_is_better,
    )
    if len(ranked) < 2:
        return ""
    (best, a), (second, b) = ranked[0], ranked[1]
    if a.n < 2 or b.n < 2:
        return f"{what}: one seed, no spread known; not ranked."
    if within_spread(a, b):
        return f"{what}: {best} and {second} are within the spread over seeds; not ranked."
    return f"{what}: {best} leads {second} by more than the spread over seeds."


def _final(runs: list[dict[str, Any]]) -> Stat:
    return stat([r["summary"]["final_accuracy"] for r in runs])


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
    groups = _group(results, "T0", ("method", "group"))
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
    lines += _table(["model", *[f"lr {lr:g}: held-back / test (%)" for lr in rates], "best", "in use"], rows)
    return lines


def section_t1(results: list[dict[str, Any]], out: Path) -> list[str]:
    """The fusion-parameter sweep: per rule and value, held-back / test accuracy, the
    sweep's best value and the one E3 uses."""
    groups = _group(results, "T1", ("method", "group"))
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
    lines += _table(["rule", "parameter", "value: held-back / test accuracy (%)", "best", "in use"], rows)
    return lines


def section_e1(results: list[dict[str, Any]], out: Path) -> list[str]:
    groups = _group(results, "E1", ("dataset", "method"))
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
            finals[method] = _final(runs)
            to_target[method] = stat([mb_to_target(r["rounds"], target) for r in runs])
            rows.append([
                f"{method} ({s['model']})", f"{s.get('parameters', 'n/a')}", per_round.format(digits=3),
                stat([rounds_to_target(r["rounds"], target) for r in runs]).format(digits=1),
                to_target[method].format(digits=2),
                finals[method].format(100), str(len(runs)),
            ])
        lines += [f"### {dataset} (target {100 * target:.0f}%)", ""]
        lines += _table(["model", "parameters", "MB per round", "rounds to target", "MB to target",
                         "final accuracy (%)", "seeds"], rows)
        verdict = _verdict(finals, "final accuracy")
        if verdict:
            lines += [verdict, ""]
        lines += _against("deq", finals, to_target)
        plot = _plot_curves(
            {m: runs[0]["rounds"] for m, runs in methods.items()}, out / f"e1_{dataset}_accuracy_vs_mb.png",
            x="mb", title=f"E1 {dataset}: accuracy against MB (seed {methods[next(iter(methods))][0]['seed']})",
        )
        lines += [f"![E1 {dataset}]({plot.name})", ""]
    return lines


def _spread_word(a: Stat, b: Stat) -> str:
    if a.n < 2 or b.n < 2:
        return "one seed: no spread known"
    return "within the spread" if within_spread(a, b) else "outside the spread"


def _against(reference: str, finals: dict[str, Stat], to_target: dict[str, Stat] | None = None) -> list[str]:
    """One line per other method: the reference method's final-accuracy difference (points)
    and, if given, its MB-to-target ratio, each marked as outside or within the spread
    over seeds."""
    if reference not in finals:
        return []
    lines = []
    for method in (m for m in finals if m != reference):
        parts = []
        a, b = finals[reference], finals[method]
        if a.mean is not None and b.mean is not None:
            spread = _spread_word(a, b)
            parts.append(f"final accuracy {100 * (a.mean - b.mean):+.2f} pt ({spread})")
        if to_target is not None:
            a, b = to_target[reference], to_target[method]
            if a.mean is not None and b.mean is not None:
                spread = _spread_word(a, b)
                parts.append(f"MB to target x{a.mean / b.mean:.2f} ({spread})")
            elif a.mean is not None or b.mean is not None:
                parts.append("MB to target: only " + (reference if a.mean is not None else method) + " reached it")
        if parts:
            lines.append(f"- {reference} against {method}: " + "; ".join(parts))
    return lines + [""] if lines else []


def section_e2(results: list[dict[str, Any]], out: Path) -> list[str]:
    """E2's table per data set and fleet; where the runs recorded their solves (the CIFAR-10
    protocol's runs), also each tier's forward solves against its cap and the global residual,
    with a plot of the residual over rounds per data set."""
    groups = _group(results, "E2", ("dataset", "group", "method"))
    if not groups:
        return []
    lines = ["## E2 heterogeneity (mixed: half the clients at a quarter of the budget)", ""]
    tables: dict[tuple, list] = defaultdict(list)
    finals: dict[tuple, dict[str, Stat]] = defaultdict(dict)
    with_solves: set[tuple] = set()
    residuals: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(dict)
    for (dataset, fleet, method), runs in groups.items():
        tiers = sorted({t for r in runs for t in r["summary"].get("tier_accuracy", {})})
        tier_text = ", ".join(
            f"{t} {stat([r['summary']['tier_accuracy'].get(t) for r in runs]).format(100)}" for t in tiers
        )
        clients = [(r["rounds"][-1].get("client_accuracy") or {}) for r in runs]
        client_text = (f"{stat([c.get('mean') for c in clients]).format(100)} / "
                       f"{stat([c.get('p10') for c in clients]).format(100)}")
        sim = stat([r["summary"]["simulated_seconds"] / max(1, len(r["rounds"])) for r in runs])
        weak_share = stat([w for w in (_weak_share(r["rounds"]) for r in runs) if w is not None])
        finals[(dataset, fleet)][method] = _final(runs)
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
        lines += _table(header, rows)
        verdict = _verdict(finals[(dataset, fleet)], "final accuracy")
        if verdict:
            lines += [verdict, ""]
        lines += _against("deq-quality", finals[(dataset, fleet)])
        if fleet == "mixed" and (dataset, fleet) in with_solves:
            lines += budget_target_lines(results, "E2", dataset)
    for dataset, series in residuals.items():
        seed = min(r["seed"] for r in results if r["experiment"] == "E2" and r["dataset"] == dataset)
        path = _plot_residuals(series, out / f"e2_residual_{dataset}.png",
                               f"E2 {dataset}: global residual over rounds (seed {seed})")
        lines += [f"![E2 {dataset} global residual]({path.name})", ""]
    return lines


def _weak_share(rounds: list[dict[str, Any]]) -> float | None:
    """Mean over rounds (with any weak client fused) of the weak tier's share of the fusion
    weight; None when no weak client was ever fused."""
    shares = []
    for row in rounds:
        weights = row.get("tier_weight") or {}
        total = sum(weights.values())
        if "weak" in weights and total > 0:
            shares.append(weights["weak"] / total)
    return sum(shares) / len(shares) if shares else None


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
    groups = _group(runs_e3, "E3", ("dataset", "group", "method"))
    lines = ["## E3 fusion ablation (mixed fleet)", "",
             f"At Dirichlet {E2_ALPHA:g}, {' and '.join(E3_FROM_E2)} are E2's mixed-fleet "
             f"{' and '.join(E3_FROM_E2.values())} runs (the same configuration).", ""]
    tables: dict[tuple, list] = defaultdict(list)
    finals: dict[tuple, dict[str, Stat]] = defaultdict(dict)
    for (dataset, alpha, method), runs in groups.items():
        target = TARGETS.get(dataset, 0.9)
        finals[(dataset, alpha)][method] = _final(runs)
        tables[(dataset, alpha)].append([
            method, finals[(dataset, alpha)][method].format(100),
            stat([r["summary"].get("tier_accuracy", {}).get("weak") for r in runs]).format(100),
            stat([rounds_to_target(r["rounds"], target) for r in runs]).format(digits=1),
            stat([_weak_share(r["rounds"]) for r in runs]).format(100, 1),
            stat([r["summary"].get("global_residual") for r in runs]).format(digits=5), str(len(runs)),
        ])
    for (dataset, alpha), rows in tables.items():
        lines += [f"### {dataset}, Dirichlet {alpha}", ""]
        lines += _table(["fusion", "final accuracy (%)", "accuracy at the weak budget (%)", "rounds to target",
                         "weak tier's fusion weight (%)", "global residual", "seeds"], rows)
        verdict = _verdict(finals[(dataset, alpha)], "final accuracy")
        if verdict:
            lines += [verdict, ""]
        lines += _against("quality-residual", finals[(dataset, alpha)])
    return lines


def section_e4(results: list[dict[str, Any]], out: Path) -> list[str]:
    groups = _group(results, "E2", ("dataset", "group", "method"))
    curves = {k: runs for k, runs in groups.items() if runs[0]["summary"].get("anytime")}
    if not curves:
        return []
    lines = ["## E4 anytime inference (final global model of each E2 run)", ""]
    budgets = sorted({int(b) for runs in curves.values() for b in runs[0]["summary"]["anytime"]})
    rows = []
    for (dataset, fleet, method), runs in curves.items():
        cells = [stat([r["summary"]["anytime"].get(str(b)) for r in runs]).format(100, 1) for b in budgets]
        rows.append([dataset, fleet, method, *cells, str(len(runs))])
    lines += _table(["data set", "fleet", "method", *[f"K={b}" for b in budgets], "seeds"], rows)
    fig, ax = plt.subplots(figsize=(6, 4))
    for (dataset, fleet, method), runs in curves.items():
        curve = runs[0]["summary"]["anytime"]
        ax.plot(budgets, [100 * curve[str(b)] for b in budgets], marker="o", label=f"{dataset} {fleet} {method}")
    ax.set(xscale="log", xlabel="forward iterations at inference", ylabel="test accuracy (%)", title="E4 anytime")
    ax.set_xticks(budgets, [str(b) for b in budgets])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
    path = _save(fig, out / "e4_anytime.png")
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
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


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


def _width_of(run: dict[str, Any]) -> str:
    """A frontier run's width label: its E1F group, or for an E1 run its model's default
    width (the options E1F varies, at their defaults)."""
    if run["experiment"] == "E1F":
        return run["group"]
    keys = FRONTIER_WIDTHS[run["method"]][0].keys()
    defaults = model_options(run["summary"]["model"])()
    return width_label({k: getattr(defaults, k) for k in keys})


@dataclass(frozen=True)
class FrontierPoint:
    """One width of one family on one data set, over its seeds."""

    family: str
    width: str
    parameters: int | str
    mb_per_round: float
    final: Stat
    to_target: Stat
    rounds: Stat
    seeds: int
    macs: float | None = None
    """Multiply-accumulates per training sample (mean over seeds; `compute.run_macs`)."""
    macs_how: str = ""
    """How `macs` was counted: "explicit", "measured" (a DEQ at its mean forward
    iterations) or "at cap C" (a DEQ with no recorded solves: an upper bound)."""

    @property
    def macs_text(self) -> str:
        if self.macs is None:
            return "n/a"
        return f"{self.macs / 1e6:.2f}" + ("" if self.macs_how in ("explicit", "measured") else f" ({self.macs_how})")

    @property
    def label(self) -> str:
        return f"{self.family} {self.width}"


def _frontier_key(run: dict[str, Any]) -> tuple[str, str] | None:
    """(family, width) of a frontier run: E1 and E1F on the MNIST-like sets (`_width_of`),
    or a CIFAR-10 E1 run, whose method is its model's label (`cifar_protocol.FAMILIES`);
    None for any other run."""
    if run["dataset"] == cifar_protocol.CIFAR:
        if run["experiment"] == "E1" and run["method"] in cifar_protocol.MODELS:
            return cifar_protocol.family(run["method"]), run["method"]
        return None
    if run["experiment"] in ("E1", "E1F") and run["method"] in FRONTIER_FAMILIES:
        return run["method"], _width_of(run)
    return None


def frontier_datasets(results: list[dict[str, Any]]) -> list[str]:
    """The data sets with frontier runs beyond E1's single width: those with E1F runs, and
    CIFAR-10 once any E1 run of its model families is stored."""
    return sorted({r["dataset"] for r in results
                   if r["experiment"] == "E1F" or (r["dataset"] == cifar_protocol.CIFAR and _frontier_key(r))})


def frontier_points(results: list[dict[str, Any]], dataset: str) -> list[FrontierPoint]:
    """E1's and E1F's runs of the frontier families on `dataset`, one point per (family,
    width), ordered by family and then by bytes per round."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        key = _frontier_key(r) if r["dataset"] == dataset else None
        if key is not None:
            groups[key].append(r)
    target = TARGETS.get(dataset, 0.9)
    points = [
        FrontierPoint(
            family, width, runs[0]["summary"].get("parameters", "n/a"),
            stat([_round_mb(r) for r in runs]).mean or 0.0, _final(runs),
            stat([mb_to_target(r["rounds"], target) for r in runs]),
            stat([rounds_to_target(r["rounds"], target) for r in runs]), len(runs), *_macs(runs),
        )
        for (family, width), runs in groups.items()
    ]
    order = {f: i for i, f in enumerate(FRONTIER_FAMILIES)}
    return sorted(points, key=lambda p: (order[p.family], p.mb_per_round))


def _macs(runs: list[dict[str, Any]]) -> tuple[float | None, str]:
    """Mean MACs per training sample over `runs` and how they were counted: measured where
    any run recorded its solves (those runs only), else the first run's way."""
    counted = [run_macs(r) for r in runs if r.get("overrides")]
    if not counted:
        return None, ""
    measured = [m for m, how in counted if how == "measured"]
    if measured:
        return sum(measured) / len(measured), "measured"
    return sum(m for m, _ in counted) / len(counted), counted[0][1]


def _round_mb(run: dict[str, Any]) -> float | None:
    """MB (up + down) of a run's first round."""
    return (run["rounds"][0]["bytes_up"] + run["rounds"][0]["bytes_down"]) / 1e6 if run["rounds"] else None


def deq_position(deq: FrontierPoint, explicit: list[FrontierPoint]) -> str:
    """Where a DEQ point lies against the explicit models' points (means over seeds):
    below the explicit frontier when an explicit model sends no more bytes per round and
    ends more accurate; above it when every such model ends less accurate; beside it when
    no explicit model is as small (then against the smallest). Adds the smallest explicit model within
    1 point below the DEQ (or above it), with the bytes ratio and MB to target."""
    a = deq.final
    if a.mean is None or not explicit:
        return f"{deq.label}: no explicit point to compare with"
    cheaper = [e for e in explicit if e.mb_per_round <= deq.mb_per_round and e.final.mean is not None]
    dominating = [e for e in cheaper if e.final.mean > a.mean]
    if dominating:
        best = max(dominating, key=lambda e: e.final.mean)
        where = (f"below the explicit frontier: {best.label} sends x{best.mb_per_round / deq.mb_per_round:.2f} "
                 f"the bytes per round and ends {100 * (best.final.mean - a.mean):+.2f} pt ({_spread_word(best.final, a)})")
    elif cheaper:
        where = "above the explicit frontier: every explicit model with at most its bytes per round ends less accurate"
    else:
        smallest = min(explicit, key=lambda e: e.mb_per_round)
        where = (f"smaller than every explicit model, so not on their frontier's range: the smallest, "
                 f"{smallest.label}, sends x{smallest.mb_per_round / deq.mb_per_round:.2f} its bytes per round")
        if smallest.final.mean is not None:
            where += (f" and ends {100 * (smallest.final.mean - a.mean):+.2f} pt "
                      f"({_spread_word(smallest.final, a)})")
    near = [e for e in explicit if e.final.mean is not None and e.final.mean >= a.mean - 0.01]
    if near:
        e = min(near, key=lambda e: e.mb_per_round)
        where += (f"; the smallest explicit model at most 1 point below it is {e.label} "
                  f"({100 * (a.mean - e.final.mean):+.2f} pt for the DEQ, {_spread_word(a, e.final)}; "
                  f"DEQ bytes per round x{deq.mb_per_round / e.mb_per_round:.2f}")
        if deq.to_target.mean is not None and e.to_target.mean is not None:
            where += f", MB to target x{deq.to_target.mean / e.to_target.mean:.2f} ({_spread_word(deq.to_target, e.to_target)})"
        if deq.macs and e.macs:
            where += f", MACs per training sample x{deq.macs / e.macs:.2f}" + (
                f" ({deq.macs_how}: an upper bound)" if deq.macs_how.startswith("at cap") else "")
        where += ")"
    else:
        where += "; every explicit model ends more than 1 point below it"
    return f"{deq.label} ({deq.mb_per_round:.3f} MB/round, {a.format(100)}%, {deq.seeds} seed(s)): {where}"


def section_frontier(results: list[dict[str, Any]], out: Path) -> list[str]:
    """E1 and E1F together: each family's accuracy against bytes per round and MB to the
    target, one row per width, and where each DEQ width lies against the explicit points."""
    datasets = frontier_datasets(results)
    if not datasets:
        return []
    lines = ["## E1F frontiers (E1's protocol at three widths per family)", "",
             "E1's row of each family plus E1F's two widths, at the family's learning rate (tuned "
             "by T0 at E1's width only); on CIFAR-10, E1's nine models (three per family, under the CIFAR "
             "protocol, docs/CIFAR_PROTOCOL.md). The `seeds` column says how many seeds each point rests on. "
             "M MACs per training sample: multiply-accumulates of one training step (forward, loss, backward; "
             "`deqfl.models.macs`), for a DEQ at its measured mean forward iterations per training step, or "
             "at its training cap (an upper bound) for runs stored without per-client solves.", ""]
    for dataset in datasets:
        points = frontier_points(results, dataset)
        target = TARGETS.get(dataset, 0.9)
        rows = [[p.family, p.width, f"{p.parameters}", f"{p.mb_per_round:.3f}", p.rounds.format(digits=1),
                 p.to_target.format(digits=2), p.macs_text, p.final.format(100), str(p.seeds)] for p in points]
        lines += [f"### {dataset} (target {100 * target:.0f}%)", ""]
        lines += _table(["family", "width", "parameters", "MB per round", "rounds to target", "MB to target",
                         "M MACs per training sample", "final accuracy (%)", "seeds"], rows)
        explicit = [p for p in points if p.family != "deq"]
        lines += [f"- {deq_position(p, explicit)}" for p in points if p.family == "deq"] + [""]
        plot = _plot_frontier(points, out / f"e1f_{dataset}_frontier.png", dataset)
        lines += [f"![E1F {dataset} frontier]({plot.name})", ""]
    return lines


def _plot_frontier(points: list[FrontierPoint], path: Path, dataset: str) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for family in FRONTIER_FAMILIES:
        mine = [p for p in points if p.family == family and p.final.mean is not None]
        for ax, x in zip(axes, ("per round", "to target")):
            shown = [(p.mb_per_round if x == "per round" else p.to_target.mean, p) for p in mine]
            shown = sorted((v, p) for v, p in shown if v is not None)
            if shown:
                ax.errorbar([v for v, _ in shown], [100 * p.final.mean for _, p in shown],
                            yerr=[100 * (p.final.std or 0) for _, p in shown], marker="o", capsize=3, label=family)
    for ax, x in zip(axes, ("per round", "to target")):
        ax.set(xscale="log", xlabel=f"MB {x} (log scale)", ylabel="final test accuracy (%, mean ± std over seeds)",
               title=f"E1F {dataset}: accuracy against MB {x}")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # label the decades only
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)


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


def _sci(s: Stat) -> str:
    """A small mean (± std over seeds) in scientific notation."""
    if s.mean is None:
        return "n/a"
    return f"{s.mean:.1e}" + (f" ± {s.std:.1e}" if s.n > 1 else "")


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
    return f"{_sci(first)} → {_sci(last)}" if last.mean is not None else "n/a"


def _plot_residuals(series: dict[str, list[dict[str, Any]]], path: Path, title: str) -> Path:
    """The global residual over rounds, one line per labelled run, on a log scale."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, rounds in series.items():
        ax.plot([r["round"] for r in rounds], [r["global_residual"] for r in rounds], marker="o", label=label)
    ax.set(yscale="log", xlabel="round", ylabel="global relative residual", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def section_e2b(results: list[dict[str, Any]], out: Path) -> list[str]:
    """E2B: the mixed fleet where the weak cap truncates the looser cell's solves."""
    groups = _group(results, "E2B", ("dataset", "group", "method"))
    if not groups:
        return []
    lines = [f"## E2B budgets that bind (DEQ cell max_norm {E2B_MAX_NORM:g}; caps: strong {E2B_CAPS[0]}, "
             f"weak {E2B_CAPS[1]})", "", SOLVES_LEGEND, ""]
    tables: dict[str, list] = defaultdict(list)
    finals: dict[str, dict[str, Stat]] = defaultdict(dict)
    residuals: dict[str, list[dict[str, Any]]] = {}
    for (dataset, fleet, method), runs in groups.items():
        key = f"{method} ({fleet})"
        tiers = sorted({t for r in runs for t in r["summary"].get("tier_accuracy", {})})
        finals[dataset][key] = _final(runs)
        residual = _residual_cell(runs)
        tables[dataset].append([
            method, fleet, finals[dataset][key].format(100),
            ", ".join(f"{t} {stat([r['summary']['tier_accuracy'].get(t) for r in runs]).format(100)}" for t in tiers),
            _solves_cell(runs, tiers) or "n/a", residual,
            stat([w for w in (_weak_share(r["rounds"]) for r in runs) if w is not None]).format(100, 1), str(len(runs)),
        ])
        if residual != "n/a":
            residuals[f"{dataset} {key}"] = runs[0]["rounds"]
    for dataset, rows in tables.items():
        lines += [f"### {dataset}", ""]
        lines += _table(["method", "fleet", "final accuracy (%)", "accuracy at each tier's budget (%)",
                         "forward solves per tier (all rounds; last round)", "global residual round 1 → final",
                         "weak tier's fusion weight (%)", "seeds"], rows)
        verdict = _verdict(finals[dataset], "final accuracy")
        if verdict:
            lines += [verdict, ""]
        lines += _against("deq-quality (mixed)", finals[dataset])
        lines += budget_target_lines(results, "E2B", dataset)
    if residuals:
        seed = min(r["seed"] for r in results if r["experiment"] == "E2B")
        path = _plot_residuals(residuals, out / "e2b_residual.png", f"E2B: global residual over rounds (seed {seed})")
        lines += [f"![E2B global residual]({path.name})", ""]
    return lines
