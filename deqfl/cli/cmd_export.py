"""`deqfl export RUN_DIR --forward-cap K --format torchscript|onnx`: a fixed-budget model file."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "export", help="write a run's final model as a fixed-budget TorchScript or ONNX file",
        description="Export RUN_DIR's final model with its DEQ unrolled to exactly K plain "
        "iterations (a static graph a device can run), and report its test accuracy.",
    )
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    parser.add_argument("--forward-cap", "--budget", dest="forward_cap", type=int, required=True, metavar="K",
                        help="forward iterations of the exported model (--budget is its old name)")
    parser.add_argument("--format", choices=("torchscript", "onnx"), default="torchscript")
    parser.add_argument("--out", type=Path, help="output file (default: RUN_DIR/model-K.pt|.onnx)")
    parser.add_argument("--data-dir", help="data set files, for the accuracy check")
    parser.set_defaults(func=export_command)


def export_command(args: argparse.Namespace) -> int:
    import torch  # noqa: PLC0415

    from deqfl.data import load_dataset  # noqa: PLC0415
    from deqfl.errors import ConfigError  # noqa: PLC0415
    from deqfl.experiments.export import export_model, fixed_budget_model  # noqa: PLC0415
    from deqfl.experiments.model_io import load_saved_model, read_model_meta  # noqa: PLC0415
    from deqfl.fl.evaluation import evaluate  # noqa: PLC0415

    meta_path = args.run_dir / "model.json"
    if not meta_path.exists():
        raise ConfigError(f"{args.run_dir} holds no final model ({meta_path.name} is missing)")
    meta = read_model_meta(args.run_dir)
    dataset = load_dataset(meta["dataset"], data_dir=args.data_dir or meta.get("data_dir"))
    saved = load_saved_model(args.run_dir, dataset.input_shape, dataset.num_classes)
    x, y = dataset.normalise(dataset.x_test), torch.as_tensor(dataset.y_test)
    suffix = ".pt" if args.format == "torchscript" else ".onnx"
    out = args.out or args.run_dir / f"model-{args.forward_cap}{suffix}"
    export_model(saved.model, x[:2], args.forward_cap, args.format, out)
    exported = evaluate(fixed_budget_model(saved.model, args.forward_cap), x, y, None, None).accuracy
    solver = evaluate(saved.model, x, y, args.forward_cap, meta["reference_tol"]).accuracy
    console = Console()
    console.print(f"wrote {out} ({out.stat().st_size} bytes)")
    console.print(
        f"test accuracy at forward cap {args.forward_cap}: exported (plain iteration) {100 * exported:.2f}%, "
        f"training solver {100 * solver:.2f}%"
    )
    return 0
