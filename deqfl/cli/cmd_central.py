"""`deqfl central`: train one model centrally (no federation), resumably
(`deqfl.experiments.central`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from deqfl.errors import ConfigError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "central", help="train one model centrally (no federation), resumable",
        description="Train MODEL on the whole training set for --epochs epochs, checkpointing every epoch "
        "(and every --checkpoint-steps steps), evaluating on the test set after each epoch into "
        "OUT/metrics.jsonl. --resume OUT continues an interrupted run bitwise from its newest valid checkpoint.",
    )
    parser.add_argument("--model", help="model name (`deqfl models`)")
    parser.add_argument("--model-options", metavar="JSON", help="model options as a JSON object, e.g. '{\"widths\": [32, 64]}'")
    parser.add_argument("--dataset", help="data set (mnist, fashion-mnist, cifar10, digits, synthetic, ...)")
    parser.add_argument("--data-dir", help="directory (or archive) with the data set's files")
    parser.add_argument("--epochs", type=int, help="passes over the training set (default 1)")
    parser.add_argument("--batch-size", type=int, help="batch size (default 32)")
    parser.add_argument("--optimizer", help="sgd (default), adam or adamw")
    parser.add_argument("--lr", type=float, help="base learning rate (default 0.05)")
    parser.add_argument("--momentum", type=float, help="SGD momentum (default 0.9)")
    parser.add_argument("--weight-decay", type=float, help="weight decay (default 0)")
    parser.add_argument("--schedule", help="learning-rate schedule over epochs: constant (default), cosine, step")
    parser.add_argument("--augment", help="training augmentation: none (default) or crop-flip")
    parser.add_argument("--train-subset", type=int, help="train on the first N rows only (0: all)")
    parser.add_argument("--eval-subset", type=int, help="evaluate on N seeded test rows (0: all, the default)")
    parser.add_argument("--forward-cap", type=int, help="DEQ forward iteration cap (default 18)")
    parser.add_argument("--tol", type=float, help="DEQ forward tolerance (default 1e-3)")
    parser.add_argument("--correction", type=float, help="DEQ fixed-point correction weight (default 0: off)")
    parser.add_argument("--checkpoint-steps", type=int, help="also checkpoint every N steps (default: epoch ends only)")
    parser.add_argument("--seed", type=int, help="seed (default 0)")
    parser.add_argument("--device", help="auto, cpu (default), cuda or cuda:N")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default 1)")
    parser.add_argument("--out", type=Path, help="run directory (new)")
    parser.add_argument("--resume", type=Path, metavar="DIR", help="continue the central run in DIR")
    parser.add_argument("--json", action="store_true", help="print the per-epoch rows as JSON lines")
    parser.set_defaults(func=central_command)


_FLAGS = {  # flag -> key of CentralConfig (dotted: a section's key)
    "dataset": "data.dataset", "data_dir": "data.data_dir", "augment": "data.augment",
    "train_subset": "data.train_subset", "eval_subset": "data.eval_subset",
    "model": "model.name", "epochs": "epochs", "batch_size": "train.batch_size", "optimizer": "train.optimizer",
    "lr": "train.lr", "momentum": "train.momentum", "weight_decay": "train.weight_decay",
    "schedule": "train.lr_schedule", "correction": "train.fixed_point_correction", "forward_cap": "forward_cap", "tol": "tol",
    "checkpoint_steps": "checkpoint_steps", "seed": "seed", "device": "device", "threads": "threads",
}


def central_settings(args: argparse.Namespace) -> dict:
    """The `CentralConfig` settings the flags give (unset flags keep the defaults)."""
    settings: dict = {}
    for flag, key in _FLAGS.items():
        value = getattr(args, flag)
        if value is None:
            continue
        section, _, name = key.rpartition(".")
        (settings.setdefault(section, {}) if section else settings)[name] = value
    if args.model_options:
        try:
            options = json.loads(args.model_options)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--model-options is not valid JSON ({exc}): give an object, e.g. '{{\"widths\": [32, 64]}}'") from None
        if not isinstance(options, dict):
            raise ConfigError(f"--model-options must be a JSON object, got {args.model_options!r}")
        settings.setdefault("model", {})["options"] = options
    return settings


def central_command(args: argparse.Namespace) -> int:
    from deqfl.experiments.central import CONFIG_FILE, central_config, train_central  # noqa: PLC0415

    if args.resume:
        given = [f"--{f.replace('_', '-')}" for f in (*_FLAGS, "model_options", "out") if getattr(args, f) is not None]
        if given:
            raise ConfigError(f"--resume continues a run with its saved settings: drop {', '.join(given)}")
        path = args.resume / CONFIG_FILE
        if not path.exists():
            raise ConfigError(f"{args.resume} is not a central run ({CONFIG_FILE} is missing)")
        config, out = central_config(json.loads(path.read_text())), args.resume
    else:
        if args.out is None:
            raise ConfigError("give --out DIR (a new run directory) or --resume DIR")
        if args.model is None or args.dataset is None:
            raise ConfigError("give --model and --dataset (see `deqfl models`)")
        config, out = central_config(central_settings(args)), args.out

    def progress(step: int, total: int) -> None:
        if not args.json and (step % 50 == 0 or step == total):
            print(f"step {step}/{total}", flush=True)

    def report(row) -> None:
        if args.json:
            print(json.dumps(row.__dict__), flush=True)
        else:
            its = f"  iterations {row.train_iterations:.1f} / {row.test_iterations:.1f}" if row.test_iterations else ""
            print(f"epoch {row.epoch}: lr {row.lr:.3g}  train loss {row.train_loss:.4f}  "
                  f"test accuracy {100 * row.test_accuracy:.2f}%{its}  ({row.seconds:.0f} s)", flush=True)

    result = train_central(config, out, resume=bool(args.resume), on_step=progress, on_epoch=report)
    if not args.json:
        print(f"final test accuracy {100 * result.final_accuracy:.2f}% after {result.steps} steps; results in {out}")
    return 0
