"""Which parts of a model are shared and which stay on the client.

A model declares its personal part by module: the names in its `personal_modules`
attribute when it has one, else its `head` module (the DEQ classifier's pooled linear
head, the ResNets' head), else its last `nn.Linear` (the CNNs' final classifier). Every
other module is shared: the DEQ classifier's stem and cell, an explicit model's body.

`personal = "head+norm"` also keeps every normalisation layer on the client (FedBN, Li et
al., ICLR 2021: GroupNorm, BatchNorm, LayerNorm, InstanceNorm with their statistics);
`"norm"` keeps only the normalisation layers. A state key is personal when it lies under
a personal module (`<module>.` prefix).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import nn

from deqfl.errors import ConfigError
from deqfl.models import federated_state

PersonalPart = Literal["head", "norm", "head+norm"]

NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
"""Normalisation layers FedBN keeps local (InstanceNorm and BatchNorm share `_NormBase`)."""


@dataclass(frozen=True)
class Split:
    """The model's federated state keys, divided; both sorted, disjoint, together all keys."""

    shared: tuple[str, ...]
    personal: tuple[str, ...]


def head_modules(model: nn.Module) -> tuple[str, ...]:
    """The model's declared personal modules (module docstring); ConfigError when it has
    neither a declaration, a `head`, nor a linear layer."""
    declared = getattr(model, "personal_modules", None)
    if declared is not None:
        return tuple(declared)
    if isinstance(getattr(model, "head", None), nn.Module):
        return ("head",)
    linear = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not linear:
        raise ConfigError(
            f"{type(model).__name__} declares no personal part: give it a `head` module or a "
            "`personal_modules` tuple of module names (docs/EXTENDING.md, \"Add a personalised algorithm\")"
        )
    return (linear[-1],)


def norm_modules(model: nn.Module) -> tuple[str, ...]:
    """Names of the model's normalisation layers (`NORM_LAYERS`)."""
    return tuple(name for name, module in model.named_modules() if name and isinstance(module, NORM_LAYERS))


def split_model(model: nn.Module, personal: PersonalPart = "head") -> Split:
    """The model's federated keys split into shared and personal (module docstring)."""
    modules = (head_modules(model) if "head" in personal else ()) + (norm_modules(model) if "norm" in personal else ())
    names = dict(model.named_modules())
    unknown = [m for m in modules if m not in names]
    if unknown:
        raise ConfigError(f"{type(model).__name__}.personal_modules names no module {unknown[0]!r}")
    keys = list(federated_state(model))
    mine = {k for k in keys if any(k.startswith(m + ".") for m in modules)}
    if not mine:
        raise ConfigError(f"personalization.personal = {personal!r} selects no parameter of {type(model).__name__}")
    return Split(shared=tuple(sorted(set(keys) - mine)), personal=tuple(sorted(mine)))
