"""`deqfl models`: list every registered model with its size."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from deqfl.errors import ConfigError
from deqfl.models import build_model, default_input_shape, find_deq, list_models, parameter_count, serialized_bytes


def _shape(text: str) -> tuple[int, int, int]:
    try:
        shape = tuple(int(s) for s in text.lower().split("x"))
    except ValueError:
        shape = ()
    if len(shape) != 3:
        raise ConfigError(f"--input-shape must look like CxHxW (e.g. 1x28x28), got {text!r}")
    return shape  # type: ignore[return-value]


def run(args: argparse.Namespace) -> int:
    forced = None if args.input_shape is None else _shape(args.input_shape)
    table = Table(title=f"deqfl models ({args.num_classes} classes)")
    for column in ("model", "kind", "input", "parameters", "bytes (safetensors)"):
        table.add_column(column, justify="right" if column in ("parameters", "bytes (safetensors)") else "left")
    for name in list_models():
        shape = forced or default_input_shape(name)
        model = build_model(name, shape, args.num_classes)
        kind = "DEQ" if find_deq(model) is not None else "explicit"
        size = "x".join(map(str, shape))
        table.add_row(name, kind, size, f"{parameter_count(model):,}", f"{serialized_bytes(model):,}")
    Console().print(table)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "models",
        help="list the registered models with parameter counts and serialized sizes",
        description="List every registered model with its parameter count and the size in bytes "
        "of the safetensors serialisation of its federated state (what a client uploads).",
    )
    parser.add_argument("--input-shape", default=None, help="input shape CxHxW for every model (default: each model's own)")
    parser.add_argument("--num-classes", type=int, default=10, help="number of classes (default 10)")
    parser.set_defaults(func=run)
