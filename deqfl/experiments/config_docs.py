"""Generate docs/CONFIG.md from the config types: every key, its type, default, meaning.

    python -m deqfl.experiments.config_docs > docs/CONFIG.md

A test checks that docs/CONFIG.md is up to date with this output.
"""

from __future__ import annotations

import json
import types
import typing

from pydantic import BaseModel

from deqfl.experiments.config import ExperimentConfig
from deqfl.fl.profiles import TierConfig
from deqfl.models import model_options
from deqfl.models.registry import BUILTIN_MODELS

HEADER = """# Experiment configuration

One experiment is one TOML file (plus `--set section.key=value` overrides on the command
line); keys left out take the defaults of the packaged default experiment
(`deqfl/presets/default.toml`), which overrides a few of the type defaults listed here.
Unknown keys and invalid values are errors, reported before any work starts.
This page is generated from the config types: `python -m deqfl.experiments.config_docs`.
"""


def _type_name(annotation) -> str:
    text = repr(annotation) if not isinstance(annotation, type) else annotation.__name__
    return text.replace("typing.", "").replace("deqfl.fl.profiles.", "").replace("|", "\\|")


def _default(field) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "(section)"
    return "`" + json.dumps(value) + "`"


def _option_type(annotation) -> str:
    """A model option's type as a config writes it: Python-object alternatives (InstanceOf,
    for callers of build_model) left out."""
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    members = typing.get_args(annotation) if union else (annotation,)
    kept = [m for m in members if typing.get_origin(m) is not typing.Annotated]
    return " \\| ".join("None" if m is type(None) else _type_name(m) for m in kept)


def _table(model: type[BaseModel], type_name=_type_name) -> list[str]:
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        description = (field.description or "").replace("|", "\\|")
        rows.append(f"| `{name}` | `{type_name(field.annotation)}` | {_default(field)} | {description} |")
    return rows


def render() -> str:
    lines = [HEADER]
    for name, field in ExperimentConfig.model_fields.items():
        section = field.annotation
        lines += [f"## [{name}]", ""]
        if section.__doc__ and section.__module__ != "deqfl.experiments.config":
            lines += [" ".join(section.__doc__.split()), ""]
        lines += _table(section) + [""]
    lines += ["## [[fleet.tiers]]", "", " ".join((TierConfig.__doc__ or "").split()), ""]
    lines += _table(TierConfig) + [""]
    lines += ["Fleet presets shipped with deqfl: " + ", ".join(f"`{p}`" for p in _presets()) + ".", ""]
    lines += ["## model.options, per model", "",
              "Each model's builder takes typed options (`deqfl.models.options`); `model.options` is "
              "checked against them when the config is validated.", ""]
    for name in BUILTIN_MODELS:
        lines += [f"### `model.name = \"{name}\"`", ""] + _table(model_options(name), _option_type) + [""]
    return "\n".join(lines)


def _presets() -> list[str]:
    from deqfl.fl.profiles import list_presets  # noqa: PLC0415

    return list_presets()


if __name__ == "__main__":
    print(render(), end="")
