"""The compatibility matrix of docs/FUSION.md, generated from the capability flags.

    python -m deqfl.fl.fusion.matrix --write docs/FUSION.md

replaces the block between the BEGIN and END markers; a test checks it is current. Only
the rules deqfl ships are listed (user-registered ones follow the same flags).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from deqfl.fl.fusion.base import RuleOptions
from deqfl.fl.fusion.compat import DP_FLAGS, coverage_aggregators
from deqfl.fl.fusion.registry import AGGREGATORS, OPTIMIZERS, WEIGHTINGS, Capabilities

BEGIN, END = "<!-- fusion-matrix:begin -->", "<!-- fusion-matrix:end -->"


def _builtin(names: list[str], registry) -> list[str]:
    """The entries deqfl itself ships (rules registered by users or tests are left out)."""
    return [n for n in names if registry.get(n).__module__.startswith("deqfl.")]


def _mark(value: bool) -> str:
    return "yes" if value else "-"


def _options(model: type[RuleOptions]) -> str:
    """`name` (default) per option, then the old flat keys that still set them."""
    options = ", ".join(f"`{k}` ({f.default})" for k, f in model.model_fields.items()) or "none"
    old = ", ".join(f"`fusion.{k}` (= `{v}`)" for k, v in model.legacy_keys.items())
    return f"{options}; old flat keys still accepted: {old}" if old else options


def _flag_table(title: str, names: list[str], flags: list[str], registry) -> list[str]:
    """One row per entry: its capability flags and its options (`<title>_options`)."""
    header = f"| {title} | " + " | ".join(f"`{f}`" for f in flags) + f" | `{title}_options` (default) |"
    rows = [header, "|---" * (len(flags) + 2) + "|"]
    for name in names:
        caps: Capabilities = registry.flags(name)
        marks = " | ".join(_mark(getattr(caps, f)) for f in flags)
        rows.append(f"| `{name}` | {marks} | {_options(registry.options(name))} |")
    return rows


def _optimizer_rows() -> list[str]:
    rows = ["| server optimiser | `stateful` | state entries | `server_optimizer_options` (default) |", "|---|---|---|---|"]
    for name in _builtin(OPTIMIZERS.names(), OPTIMIZERS):
        cls = OPTIMIZERS.get(name)
        entries = [f"`{b}/<key>`" for b in cls.BUFFERS] + [f"`{s}`" for s in cls.SCALARS]
        options = _options(cls.Options)
        if name == "sgd":
            options = "none; step size `fusion.server_lr` (1.0)"
        rows.append(f"| `{name}` | {_mark(OPTIMIZERS.flags(name).stateful)} | {', '.join(entries) or 'none'} | {options} |")
    return rows


def _allowed(names: list[str], *required: list[str] | None) -> list[str]:
    return [n for n in names if all(r is None or n in r for r in required)]


def _combination_rows() -> list[str]:
    rows = [
        "| privacy.mode | width-sliced tiers | weightings | aggregators | server optimisers |",
        "|---|---|---|---|---|",
    ]
    everything = ", ".join(_builtin(OPTIMIZERS.names(), OPTIMIZERS))
    for mode in ("off", "central", "local"):
        flag = DP_FLAGS.get(mode)
        for sliced in (False, True):
            weightings = _allowed(_builtin(WEIGHTINGS.names(), WEIGHTINGS), WEIGHTINGS.having(flag) if flag else None)
            aggregators = _allowed(
                _builtin(AGGREGATORS.names(), AGGREGATORS),
                AGGREGATORS.having(flag) if flag else None,
                coverage_aggregators() if sliced else None,
            )
            if not aggregators:
                rows.append(f"| {mode} | {_mark(sliced)} | refused | refused | refused |")
                continue
            rows.append(
                f"| {mode} | {_mark(sliced)} | {', '.join(weightings)} | {', '.join(aggregators)} | {everything} |"
            )
    return rows


def render_matrix() -> str:
    """The generated part of docs/FUSION.md (between its BEGIN and END markers)."""
    lines = [BEGIN, "", "Allowed combinations (anything not listed is refused with a ConfigError):", ""]
    lines += _combination_rows()
    lines += ["", "Capability flags and options of the registered rules:", ""]
    weightings, aggregators = _builtin(WEIGHTINGS.names(), WEIGHTINGS), _builtin(AGGREGATORS.names(), AGGREGATORS)
    lines += _flag_table("weighting", weightings, ["central_dp", "local_dp"], WEIGHTINGS)
    lines += [""]
    lines += _flag_table("aggregator", aggregators, ["central_dp", "local_dp", "handles_coverage"], AGGREGATORS)
    lines += [""] + _optimizer_rows() + ["", END]
    return "\n".join(lines)


def replace_matrix(text: str) -> str:
    """`text` (docs/FUSION.md) with its generated block replaced by `render_matrix()`."""
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    return head + render_matrix() + tail


def main() -> None:
    parser = argparse.ArgumentParser(description="Print or update the fusion compatibility matrix.")
    parser.add_argument("--write", type=Path, help="update the generated block of this file in place")
    args = parser.parse_args()
    if args.write is None:
        print(render_matrix())
    else:
        args.write.write_text(replace_matrix(args.write.read_text()))


if __name__ == "__main__":
    main()
