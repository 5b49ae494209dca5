"""`deqfl eval RUN_DIR`: accuracy of a run's final model at any forward cap."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval", help="evaluate a run's final model at chosen forward caps",
        description="Accuracy, loss and residual of RUN_DIR's final model on a test set.",
    )
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    parser.add_argument(
        "--forward-cap", "--budget", dest="forward_caps", type=int, action="append", metavar="K",
        help="forward iteration cap (repeatable; default: the run's reference cap; --budget is its old name)",
    )
    parser.add_argument("--dataset", help="data set to evaluate on (default: the run's)")
    parser.add_argument("--data-dir", help="directory (or archive) with the data set's files")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=eval_command)


def eval_command(args: argparse.Namespace) -> int:
    import torch  # noqa: PLC0415

    from deqfl.data import load_dataset  # noqa: PLC0415
    from deqfl.errors import ConfigError  # noqa: PLC0415
    from deqfl.experiments.model_io import load_saved_model, read_model_meta  # noqa: PLC0415
    from deqfl.fl.evaluation import evaluate  # noqa: PLC0415

    meta_path = args.run_dir / "model.json"
    if not meta_path.exists():
        raise ConfigError(f"{args.run_dir} holds no final model ({meta_path.name} is missing)")
    meta = read_model_meta(args.run_dir)
    dataset = load_dataset(args.dataset or meta["dataset"], data_dir=args.data_dir or meta.get("data_dir"))
    saved = load_saved_model(args.run_dir, dataset.input_shape, dataset.num_classes)
    x, y = dataset.normalise(dataset.x_test), torch.as_tensor(dataset.y_test)
    caps = args.forward_caps or [meta["reference_cap"]]
    if any(k <= 0 for k in caps):
        raise ConfigError(f"--forward-cap must be positive, got {caps}")
    rows = []
    for k in caps:
        r = evaluate(saved.model, x, y, k, meta["reference_tol"])
        rows.append({"forward_cap": k, "accuracy": r.accuracy, "loss": r.loss, "residual": r.residual})
    if args.json:
        print(json.dumps(rows))
        return 0
    table = Table(title=f"{meta['model']} on {dataset.name} ({len(y)} test images)")
    for col in ("forward cap", "accuracy", "loss", "residual"):
        table.add_column(col, justify="right")
    for row in rows:
        residual = "-" if row["residual"] is None else f"{row['residual']:.2e}"
        table.add_row(str(row["forward_cap"]), f"{100 * row['accuracy']:.2f}%", f"{row['loss']:.4f}", residual)
    Console().print(table)
    return 0
