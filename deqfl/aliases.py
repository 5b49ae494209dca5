"""Old names of config keys, still accepted so that stored configs and run overrides load.

A renamed field is declared with `renamed_field(new, old, ...)`: it validates from either
name (an error names the key as given) and is written under the new one; a model lists its
renames in `renamed` (old -> new) and rejects a mapping that gives both names
(`reject_both_names`). Run ids hash the override strings a run was started with
(`deqfl.experiments.reproduce.suite`), never the parsed config, so accepting an old name
keeps every stored run's id.
"""

from __future__ import annotations

from typing import Any

from pydantic import AliasChoices, Field


def renamed_field(new: str, old: str, default: Any = ..., **field: Any) -> Any:
    """A pydantic Field named `new` that also validates from its old name `old`."""
    return Field(default, validation_alias=AliasChoices(new, old), **field)


def reject_both_names(data: Any, renamed: dict[str, str]) -> Any:
    """`data` unchanged; a ValueError when a mapping gives a key under both names."""
    if isinstance(data, dict):
        for old, new in renamed.items():
            if old in data and new in data:
                raise ValueError(f"give {new} or its old name {old}, not both")
    return data


def rename_old_keys(data: dict[str, Any], renamed: dict[str, str]) -> dict[str, Any]:
    """A mapping with each old key replaced by its new name (both given: ValueError), so
    that merging config layers lets a later layer replace an earlier one under either name."""
    reject_both_names(data, renamed)
    return {renamed.get(k, k): v for k, v in data.items()}
