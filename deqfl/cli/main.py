"""The `deqfl` command line: one module per subcommand, each with `register(subparsers)`.

A subcommand module defines `register(subparsers) -> None`, which adds its parser and sets
`func=<callable(args) -> int>` as the parser default.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from deqfl import __version__
from deqfl.errors import DeqflError

SUBCOMMAND_MODULES = (
    "deqfl.cli.cmd_run",
    "deqfl.cli.cmd_eval",
    "deqfl.cli.cmd_export",
    "deqfl.cli.cmd_data",
    "deqfl.cli.cmd_models",
    "deqfl.cli.cmd_bench",
    "deqfl.cli.cmd_reproduce",
    "deqfl.cli.cmd_central",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deqfl",
        description="Federated learning with deep equilibrium models on heterogeneous devices.",
    )
    parser.add_argument("--version", action="version", version=f"deqfl {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        module = import_optional(name)
        if module is not None:
            module.register(subparsers)
    return parser


def import_optional(name: str):
    """The module `name`, or None when that module itself does not exist (an error inside
    it is raised)."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:
            raise
        return None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except DeqflError as exc:
        print(f"deqfl: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("deqfl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
