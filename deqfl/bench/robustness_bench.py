"""`deqfl bench robustness`: final accuracy per (attack, fusion rule), and the targets.

Every (attack, rule) pair is one small federated run (on the engine `--engine` names: the
embedded one by default, or Flower's simulation; every client every round so the
attackers' share is exact): by default MNIST, the first 5000 training rows,
10 clients (IID), 4 rounds, the DEQ classifier, the three-tier fleet; the per-round
evaluation uses 1000 test rows and the final accuracy the whole test set (at the
reference budget; the anytime curve only at budget 16). One run measured 36 s on two
free cores, so the full grid (11 attacks x 6 rules = 66 runs) takes about 40 minutes;
`--attacks`/`--rules` pick a subset, `--dataset digits` is a quick reduced version
(the whole grid in about 3.5 minutes).

Attacks (share of malicious clients in brackets): none; sign-flip (20%); scale x10 (20%);
huge-norm = scale x1e4 (30%); gaussian noise std 0.1 (20%); label-flip (20%);
inject-nan, inject-inf, wrong-shape (30%); inflate-examples and tiny-residual (20%, lies
sent with a sign-flipped update). Rules: fedavg (examples-weighted mean), quality
(residual-quality-weighted mean, deqfl's default), median, trimmed-mean (20% trimmed each
side), krum and multi-krum (f = the number of attackers), robust rules weighted by
examples.

Reported per pair: final accuracy, its drop from the same rule without attack, whether
the final global model is finite, rounds skipped, updates rejected, the mean fusion
weight the malicious clients won. Targets: no corrupted (non-finite or collapsed) global
model with 30% NaN/Inf/wrong-shape/huge-norm attackers; 20% sign-flip attackers cost at
most 2 points under a robust rule.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from deqfl.experiments.results import json_safe

ATTACKS: dict[str, tuple[float, list[str]]] = {
    "none": (0.0, ["attack.kind=none"]),
    "sign-flip": (0.2, ["attack.kind=sign-flip"]),
    "scale": (0.2, ["attack.kind=scale", "attack.scale=10.0"]),
    "huge-norm": (0.3, ["attack.kind=scale", "attack.scale=1e4"]),
    "gaussian": (0.2, ["attack.kind=gaussian", "attack.noise_std=0.1"]),
    "label-flip": (0.2, ["attack.kind=label-flip"]),
    "inject-nan": (0.3, ["attack.kind=inject-nan"]),
    "inject-inf": (0.3, ["attack.kind=inject-inf"]),
    "wrong-shape": (0.3, ["attack.kind=wrong-shape"]),
    "inflate-examples": (0.2, ["attack.kind=inflate-examples"]),
    "tiny-residual": (0.2, ["attack.kind=tiny-residual"]),
}
CORRUPTING = ("huge-norm", "inject-nan", "inject-inf", "wrong-shape")

RULES: dict[str, list[str]] = {
    "fedavg": ["fusion.weighting=examples", "fusion.aggregator=mean"],
    "quality": ["fusion.weighting=quality", "fusion.aggregator=mean"],
    "median": ["fusion.weighting=examples", "fusion.aggregator=median"],
    "trimmed-mean": ["fusion.weighting=examples", "fusion.aggregator=trimmed-mean", "fusion.trim_fraction=0.2"],
    "krum": ["fusion.weighting=examples", "fusion.aggregator=krum"],
    "multi-krum": ["fusion.weighting=examples", "fusion.aggregator=multi-krum"],
}
ROBUST = ("median", "trimmed-mean", "krum", "multi-krum")

COLLAPSE = 0.5
"""A final accuracy below COLLAPSE x the clean run's counts as a corrupted model."""


def register_bench(benches) -> None:
    parser = benches.add_parser(
        "robustness", help="final accuracy per (attack, fusion rule) under simulated attacks",
        description="Final accuracy per (attack, fusion rule); see deqfl/bench/robustness_bench.py.",
    )
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--dataset", default="mnist", help="data set (default mnist; digits for a quick run)")
    parser.add_argument("--data-dir", help="the data set's files (default: the packaged source)")
    parser.add_argument("--model", default="deq-mnist", help="model name (default deq-mnist)")
    parser.add_argument("--clients", type=int, default=10, help="clients, all sampled every round (default 10)")
    parser.add_argument("--rounds", type=int, default=4, help="rounds per run (default 4)")
    parser.add_argument("--train-subset", type=int, default=5000, help="training rows used (default 5000; 0: all)")
    parser.add_argument("--eval-subset", type=int, default=1000, help="test rows of the per-round evaluation (default 1000)")
    parser.add_argument("--fleet", default="three-tiers", help="fleet preset (default three-tiers)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every run (default 0)")
    parser.add_argument("--attacks", help=f"comma-separated subset of: {', '.join(ATTACKS)}")
    parser.add_argument("--rules", help=f"comma-separated subset of: {', '.join(RULES)}")
    parser.add_argument("--engine", choices=["embedded", "flower-sim"], default="embedded",
                        help="engine of every run (default embedded; flower-sim: Flower's simulation on Ray)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="extra config override applied to every run (repeatable)")
    parser.set_defaults(func=main)


def _pick(text: str | None, table: dict[str, Any], what: str) -> list[str]:
    from deqfl.errors import ConfigError  # noqa: PLC0415

    if not text:
        return list(table)
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in table]
    if unknown:
        raise ConfigError(f"--{what}: unknown {unknown}; valid: {', '.join(table)}")
    return names if "none" in names or what != "attacks" else ["none", *names]


def base_overrides(args) -> list[str]:
    items = [
        f"data.dataset={json.dumps(args.dataset)}", f"data.num_clients={args.clients}",
        "data.partition=iid", f"data.train_subset={args.train_subset}",
        f"data.eval_subset={args.eval_subset}", f"model.name={json.dumps(args.model)}",
        f"experiment.rounds={args.rounds}", f"experiment.seed={args.seed}",
        "experiment.checkpoint_every=0", "evaluation.anytime_every=0", "evaluation.anytime_budgets=[16]",
        "sampling.fraction=1.0", f"sampling.min_clients={args.clients}",
        f"fleet.preset={json.dumps(args.fleet)}",
        "train.residual_samples=64", f"experiment.engine={json.dumps(args.engine)}",
    ]
    if args.data_dir:
        items.append(f"data.data_dir={json.dumps(args.data_dir)}")
    return items + list(args.overrides)


def run_pair(attack: str, rule: str, args, workdir: Path) -> dict[str, Any]:
    """One run; the figures reported for the pair (attack, rule)."""
    import torch  # noqa: PLC0415
    from safetensors.torch import load_file  # noqa: PLC0415

    from deqfl.experiments.config import load_config  # noqa: PLC0415
    from deqfl.experiments.results import read_jsonl  # noqa: PLC0415
    from deqfl.experiments.runner import run_experiment  # noqa: PLC0415

    fraction, attack_items = ATTACKS[attack]
    attackers = round(fraction * args.clients)
    overrides = base_overrides(args) + attack_items + [f"attack.fraction={fraction}"] + RULES[rule]
    if rule in ("krum", "multi-krum"):
        overrides.append(f"fusion.krum_byzantine={max(1, attackers)}")
    config = load_config(None, overrides)
    out = Path(tempfile.mkdtemp(dir=workdir))
    started = time.perf_counter()
    summary = run_experiment(config, out)
    records = read_jsonl(out / "metrics.jsonl")
    model = load_file(str(out / "model.safetensors"))
    weights = [r["malicious_weight"] for r in records if r["malicious"]]
    return {
        "attack": attack,
        "rule": rule,
        "attackers": len(summary["malicious"]),
        "final_accuracy": summary["final_accuracy"],
        "finite": all(bool(torch.isfinite(v).all()) for v in model.values() if v.is_floating_point()),
        "skipped_rounds": sum(1 for r in records if r["skipped"]),
        "rejected": sum(len(r["rejected"]) for r in records),
        "rejected_malicious": sum(1 for r in records for x in r["rejected"] if x["client"] in r["malicious"]),
        "malicious_weight": sum(weights) / len(weights) if weights else 0.0,
        "seconds": time.perf_counter() - started,
    }


def evaluate_targets(results: list[dict[str, Any]]) -> dict[str, Any]:
    clean = {r["rule"]: r["final_accuracy"] for r in results if r["attack"] == "none"}
    for r in results:
        base = clean.get(r["rule"])
        r["drop_points"] = None if base is None else 100 * (base - r["final_accuracy"])
    corrupting = [r for r in results if r["attack"] in CORRUPTING]
    corrupted = [
        f"{r['attack']}/{r['rule']}" for r in corrupting
        if not r["finite"] or (r["rule"] in clean and r["final_accuracy"] < COLLAPSE * clean[r["rule"]])
    ]
    flips = {r["rule"]: r["drop_points"] for r in results if r["attack"] == "sign-flip" and r["drop_points"] is not None}
    robust_ok = sorted(rule for rule, drop in flips.items() if rule in ROBUST and drop <= 2.0)
    return {
        "no_corrupted_model_30pct": {"pass": bool(corrupting) and not corrupted, "corrupted": corrupted,
                                     "pairs": len(corrupting)},
        "sign_flip_20pct_within_2_points": {"pass": bool(robust_ok), "rules_within": robust_ok,
                                            "drop_points": flips},
    }


def main(args) -> int:
    attacks = _pick(args.attacks, ATTACKS, "attacks")
    rules = _pick(args.rules, RULES, "rules")
    if args.engine == "flower-sim":  # Ray's session folders, sockets and logs stay in a folder of this bench
        os.environ.setdefault("RAY_TMPDIR", tempfile.mkdtemp(prefix="deqfl-ray-"))
    console = Console()
    results = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for attack in attacks:
            for rule in rules:
                row = run_pair(attack, rule, args, Path(tmp))
                console.print(
                    f"{attack:>16} / {rule:<12} accuracy {100 * row['final_accuracy']:6.2f}%  "
                    f"rejected {row['rejected']:3d}  malicious weight {row['malicious_weight']:.3f}  "
                    f"({row['seconds']:.0f} s)"
                )
                results.append(row)
    targets = evaluate_targets(results)
    table = Table(title="deqfl bench robustness: final accuracy (%)")
    table.add_column("attack")
    for rule in rules:
        table.add_column(rule, justify="right")
    for attack in attacks:
        cells = {r["rule"]: r for r in results if r["attack"] == attack}
        table.add_row(attack, *(_cell(cells.get(rule)) for rule in rules))
    console.print(table)
    for name, verdict in targets.items():
        console.print(f"target {name}: {'PASS' if verdict['pass'] else 'FAIL'} {json.dumps({k: v for k, v in verdict.items() if k != 'pass'})}")
    report = {
        "command": "deqfl bench robustness",
        "settings": {k: v for k, v in vars(args).items() if k not in ("func", "out") and not callable(v)},
        "base_overrides": base_overrides(args),
        "attacks": {a: {"fraction": ATTACKS[a][0], "overrides": ATTACKS[a][1]} for a in attacks},
        "rules": {r: RULES[r] for r in rules},
        "results": results,
        "targets": targets,
        "seconds": time.perf_counter() - started,
    }
    if args.out:
        args.out.write_text(json.dumps(json_safe(report), indent=2, allow_nan=False, default=str))
    return 0


def _cell(row: dict[str, Any] | None) -> str:
    if row is None:
        return "-"
    mark = "" if row["finite"] else " (non-finite)"
    return f"{100 * row['final_accuracy']:.2f}{mark}"
