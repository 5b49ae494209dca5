"""The report's frontier section (E1 and E1F together, and CIFAR-10's E1): each model
family's accuracy against bytes per round and MB to the target, one point per width, and
where each DEQ width lies against the explicit models' points."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from deqfl.experiments.reproduce import cifar_protocol  # noqa: E402
from deqfl.experiments.reproduce.analysis import Stat, mb_to_target, rounds_to_target, stat  # noqa: E402
from deqfl.experiments.reproduce.compute import run_macs  # noqa: E402
from deqfl.experiments.reproduce.report_common import final_stat, md_table, save_figure, spread_word  # noqa: E402
from deqfl.experiments.reproduce.suite import FRONTIER_FAMILIES, FRONTIER_WIDTHS, TARGETS, width_label  # noqa: E402
from deqfl.models.registry import model_options  # noqa: E402


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
            stat([_round_mb(r) for r in runs]).mean or 0.0, final_stat(runs),
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
                 f"the bytes per round and ends {100 * (best.final.mean - a.mean):+.2f} pt ({spread_word(best.final, a)})")
    elif cheaper:
        where = "above the explicit frontier: every explicit model with at most its bytes per round ends less accurate"
    else:
        smallest = min(explicit, key=lambda e: e.mb_per_round)
        where = (f"smaller than every explicit model, so not on their frontier's range: the smallest, "
                 f"{smallest.label}, sends x{smallest.mb_per_round / deq.mb_per_round:.2f} its bytes per round")
        if smallest.final.mean is not None:
            where += (f" and ends {100 * (smallest.final.mean - a.mean):+.2f} pt "
                      f"({spread_word(smallest.final, a)})")
    near = [e for e in explicit if e.final.mean is not None and e.final.mean >= a.mean - 0.01]
    if near:
        e = min(near, key=lambda e: e.mb_per_round)
        where += (f"; the smallest explicit model at most 1 point below it is {e.label} "
                  f"({100 * (a.mean - e.final.mean):+.2f} pt for the DEQ, {spread_word(a, e.final)}; "
                  f"DEQ bytes per round x{deq.mb_per_round / e.mb_per_round:.2f}")
        if deq.to_target.mean is not None and e.to_target.mean is not None:
            where += f", MB to target x{deq.to_target.mean / e.to_target.mean:.2f} ({spread_word(deq.to_target, e.to_target)})"
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
             "by T0 at E1's width only); on CIFAR-10, E1's ten models (three per family, four CNN widths, under the CIFAR "
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
        lines += md_table(["family", "width", "parameters", "MB per round", "rounds to target", "MB to target",
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
        if ax.get_legend_handles_labels()[0]:  # an axis is empty when no model reached the target
            ax.legend(fontsize=8)
    return save_figure(fig, path)
