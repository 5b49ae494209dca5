"""What every section of the evidence report shares: grouping stored runs, Markdown tables,
the verdict and the per-method comparison lines (each judged against the spread over
seeds), and saving a figure."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from deqfl.experiments.reproduce.analysis import Stat, stat, within_spread  # noqa: E402

Group = dict[tuple, list[dict[str, Any]]]


def group_runs(results: list[dict[str, Any]], experiment: str, keys: tuple[str, ...]) -> Group:
    groups: Group = defaultdict(list)
    for r in results:
        if r["experiment"] == experiment:
            groups[tuple(r[k] for k in keys)].append(r)
    return dict(sorted(groups.items()))


def md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines + [""]


def rank_verdict(named: dict[str, Stat], what: str, higher_is_better: bool = True) -> str:
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


def final_stat(runs: list[dict[str, Any]]) -> Stat:
    return stat([r["summary"]["final_accuracy"] for r in runs])


def spread_word(a: Stat, b: Stat) -> str:
    if a.n < 2 or b.n < 2:
        return "one seed: no spread known"
    return "within the spread" if within_spread(a, b) else "outside the spread"


def against_lines(reference: str, finals: dict[str, Stat], to_target: dict[str, Stat] | None = None) -> list[str]:
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
            spread = spread_word(a, b)
            parts.append(f"final accuracy {100 * (a.mean - b.mean):+.2f} pt ({spread})")
        if to_target is not None:
            a, b = to_target[reference], to_target[method]
            if a.mean is not None and b.mean is not None:
                spread = spread_word(a, b)
                parts.append(f"MB to target x{a.mean / b.mean:.2f} ({spread})")
            elif a.mean is not None or b.mean is not None:
                parts.append("MB to target: only " + (reference if a.mean is not None else method) + " reached it")
        if parts:
            lines.append(f"- {reference} against {method}: " + "; ".join(parts))
    return lines + [""] if lines else []


def save_figure(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def weak_weight_share(rounds: list[dict[str, Any]]) -> float | None:
    """Mean over rounds (with any weak client fused) of the weak tier's share of the fusion
    weight; None when no weak client was ever fused."""
    shares = []
    for row in rounds:
        weights = row.get("tier_weight") or {}
        total = sum(weights.values())
        if "weak" in weights and total > 0:
            shares.append(weights["weak"] / total)
    return sum(shares) / len(shares) if shares else None


def sci(s: Stat) -> str:
    """A small mean (± std over seeds) in scientific notation."""
    if s.mean is None:
        return "n/a"
    return f"{s.mean:.1e}" + (f" ± {s.std:.1e}" if s.n > 1 else "")
