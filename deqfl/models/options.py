"""Typed options of the model builders: what `model.options` may hold for each model.

Every registered builder has a pydantic options model (`ModelOptions`): the built-in ones
below, or one derived from the builder's keyword parameters for a user's builder that
declares none. `deqfl.models.registry.validate_model_options` checks a config's options
against it when the config is validated, before any data loads.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, Field, InstanceOf, create_model, model_validator

from deqfl.deq.backward import BackwardMode, backward_names, make_backward
from deqfl.deq.solvers import SolverConfig
from deqfl.errors import ConfigError
from deqfl.models.cells import cell_names, validate_cell_options
from deqfl.models.deq_classifier import DEFAULT_SOLVER

SolverOption = InstanceOf[SolverConfig] | dict[str, Any] | None


class ModelOptions(BaseModel):
    """Base of every builder's options: unknown options are errors; `builder_kwargs` are
    what the builder is called with."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def builder_kwargs(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in type(self).model_fields}


def solver_config(solver: SolverConfig | dict[str, Any] | None) -> SolverConfig:
    """A DEQ model's solver option as a SolverConfig: the default one updated by the dict."""
    if solver is None or isinstance(solver, SolverConfig):
        return solver or DEFAULT_SOLVER
    try:
        return DEFAULT_SOLVER.replace(**solver)
    except TypeError as exc:
        raise ConfigError(f"bad solver options {solver!r}: {exc}") from None


def backward_mode(backward: str | BackwardMode, backward_options: dict[str, Any] | None) -> BackwardMode:
    """A DEQ model's gradient-mode options as a BackwardMode."""
    if isinstance(backward, BackwardMode):
        return backward
    return make_backward(backward, **(backward_options or {}))


class CellChoice(ModelOptions):
    """The cell a DEQ model (or its unrolled twin) is built around, and the cell's own
    options; given `cell_options` keys override the model's default ones (a different
    `cell` than the model's starts from that cell's defaults)."""

    cell: str = Field("residual", description="The DEQ cell, a registered name (`deqfl.models.cells.cell_names()`: "
                      "residual, multiscale).")
    cell_options: dict[str, Any] | None = Field(
        None, description="The cell's own options: none for residual; for multiscale `branches` (1-4, width "
        "channels * 2^i), `stem_strides` (0-3: solve at the image side / 2^k) and `pool` (head's pooled side). Keys given "
        "override the model's default ones.",
    )

    def resolved_cell_options(self) -> dict[str, Any]:
        """The model's default cell options (when `cell` is its default cell) updated by the given ones."""
        fields = type(self).model_fields
        base = fields["cell_options"].default if self.cell == fields["cell"].default else None
        given = self.cell_options if "cell_options" in self.model_fields_set else None
        return {**(base or {}), **(given or {})}

    def builder_kwargs(self) -> dict[str, Any]:
        return super().builder_kwargs() | {"cell_options": self.resolved_cell_options()}

    @model_validator(mode="after")
    def _known_cell(self) -> CellChoice:
        if self.cell not in cell_names():
            raise ValueError(f"cell: unknown cell {self.cell!r}; use one of {cell_names()}")
        try:
            validate_cell_options(self.cell, self.resolved_cell_options())
        except ConfigError as exc:
            raise ValueError(f"cell_options: {exc}") from None
        return self


class DEQOptions(CellChoice):
    """Options of the DEQ classifiers (deq-mnist, deq-cifar, the mdeq models)."""

    channels: int = Field(16, gt=0, description="Channels of the DEQ state (the cell's width).")
    solver: SolverOption = Field(
        None, description="Forward solver in training: SolverConfig fields (method, max_iter, tol, "
        "stop_mode, m, lam, beta, damping) over the default Anderson m=5, cap 16, tol 1e-3.",
    )
    eval_solver: SolverOption = Field(
        None, description="Forward solver in evaluation, same fields (default: the training solver).",
    )
    backward: str | InstanceOf[BackwardMode] = Field(
        "jfb", description="Gradient mode the DEQ is built with: a registered name (jfb, ift, phantom, "
        "unrolled; `deqfl.deq.backward_names()`). In federated training a client's tier sets the mode of "
        "its local steps (`fleet.tiers[].backward`), which replaces this one there.",
    )
    backward_options: dict[str, Any] | None = Field(
        None, description="Options of the gradient mode (e.g. {max_iter = 12} for ift, {k = 3} for phantom).",
    )
    max_norm: float = Field(1.0, gt=0, description="Bound on each cell convolution's weight norm.")
    jac_reg_samples: int = Field(0, ge=0, description="Hutchinson probes of the Jacobian penalty (0: none).")

    @model_validator(mode="after")
    def _buildable(self) -> DEQOptions:
        if isinstance(self.backward, str) and self.backward not in backward_names():
            raise ValueError(f"backward: unknown gradient mode {self.backward!r}; use one of {backward_names()}")
        checks = {
            "solver": lambda: solver_config(self.solver),
            "eval_solver": lambda: solver_config(self.eval_solver),
            "backward_options": lambda: backward_mode(self.backward, self.backward_options),
        }
        for option, check in checks.items():
            try:
                check()
            except ConfigError as exc:
                raise ValueError(f"{option}: {exc}") from None
        return self


class DEQCifarOptions(DEQOptions):
    channels: int = Field(92, gt=0, description="Channels of the DEQ state (the cell's width).")


class UnrolledOptions(CellChoice):
    """Options of the unrolled twins of the DEQ classifiers."""

    channels: int = Field(16, gt=0, description="Channels of every cell.")
    depth: int = Field(16, gt=0, description="Number of distinct cells (the DEQ's iterations).")
    max_norm: float = Field(1.0, gt=0, description="Bound on each cell convolution's weight norm.")


class UnrolledCifarOptions(UnrolledOptions):
    channels: int = Field(92, gt=0, description="Channels of every cell.")


def multiscale_options(base: type[CellChoice], name: str, channels: int, branches: int, stem_strides: int,
                       **defaults: Any) -> type[CellChoice]:
    """`base` with the multiscale cell and these sizes as its defaults (an options model of
    one registered multiscale model)."""
    fields = {
        "channels": (int, Field(channels, gt=0, description="Width of the first branch (branch i: channels * 2^i).")),
        "cell": (str, Field("multiscale", description=base.model_fields["cell"].description)),
        "cell_options": (dict[str, Any] | None, Field({"branches": branches, "stem_strides": stem_strides},
                                                      description=base.model_fields["cell_options"].description)),
    }
    fields |= {k: (type(v), Field(v, description=base.model_fields[k].description)) for k, v in defaults.items()}
    return create_model(name, __base__=base, **fields)


class CNNSmallOptions(ModelOptions):
    widths: tuple[int, int] = Field((16, 32), description="Channels of the two convolutions.")

    @model_validator(mode="after")
    def _positive(self) -> ModelOptions:
        return _positive_widths(self)


class CNNLargeOptions(CNNSmallOptions):
    widths: tuple[int, int] = Field((32, 64), description="Channels of the two convolutions.")
    hidden: int = Field(128, ge=0, description="Hidden linear layer's width (0: none).")


class ResNetSmallOptions(ModelOptions):
    widths: tuple[int, ...] = Field((16, 32), min_length=1, description="Channels of each basic block.")
    pool: int = Field(4, gt=0, description="Side of the average-pooled map before the linear head.")

    @model_validator(mode="after")
    def _positive(self) -> ModelOptions:
        return _positive_widths(self)


class ResNetLargeOptions(ResNetSmallOptions):
    widths: tuple[int, ...] = Field((32, 64, 128), min_length=1, description="Channels of each basic block.")


class CifarResNetOptions(ModelOptions):
    """Options of He et al.'s CIFAR ResNets (resnet-8, -14, -20)."""

    widths: tuple[int, ...] = Field((16, 32, 64), min_length=1, description="Channels of each stage (non-decreasing; "
                                    "a stage after the first halves the side).")

    @model_validator(mode="after")
    def _non_decreasing(self) -> ModelOptions:
        _positive_widths(self)
        if any(b < a for a, b in zip(self.widths, self.widths[1:])):
            raise ValueError(f"widths: must not decrease (the shortcut zero-pads channels), got {list(self.widths)}")
        return self


def _positive_widths(options: ModelOptions) -> ModelOptions:
    if any(w < 1 for w in options.widths):
        raise ValueError(f"widths: every width must be >= 1, got {list(options.widths)}")
    return options


def options_from_signature(builder: Callable[..., Any]) -> type[ModelOptions]:
    """An options model for a builder that declares none: its keyword parameters after
    (input_shape, num_classes), untyped, with their defaults; any option when it takes
    **options. Only the options given are passed on, so the builder's defaults apply."""
    fields, open_ended = {}, False
    for name, p in inspect.signature(builder).parameters.items():
        if name in ("input_shape", "num_classes") or p.kind is p.VAR_POSITIONAL:
            continue
        if p.kind is p.VAR_KEYWORD:
            open_ended = True
            continue
        fields[name] = (Any, ... if p.default is p.empty else p.default)

    class _Derived(ModelOptions):
        model_config = ConfigDict(extra="allow" if open_ended else "forbid", frozen=True)

        def builder_kwargs(self) -> dict[str, Any]:
            return {name: getattr(self, name) for name in self.model_fields_set} | dict(self.model_extra or {})

    return create_model(f"{builder.__name__}_options", __base__=_Derived, **fields)
