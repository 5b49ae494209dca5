"""Issue 16's target for budgets that bind (E2B; E2 on CIFAR-10), answered from seed-paired runs.

Target: a mixed fleet whose weak cap truncates its solves ends within `WITHIN_POINTS` of the
all-strong fleet, and ahead of drop-weak (global model) and of HeteroFL's weak-device model
(the weak tier's accuracy) by more than the spread over seeds.

Runs of one seed share the partition and the client sampling, so each comparison is the
per-seed difference d_s = a_s - b_s of the two runs' accuracies; the line gives the mean of
d_s over the seeds both ran and each d_s, judged on the final accuracy (the issue's measure)
and, for the global model, on the mean accuracy of the last `LAST_ROUNDS` rounds (on the
per-round evaluation subset), which smooths the round-to-round swing of the final figure.
"More than the spread over seeds" means mean(d) > max(std_a, std_b), the larger of the two
runs' standard deviations of that measure over seeds (two seeds at least).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import Any, Callable

WITHIN_POINTS = 0.5
LAST_ROUNDS = 5
MIXED_METHODS = ("deq-fedavg", "deq-quality")

Measure = Callable[[dict[str, Any]], float | None]


def _final(run: dict[str, Any]) -> float | None:
    return run["summary"]["final_accuracy"]


def _weak(run: dict[str, Any]) -> float | None:
    return run["summary"].get("tier_accuracy", {}).get("weak")


def _last_rounds(run: dict[str, Any]) -> float | None:
    values = [r["accuracy"] for r in run["rounds"][-LAST_ROUNDS:] if r.get("accuracy") is not None]
    return sum(values) / len(values) if values else None


def paired(a: dict[int, dict[str, Any]], b: dict[int, dict[str, Any]], measure: Measure) -> dict[int, float]:
    """Per seed both ran: measure(a) - measure(b), in points."""
    out = {}
    for seed in sorted(set(a) & set(b)):
        x, y = measure(a[seed]), measure(b[seed])
        if x is not None and y is not None:
            out[seed] = 100 * (x - y)
    return out


def _spread(runs: dict[int, dict[str, Any]], measure: Measure) -> float | None:
    values = [100 * v for v in (measure(r) for r in runs.values()) if v is not None]
    return statistics.stdev(values) if len(values) > 1 else None


def _seeds(n: int) -> str:
    return "one seed" if n == 1 else f"{n} seeds"


def _judged(a: dict, b: dict, measure: Measure, rule: str) -> tuple[str, str, int] | None:
    """("+m pt (per seed)[, spread]", verdict, seeds compared) for one measure; None when no
    seed has both runs."""
    diffs = paired(a, b, measure)
    if not diffs:
        return None
    mean = sum(diffs.values()) / len(diffs)
    text = f"{mean:+.2f} pt (" + ", ".join(f"s{s} {d:+.2f}" for s, d in diffs.items()) + ")"
    if rule == "within":
        verdict = f"holds (within {WITHIN_POINTS:g} pt)" if mean >= -WITHIN_POINTS else f"does not hold (more than {WITHIN_POINTS:g} pt below)"
        return text, verdict, len(diffs)
    spreads = [s for s in (_spread(a, measure), _spread(b, measure)) if s is not None]
    if len(diffs) < 2 or not spreads:
        return text, "spread over seeds unknown, not judged", len(diffs)
    spread = max(spreads)
    return text + f", spread over seeds {spread:.2f} pt", "holds" if mean > spread else "does not hold", len(diffs)


def _line(label: str, a: dict, b: dict, measure: Measure, rule: str) -> str:
    """The target's line for one comparison: judged on the final accuracy (the issue's
    measure, in bold) and, for whole-model accuracies, on the mean of the last rounds."""
    final = _judged(a, b, measure, rule)
    if final is None:
        return f"- {label}: no seed has both runs."
    figures, verdict, seeds = final
    text = f"- {label}: {figures}: **{verdict}**"
    smooth = _judged(a, b, _last_rounds, rule) if measure is _final else None
    if smooth:
        text += f"; mean of the last {LAST_ROUNDS} rounds {smooth[0]}: {smooth[1]}"
    return text + f" ({_seeds(seeds)})."


def budget_target_lines(results: list[dict[str, Any]], experiment: str, dataset: str) -> list[str]:
    """The target's lines for one experiment's fleets on one data set (module docstring);
    empty without a mixed DEQ run."""
    runs: dict[tuple[str, str], dict[int, dict[str, Any]]] = defaultdict(dict)
    for r in results:
        if r["experiment"] == experiment and r["dataset"] == dataset:
            runs[(r["method"], r["group"])][r["seed"]] = r
    lines = []
    for method in MIXED_METHODS:
        mixed = runs.get((method, "mixed"))
        if not mixed:
            continue
        lines.append(f"Target, {method} (mixed), seed-paired differences:")
        lines.append(_line("against deq-fedavg (all-strong), final accuracy", mixed, runs.get(("deq-fedavg", "all-strong"), {}),
                           _final, "within"))
        lines.append(_line("against deq-drop-weak (mixed), final accuracy", mixed, runs.get(("deq-drop-weak", "mixed"), {}),
                           _final, "ahead"))
        lines.append(_line("weak tier against cnn-heterofl's weak slice (mixed)", mixed,
                           runs.get(("cnn-heterofl", "mixed"), {}), _weak, "ahead"))
        lines.append("")
    return lines
