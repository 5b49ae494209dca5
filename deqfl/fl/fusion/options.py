"""The options tables of the chosen weighting and aggregator, and the old flat keys that
feed them.

`fusion.weighting_options` and `fusion.aggregator_options` are checked by the chosen
entry's `RuleOptions` model (its registry's `options(name)`): a key the model lacks, or a
value out of its range, is a ValueError naming the key. A table is kept canonical, holding
only the values that differ from the entry's defaults, so a config that spells out a
default equals one that leaves it out (same run hash, same `config.toml` comparison).

Old flat keys from before rules had options stay accepted (`fusion.quality`,
`fusion.trim_fraction`, `fusion.krum_byzantine`, `fusion.krum_select`); each entry declares
the ones it takes in `RuleOptions.legacy_keys`. A flat key is always checked by the model
of the first entry (by name) declaring it; it lands in the chosen entry's table when that
entry declares it, and is ignored otherwise, as before, when it had no effect on other
rules (every stored `config.toml` spells out all of them). A flat key and the table
entry it maps to given together are an error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from deqfl.fl.fusion.base import RuleOptions
from deqfl.fl.fusion.registry import AGGREGATORS, WEIGHTINGS, Registry

REGISTRIES: dict[str, Registry[Any]] = {"weighting": WEIGHTINGS, "aggregator": AGGREGATORS}
"""The config key selecting an entry -> its registry; the table is `<key>_options`."""


def legacy_owners(reserved: set[str]) -> dict[str, tuple[str, str, type[RuleOptions], str]]:
    """Old flat key -> (kind, entry, options model, option) for the first entry (by name)
    declaring it; keys in `reserved` (FusionConfig's own fields) are never taken."""
    owners: dict[str, tuple[str, str, type[RuleOptions], str]] = {}
    for kind, registry in REGISTRIES.items():
        for name in registry.names():
            model = registry.options(name)
            for old, option in model.legacy_keys.items():
                if old not in reserved:
                    owners.setdefault(old, (kind, name, model, option))
    return owners


def _problems(exc: ValidationError, table: str) -> str:
    """The errors of one options table, each naming `table.<key>` and the value given."""
    lines = []
    for err in exc.errors():
        key = ".".join([table, *(str(p) for p in err["loc"])])
        problem = "unknown option" if err["type"] == "extra_forbidden" else f"{err['msg']} (got {err['input']!r})"
        lines.append(f"{key}: {problem}")
    return "; ".join(lines)


def _chosen(data: Mapping[str, Any], kind: str, defaults: Mapping[str, str]) -> str | None:
    """The entry `data` selects for `kind`, or None when it names no registered entry
    (the field's own validator reports that)."""
    name = data.get(kind, defaults[kind])
    return name if isinstance(name, str) and name in REGISTRIES[kind].names() else None


def fold_legacy_keys(data: Mapping[str, Any], defaults: Mapping[str, str], reserved: set[str]) -> dict[str, Any]:
    """`data` (a fusion mapping) without old flat keys: each is checked by its owner's
    model and moved into the chosen entry's table when that entry declares it (module
    docstring). ValueError naming the key when its value is invalid or when the table
    gives the same option too."""
    out = dict(data)
    for old, (kind, owner, model, option) in legacy_owners(reserved).items():
        if old not in out:
            continue
        value = out.pop(old)
        try:
            model.model_validate({option: value})
        except ValidationError as exc:
            problems = _problems(exc, f"fusion.{old}").replace(f"fusion.{old}.{option}", f"fusion.{old}")
            raise ValueError(f"{problems}; it is the old name of {kind}_options.{option} ({kind} '{owner}')") from None
        chosen = _chosen(out, kind, defaults)
        target = REGISTRIES[kind].options(chosen).legacy_keys.get(old) if chosen else None
        table = out.get(f"{kind}_options", {})
        if target is None or not isinstance(table, Mapping):
            continue
        if target in table:
            raise ValueError(f"give fusion.{kind}_options.{target} or its old name fusion.{old}, not both")
        out[f"{kind}_options"] = {**table, target: value}
    return out


def canonical_tables(data: Mapping[str, Any], defaults: Mapping[str, str]) -> dict[str, Any]:
    """`data` with each options table checked by its chosen entry's model and reduced to
    the values that differ from that model's defaults; ValueError naming each bad key."""
    out = dict(data)
    for kind, registry in REGISTRIES.items():
        chosen, key = _chosen(out, kind, defaults), f"{kind}_options"
        table = out.get(key, {})
        if chosen is None or not isinstance(table, Mapping):
            continue
        model = registry.options(chosen)
        try:
            typed = model.model_validate(dict(table))
        except ValidationError as exc:
            takes = ", ".join(model.model_fields) or "none"
            raise ValueError(f"{_problems(exc, 'fusion.' + key)} ({kind} '{chosen}' takes options: {takes})") from None
        out[key] = typed.model_dump(exclude_defaults=True)
    return out
