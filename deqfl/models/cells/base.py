"""The cell registry: a DEQ cell family by name, with its typed options.

A *cell family* is what the DEQ classifier and its unrolled twin are assembled from:

    family = make_family(name, input_shape, num_classes, channels, max_norm, **options)
    stem = family.stem()    # x -> u, the injection (computed once per forward)
    cell = family.cell()    # f(z, u) -> z', the weight-tied map (one per layer when unrolled)
    head = family.head()    # z* -> logits

built in that order (the order fixes which random draws initialise which weights). The
cell keeps the solver contract (`deqfl.deq.solvers.base`): z' has z's shape, samples do
not interact, and its state starts from `initial_state(u)` (zeros shaped like u unless the
cell defines it). Register a family with

    @register_cell("my-cell", options=MyCellOptions)
    class MyCell(CellFamily): ...

where `MyCellOptions` is a `CellOptions` (a pydantic model of the family's own options,
given as a DEQ model's `cell_options`); the family is constructed as
`MyCell(input_shape, num_classes, channels, max_norm, **options)`.
"""

from __future__ import annotations

from typing import Any, Callable

import pydantic
from pydantic import BaseModel, ConfigDict
from torch import nn

from deqfl.errors import ConfigError


class CellOptions(BaseModel):
    """Base of every cell family's options: unknown options are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class CellFamily:
    """Stem, cell and head of a DEQ classifier built around one kind of cell.

    input_shape: (C, H, W) of the images; channels: the cell's width (its first branch's
    for a multi-branch cell); max_norm: the bound of the cell's weight normalisation."""

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int, channels: int, max_norm: float) -> None:
        self.input_shape, self.num_classes, self.channels, self.max_norm = input_shape, num_classes, channels, max_norm

    def stem(self) -> nn.Module:
        raise NotImplementedError

    def cell(self) -> nn.Module:
        raise NotImplementedError

    def head(self) -> nn.Module:
        raise NotImplementedError


_REGISTRY: dict[str, type[CellFamily]] = {}
_OPTIONS: dict[str, type[CellOptions]] = {}


def register_cell(name: str, options: type[CellOptions] = CellOptions) -> Callable[[type[CellFamily]], type[CellFamily]]:
    """Class decorator adding a CellFamily under `name` with its options model."""

    def decorate(family: type[CellFamily]) -> type[CellFamily]:
        if name in _REGISTRY and _REGISTRY[name] is not family:
            raise ConfigError(f"cell {name!r} is already registered (by {_REGISTRY[name].__module__})")
        _REGISTRY[name], _OPTIONS[name] = family, options
        return family

    return decorate


def cell_names() -> tuple[str, ...]:
    """The registered cell names, sorted."""
    return tuple(sorted(_REGISTRY))


def validate_cell_options(name: str, options: dict[str, Any] | None) -> CellOptions:
    """`options` checked against cell `name`'s options model; a ConfigError naming the
    registered cells, or each bad option and the cell's options."""
    if name not in _REGISTRY:
        raise ConfigError(f"cell {name!r} is unknown; use one of {cell_names()}")
    schema = _OPTIONS[name]
    try:
        return schema.model_validate(options or {})
    except pydantic.ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: "
            f"{'unknown option' if err['type'] == 'extra_forbidden' else err['msg'].removeprefix('Value error, ')}"
            for err in exc.errors()
        )
        raise ConfigError(f"cell {name!r}: {problems}. Its options are: {', '.join(schema.model_fields) or 'none'}") from None


def make_family(
    name: str,
    input_shape: tuple[int, int, int],
    num_classes: int,
    channels: int,
    max_norm: float,
    options: dict[str, Any] | None = None,
) -> CellFamily:
    """The cell family `name` for this classifier, its options validated."""
    checked = validate_cell_options(name, options)
    kwargs = {k: getattr(checked, k) for k in type(checked).model_fields}
    return _REGISTRY[name](input_shape, num_classes, channels, max_norm, **kwargs)
