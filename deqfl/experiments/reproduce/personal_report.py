"""E5's report section (personalised federated learning), from stored runs alone.

Per cell (data set, labels per client) one table, a row per model and algorithm:
- personalised accuracy, mean and 10th percentile, and unseen-client accuracy: the
  last round's figures (the clients sampled in it; the unseen clients after fitting
  their personal part); and the mean over the last `TIER_ROUNDS` rounds of each round's
  mean, which rests on about `TIER_ROUNDS` times as many client evaluations;
- per-tier personalised accuracy: the mean over the last `TIER_ROUNDS` rounds of each
  round's per-tier mean (a round samples only a few clients of each tier);
- MB in all (shared parts, up and down) and MB to the cell's target (`TARGETS`): up to
  and including the first round whose mean personalised accuracy reaches it;
- values are mean ± sample std over seeds, with the seed count.

Then the issue's two targets, answered from what is stored:
- DEQ personalisation (deq-fedeq, and the DEQ's best communicating personalised
  algorithm) within `WITHIN` of the best communicating personalised explicit baseline
  (fedavg-ft, fedper, fedrep, ditto: local sends nothing, fedavg is not personalised) in
  mean personalised accuracy, with at most `MB_RATIO` of its MB to target;
- the weak tier's personalised accuracy within `WITHIN` of the strong tier's.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from deqfl.experiments.reproduce.analysis import Stat, stat
from deqfl.experiments.reproduce.personal_protocol import (
    ALGORITHMS,
    EXPERIMENT,
    FULL,
    MODELS,
    STEP_MODELS,
    TARGETS,
    PersonalScale,
    model_label,
)
from deqfl.experiments.reproduce.step_memory import step_peak_bytes
from deqfl.experiments.reproduce.suite import RunSpec
from deqfl.experiments.results import atomic_write_text

TIER_ROUNDS = 5
WITHIN = 0.01
MB_RATIO = 0.25
COMMUNICATING = ("fedavg-ft", "fedper", "fedrep", "ditto")  # the explicit baselines of the target
TIERS = ("strong", "medium", "weak")
MEMORY_FILE = Path("memory") / "e5_step_memory.json"

Cell = tuple[str, int]


def personal_mb_to_target(rounds: list[dict[str, Any]], target: float) -> float | None:
    """MB (up + down, 1e6 bytes) up to and including the first round whose mean
    personalised accuracy is at least `target`; None if never reached."""
    total = 0.0
    for row in rounds:
        total += (row["bytes_up"] + row["bytes_down"]) / 1e6
        if (row.get("personal_accuracy") or {}).get("mean", -1.0) >= target:
            return total
    return None


def tier_accuracy(rounds: list[dict[str, Any]], tier: str, last: int = TIER_ROUNDS) -> float | None:
    """Mean over the last `last` rounds (those that sampled `tier`) of the tier's mean
    personalised accuracy; None when none did."""
    values = [(r.get("personal_accuracy") or {}).get("tiers", {}).get(tier) for r in rounds[-last:]]
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def recent_mean(rounds: list[dict[str, Any]], last: int = TIER_ROUNDS) -> float | None:
    """Mean over the last `last` rounds (those that recorded it) of each round's mean
    personalised accuracy; None when none did."""
    values = [(r.get("personal_accuracy") or {}).get("mean") for r in rounds[-last:]]
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def _summary(run: dict[str, Any], key: str, field: str) -> float | None:
    return (run["summary"].get(key) or {}).get(field)


def cells(results: list[dict[str, Any]]) -> dict[Cell, dict[str, list[dict[str, Any]]]]:
    """E5's runs by cell, then by method label (model-algorithm)."""
    grouped: dict[Cell, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for r in results:
        if r["experiment"] == EXPERIMENT:
            grouped[(r["dataset"], int(r["group"].removeprefix("labels=")))][r["method"]].append(r)
    def order(cell: Cell) -> tuple:  # the protocol's order: labels, then data set
        dataset, labels = cell
        return (labels, FULL.datasets.index(dataset) if dataset in FULL.datasets else len(FULL.datasets), dataset)

    return {cell: dict(grouped[cell]) for cell in sorted(grouped, key=order)}


def _order(method: str) -> tuple[int, int]:
    model, algorithm = method.split("-", 1)
    return (list(MODELS).index(model), ALGORITHMS.index(algorithm))


def _present(values: list[float | None]) -> Stat:
    """`stat` of the values that exist (n/a rather than "not reached" when none does)."""
    return stat([v for v in values if v is not None])


def _row(runs: list[dict[str, Any]], target: float) -> dict[str, Stat]:
    return {
        "mean": _present([_summary(r, "personal_accuracy", "mean") for r in runs]),
        "p10": _present([_summary(r, "personal_accuracy", "p10") for r in runs]),
        "recent": _present([recent_mean(r["rounds"]) for r in runs]),
        "unseen": _present([_summary(r, "unseen_accuracy", "mean") for r in runs]),
        **{tier: _present([tier_accuracy(r["rounds"], tier) for r in runs]) for tier in TIERS},
        "mb": _present([r["summary"].get("megabytes") for r in runs]),
        "mb_target": stat([personal_mb_to_target(r["rounds"], target) for r in runs]),
        "minutes": stat([r["summary"]["wall_seconds"] / 60 for r in runs]),
    }


def cell_table(methods: dict[str, list[dict[str, Any]]], target: float) -> tuple[list[str], dict[str, dict[str, Stat]]]:
    """The cell's markdown table and its rows' statistics by method."""
    stats = {m: _row(methods[m], target) for m in sorted(methods, key=_order)}
    header = ["method", "model", "mean (%)", "p10 (%)", f"mean, last {TIER_ROUNDS} rounds (%)", "unseen (%)",
              *[f"{t} (%)" for t in TIERS], "MB in all", f"MB to {100 * target:.0f}%", "minutes", "seeds"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method, s in stats.items():
        run = methods[method][0]
        cells_ = [method, model_label(run["dataset"], method.split("-", 1)[0]), s["mean"].format(100), s["p10"].format(100),
                  s["recent"].format(100), s["unseen"].format(100), *[s[t].format(100) for t in TIERS], s["mb"].format(digits=1),
                  s["mb_target"].format(digits=1), s["minutes"].format(digits=1), str(len(methods[method]))]
        lines.append("| " + " | ".join(cells_) + " |")
    return lines + [""], stats


def accuracy_target(stats: dict[str, dict[str, Stat]]) -> list[str]:
    """The first target's verdict lines for one cell (module docstring)."""
    explicit = {a: stats[f"cnn-{a}"] for a in COMMUNICATING if f"cnn-{a}" in stats and stats[f"cnn-{a}"]["mean"].mean is not None}
    if not explicit:
        return ["- Target 1 (DEQ within 1 point, <= 1/4 MB): no communicating personalised CNN run stored; not measured."]
    base_name, base = max(explicit.items(), key=lambda kv: kv[1]["mean"].mean)
    deqs = {a: stats[f"deq-{a}"] for a in ("fedeq",) + COMMUNICATING if f"deq-{a}" in stats}
    if not deqs:
        return ["- Target 1: no DEQ run stored; not measured."]
    best_deq = max(deqs, key=lambda a: deqs[a]["mean"].mean)
    missing = [a for a in COMMUNICATING if f"cnn-{a}" not in stats]
    note = f"; CNN runs not stored: {', '.join(missing)}, so the best may change" if missing else ""
    lines = []
    for name in dict.fromkeys(["fedeq", best_deq]):
        if name not in deqs:
            lines.append("- Target 1, deq-fedeq: not run.")
            continue
        s = deqs[name]
        gap = 100 * (s["mean"].mean - base["mean"].mean)
        a, b = s["mb_target"].mean, base["mb_target"].mean
        if a is None or b is None:
            ratio_text, mb_ok = (f"MB to target: {'neither' if a is None and b is None else ('deq-' + name if b is None else 'cnn-' + base_name) + ' only'} reached it", False)
        else:
            ratio_text, mb_ok = f"MB to target x{a / b:.2f}" if b > 0 else "MB to target: baseline needed 0 MB", (b > 0 and a / b <= MB_RATIO)
        holds = gap >= -100 * WITHIN and mb_ok
        recent = (f" (last {TIER_ROUNDS} rounds' mean {100 * (s['recent'].mean - base['recent'].mean):+.2f} pt)"
                  if s["recent"].mean is not None and base["recent"].mean is not None else "")
        lines.append(f"- Target 1, deq-{name} against cnn-{base_name} (the best explicit baseline stored{note}): "
                     f"mean {gap:+.2f} pt{recent}, {ratio_text}: **{'holds' if holds else 'does not hold'}** "
                     f"({'one seed' if min(s['mean'].n, base['mean'].n) < 2 else 'seeds ' + str(min(s['mean'].n, base['mean'].n))}).")
    return lines


def tier_target(stats: dict[str, dict[str, Stat]]) -> list[str]:
    """The second target: per run, weak minus strong tier accuracy (points)."""
    parts = []
    for method, s in stats.items():
        if s["weak"].mean is not None and s["strong"].mean is not None:
            gap = 100 * (s["weak"].mean - s["strong"].mean)
            parts.append(f"{method} {gap:+.1f}{'' if gap >= -100 * WITHIN else ' (no)'}")
    if not parts:
        return []
    return ["- Target 2 (weak tier within 1 point of strong), weak minus strong in points: " + ", ".join(parts)
            + ". The CNN's tiers train the same model at the same cost, so its gaps show the sampling noise."]


def memory_lines(store: Path, labels: list[str], measure: bool = True) -> list[str]:
    """Peak memory of a client training step for the models `labels` (of `STEP_MODELS`),
    measured once and kept in STORE/`MEMORY_FILE` (measured now when missing and `measure`
    is true)."""
    import json  # noqa: PLC0415

    path = store / MEMORY_FILE
    known = json.loads(path.read_text()) if path.exists() else {}
    missing = [m for m in labels if m not in known]
    if missing and measure:
        for label in missing:
            name, options, shape = STEP_MODELS[label]
            known[label] = step_peak_bytes(name, input_shape=shape, options=options)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(known, indent=1))
    text = ", ".join(f"{m} {known[m] / 1e6:.1f} MB" for m in labels if m in known)
    if not text:
        return []
    return [f"Peak memory of one client training step (batch 32, at the data set's image size, growth of the peak "
            f"RSS over a step after a warm-up step; `deqfl.experiments.reproduce.step_memory`): {text}.", ""]


def _sampled_text(results: list[dict[str, Any]]) -> str:
    """How many clients the stored E5 runs' last-round personalised accuracies rest on
    ("9", a range such as "8-10", or "n/a" where no run recorded it)."""
    counts = sorted({count for r in results if r["experiment"] == EXPERIMENT and r["rounds"]
                     if (count := (r["rounds"][-1].get("personal_accuracy") or {}).get("clients"))})
    if not counts:
        return "n/a"
    return f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"


def section_e5(results: list[dict[str, Any]], store: Path | None = None, measure: bool = True) -> list[str]:
    """E5's markdown section (module docstring); empty when no E5 run is stored."""
    grouped = cells(results)
    if not grouped:
        return []
    lines = ["## E5 personalised federated learning (100 clients, pathological partition, three-tier fleet)", "",
             f"Mean and p10: the last round's, over the training clients it sampled ({_sampled_text(results)} a run, "
             f"so p10 is close to their minimum); mean, last {TIER_ROUNDS} rounds: the mean of those rounds' means "
             f"(about {TIER_ROUNDS}x the client evaluations, a steadier figure); unseen: every unseen client, after "
             f"fitting; tiers: mean over the last {TIER_ROUNDS} rounds; MB: shared parts only, up and down.", ""]
    if store is not None:
        labels = [model_label(dataset, m) for dataset in dict.fromkeys(d for d, _ in grouped) for m in MODELS]
        lines += memory_lines(store, list(dict.fromkeys(labels)), measure)
    for (dataset, labels), methods in grouped.items():
        target = TARGETS.get((dataset, labels), 0.9)
        table, stats = cell_table(methods, target)
        lines += [f"### {dataset}, {labels} labels per client (target {100 * target:.0f}%)", ""] + table
        lines += accuracy_target(stats) + tier_target(stats) + [""]
    return lines


def status_lines(results: list[dict[str, Any]], expected: list[RunSpec]) -> list[str]:
    """How many of the `expected` E5 runs are stored, their worker-minutes, an estimate for
    the rest (per data set: its missing runs times its stored runs' mean; none for a data
    set with no stored run) and the runs still missing."""
    stored = {r["run_id"]: r for r in results if r["experiment"] == EXPERIMENT}
    done = [stored[s.run_id] for s in expected if s.run_id in stored]
    missing = [s for s in expected if s.run_id not in stored]
    minutes = [r["summary"]["wall_seconds"] / 60 for r in done]
    lines = [f"{len(done)} of {len(expected)} E5 runs stored"
             + (f", {sum(minutes):.0f} worker-minutes (mean {sum(minutes) / len(minutes):.1f} a run, one worker)" if done else "")
             + ".", ""]
    estimates = []
    for dataset in dict.fromkeys(s.dataset for s in missing):
        count = sum(s.dataset == dataset for s in missing)
        mine = [r["summary"]["wall_seconds"] / 60 for r in done if r["dataset"] == dataset]
        estimates.append(f"{dataset}: {count} runs, about {count * sum(mine) / len(mine) / 60:.1f} worker-hours at its "
                         "stored runs' mean" if mine else f"{dataset}: {count} runs, none stored to estimate from")
    if missing:
        lines += ["Still to run: " + "; ".join(estimates) + ".", "",
                  "Not yet run: " + ", ".join(f"`{s.run_id}`" for s in missing) + ".", ""]
    return lines


def protocol_lines(scale: PersonalScale = FULL) -> list[str]:
    """What every E5 run shares, the command, and what E5 leaves out."""
    return [
        "Every run shares " + ", ".join(f"`{o}`" for o in scale.base) + f" (seed {scale.seed}; the headline "
        f"comparison, {scale.datasets[0]} at {scale.labels[0]} labels, also seeds {', '.join(map(str, scale.headline_seeds))}); "
        "deq-mnist and cnn-small (widths 16, 32) at their T0 learning rates; examples-weighted fusion of the shared part; "
        "algorithm options at their defaults. Command: `deqfl reproduce --full --only E5 --data-dir "
        "mnist=../shared/data/mnist --data-dir fashion-mnist=../shared/data/fashion-mnist` (resumable; "
        "`--report-only` rebuilds this page).", "",
        "CIFAR-10, one cell of 5 labels per client on seed 0 (`--with-cifar` or `--cifar-only`): the CIFAR protocol's "
        "per-run settings (docs/CIFAR_PROTOCOL.md: 20 fixed local steps of batch 64, Adam with a cosine rate, crop-flip "
        "augmentation, 120 rounds) with 100 clients, 10 a round, and the mixed fleet (strong cap 8, weak cap 2, half "
        "each); mdeq-small-8 and cnn-w32 (E1's headline pair) at the protocol's rates; target 70%. About 30-60 minutes a run with two "
        "workers, some 10 machine-hours for its 14 runs.", "",
    ]


def write_e5(results: list[dict[str, Any]], path: Path, expected: list[RunSpec] | None = None,
             measure: bool = True) -> Path:
    """Write E5's section to `path` (the step-memory figures kept beside it), with the
    store's status against the `expected` runs when given."""
    lines = section_e5(results, path.parent, measure) or ["## E5 personalised federated learning", "", "No E5 run stored.", ""]
    lines[2:2] = protocol_lines() + (status_lines(results, expected) if expected else [])
    atomic_write_text(path, "\n".join(lines))
    return path
