"""`deqfl run`: run (or resume) one federated experiment and write its results."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from deqfl.errors import ConfigError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run a federated experiment (default: MNIST, 20 clients, three device tiers)",
        description="Run one federated experiment: a TOML config plus --set overrides.",
    )
    parser.add_argument("--config", type=Path, help="experiment TOML file (default: the packaged default)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
        help="override one config key, e.g. --set experiment.rounds=5 (repeatable)",
    )
    parser.add_argument("--out", type=Path, help="run directory (default: runs/<name>-<time>)")
    parser.add_argument("--resume", type=Path, metavar="DIR", help="continue the run in DIR from its last checkpoint")
    parser.add_argument("--data-dir", help="directory (or archive) with the data set's files")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    # --- Flower engines (issue 5) ---
    parser.add_argument(
        "--engine", choices=["embedded", "flower-sim", "flower"],
        help="execution engine (default: experiment.engine, i.e. embedded); see docs/DEPLOYMENT.md",
    )
    parser.add_argument("--superlink", metavar="HOST:PORT", help="--engine flower: address of a running SuperLink")
    parser.add_argument("--root-certificates", metavar="CA.pem", help="--engine flower: the SuperLink's CA certificate (TLS)")
    # --- end Flower engines ---
    parser.set_defaults(func=run_command)


def run_command(args: argparse.Namespace) -> int:
    from deqfl.experiments.config import load_config  # noqa: PLC0415 - keep --help fast
    from deqfl.experiments.run_dir import load_run_config  # noqa: PLC0415
    from deqfl.experiments.runner import run_experiment  # noqa: PLC0415

    overrides = list(args.overrides)
    if args.data_dir:
        overrides.append(f"data.data_dir={_toml_string(args.data_dir)}")
    if args.engine:
        overrides.append(f"experiment.engine={_toml_string(args.engine)}")
    if args.superlink:
        overrides.append(f"flower.superlink={_toml_string(args.superlink)}")
    if args.root_certificates:
        overrides.append(f"flower.root_certificates={_toml_string(str(Path(args.root_certificates).resolve()))}")
    if args.resume:
        if args.config or overrides:
            raise ConfigError("--resume continues a run with its saved config: drop --config, --set and --data-dir")
        out_dir = args.resume
        config = load_run_config(out_dir)
    else:
        config = load_config(args.config, overrides)
        out_dir = args.out or Path("runs") / f"{config.experiment.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    console = Console()
    rounds = config.experiment.rounds
    console.print(
        f"[bold]deqfl run[/]: {config.model.name} on {config.data.dataset}, "
        f"{config.data.num_clients} clients, {rounds} rounds, fusion={config.fusion.weighting} -> {out_dir}"
    )
    with Progress(
        TextColumn("round"), MofNCompleteColumn(), BarColumn(), TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(), console=console, disable=args.quiet,
    ) as progress:
        task = progress.add_task("rounds", total=rounds, status="")

        def on_round(record: dict) -> None:
            progress.update(
                task, completed=record["round"],
                status=f"acc {100 * record['accuracy']:.2f}%  "
                f"MB {(record['bytes_up'] + record['bytes_down']) / 1e6:.2f}",
            )

        summary = run_experiment(config, out_dir, resume=bool(args.resume), on_round=on_round)
    console.print(summary_table(summary))
    console.print(f"results in {out_dir}")
    if summary["skipped_rounds"] == summary["rounds"]:
        print(
            f"deqfl: error: every one of the {summary['rounds']} rounds was skipped (no valid client update), so the "
            f"model never trained; the reasons are under `rejected` in {out_dir / 'metrics.jsonl'} and in run.log",
            file=sys.stderr,
        )
        return 1
    return 0


def summary_table(summary: dict) -> Table:
    table = Table(title="final results", show_header=False)
    table.add_row("test accuracy (reference budget)", f"{100 * summary['final_accuracy']:.2f}%")
    for tier, acc in summary.get("tier_accuracy", {}).items():
        table.add_row(f"  at tier '{tier}' budget", f"{100 * acc:.2f}%")
    table.add_row("best accuracy", f"{100 * summary['best_accuracy']:.2f}%")
    table.add_row("MB communicated (up / down)", f"{summary['bytes_up'] / 1e6:.2f} / {summary['bytes_down'] / 1e6:.2f}")
    if summary.get("global_residual") is not None:
        table.add_row("global residual", f"{summary['global_residual']:.2e}")
    table.add_row("wall seconds", f"{summary['wall_seconds']:.1f}")
    return table


def _toml_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
