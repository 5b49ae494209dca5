"""Model registry: `build_model(name, input_shape, num_classes, **options)`.

Register your own with

    @register_model("my-net", options=MyNetOptions)
    def my_net(input_shape, num_classes, **options) -> nn.Module: ...

where `MyNetOptions` is a `deqfl.models.options.ModelOptions` (a pydantic model of the
builder's typed options; without one, the options are the builder's keyword parameters,
untyped). Builders accept any sensible (C, H, W) input shape and class count. Options are
validated against the builder's options model (`validate_model_options`, which a config's
validation calls before any data loads): an unknown or invalid option is a ConfigError
naming it and the builder's options.
"""

from __future__ import annotations

from typing import Any, Callable

import pydantic
from torch import nn

from deqfl.errors import ConfigError
from deqfl.models.deq_classifier import DEQClassifier
from deqfl.models.explicit import CNN, CifarResNet, ResNet
from deqfl.models.options import (
    CNNLargeOptions,
    CifarResNetOptions,
    CNNSmallOptions,
    DEQCifarOptions,
    DEQOptions,
    ModelOptions,
    ResNetLargeOptions,
    ResNetSmallOptions,
    UnrolledCifarOptions,
    UnrolledOptions,
    backward_mode,
    multiscale_options,
    options_from_signature,
    solver_config,
)
from deqfl.models.unrolled import UnrolledClassifier

Builder = Callable[..., nn.Module]
Shape = tuple[int, int, int]
_REGISTRY: dict[str, Builder] = {}
_DEFAULT_SHAPES: dict[str, Shape] = {}
_OPTIONS: dict[str, type[ModelOptions]] = {}


def register_model(
    name: str, input_shape: Shape = (1, 28, 28), options: type[ModelOptions] | None = None
) -> Callable[[Builder], Builder]:
    """Decorator adding `builder(input_shape, num_classes, **options)` under `name`;
    `input_shape` is the model's natural input, used when build_model is given none;
    `options` the builder's typed options (default: derived from its signature)."""

    def decorate(builder: Builder) -> Builder:
        if name in _REGISTRY:
            raise ConfigError(f"model {name!r} is already registered")
        _REGISTRY[name] = builder
        _DEFAULT_SHAPES[name] = tuple(input_shape)
        _OPTIONS[name] = options or options_from_signature(builder)
        return builder

    return decorate


def list_models() -> list[str]:
    return list(_REGISTRY)


def default_input_shape(name: str) -> Shape:
    """The (C, H, W) a registered model was designed for."""
    return _DEFAULT_SHAPES[_known(name)]


def model_options(name: str) -> type[ModelOptions]:
    """The options model of builder `name`."""
    return _OPTIONS[_known(name)]


def validate_model_options(name: str, options: dict[str, Any]) -> ModelOptions:
    """`options` checked against model `name`'s options model; a ConfigError naming each
    bad option and the builder's options otherwise."""
    schema = model_options(name)
    try:
        return schema.model_validate(options)
    except pydantic.ValidationError as exc:
        problems = "; ".join(_describe(err) for err in exc.errors())
        valid = ", ".join(schema.model_fields) or "none"
        raise ConfigError(f"model {name!r}: {problems}. Its options are: {valid}") from None


def _describe(err: dict[str, Any]) -> str:
    where = ".".join(str(p) for p in err["loc"])
    message = "unknown option" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
    got = "" if err["type"] == "missing" else f" (got {err['input']!r})"
    return f"{where}: {message}{got}" if where else f"{message}"


def _known(name: str) -> str:
    if name not in _REGISTRY:
        raise ConfigError(f"model {name!r} is unknown; registered models: {list_models()}")
    return name


def build_model(name: str, input_shape: Shape | None = None, num_classes: int = 10, **options: Any) -> nn.Module:
    """Build model `name` for `input_shape` (default: the model's own) and `num_classes`."""
    input_shape = default_input_shape(name) if input_shape is None else input_shape
    if len(input_shape) != 3 or min(input_shape) < 1:
        raise ConfigError(f"input_shape must be (C, H, W) with positive sizes, got {input_shape!r}")
    if num_classes < 2:
        raise ConfigError(f"num_classes must be >= 2, got {num_classes!r}")
    kwargs = validate_model_options(name, options).builder_kwargs()
    return _REGISTRY[name](tuple(int(s) for s in input_shape), int(num_classes), **kwargs)


def _deq(input_shape, num_classes, *, channels, solver, eval_solver, backward, backward_options, max_norm,
         jac_reg_samples, cell, cell_options):
    return DEQClassifier(
        input_shape,
        num_classes,
        channels,
        solver=solver_config(solver),
        eval_solver=None if eval_solver is None else solver_config(eval_solver),
        backward=backward_mode(backward, backward_options),
        max_norm=max_norm,
        jac_reg_samples=jac_reg_samples,
        cell=cell,
        cell_options=cell_options,
    )


def _unrolled(input_shape, num_classes, *, channels, depth, max_norm, cell, cell_options):
    return UnrolledClassifier(input_shape, num_classes, channels, depth, max_norm, cell, cell_options)


@register_model("deq-mnist", options=DEQOptions)
def deq_mnist(input_shape, num_classes, **options):
    """DESIGN 6b: 16 channels, Anderson m=5 lam=1e-4 tol=1e-3 cap 16, JFB (~7.4K params)."""
    return _deq(input_shape, num_classes, **options)


@register_model("deq-cifar", input_shape=(3, 32, 32), options=DEQCifarOptions)
def deq_cifar(input_shape, num_classes, **options):
    """The same classifier at 92 channels (~170K params on 3x32x32)."""
    return _deq(input_shape, num_classes, **options)


@register_model("unrolled-mnist", options=UnrolledOptions)
def unrolled_mnist(input_shape, num_classes, **options):
    """deq-mnist's unrolled twin: depth distinct cells."""
    return _unrolled(input_shape, num_classes, **options)


@register_model("unrolled-cifar", input_shape=(3, 32, 32), options=UnrolledCifarOptions)
def unrolled_cifar(input_shape, num_classes, **options):
    """deq-cifar's unrolled twin: depth distinct cells."""
    return _unrolled(input_shape, num_classes, **options)


MULTISCALE_SIZES: dict[str, tuple[int, int]] = {"tiny": (20, 2), "small": (16, 3), "large": (20, 3)}
"""The multiscale DEQ sizes: (channels of the first branch, branches). mdeq-<size>-16 and
mdeq-<size>-8 solve at 16x16 and 8x8 on 32x32 images (one and two stride-2 stem
convolutions); mdeq-small solves at 32x32 (MDEQ-small's resolution and about its size);
unrolled-mdeq-<size>-16 is the unrolled twin of mdeq-<size>-16, 4 distinct cells deep."""
MULTISCALE_MODELS: dict[str, tuple[str, int]] = {
    "mdeq-small": ("small", 0),
    **{f"mdeq-{size}-{32 >> k}": (size, k) for size in MULTISCALE_SIZES for k in (1, 2)},
}


def _register_multiscale() -> None:
    for name, (size, strides) in MULTISCALE_MODELS.items():
        channels, branches = MULTISCALE_SIZES[size]
        options = multiscale_options(DEQOptions, f"{name}_options", channels, branches, strides)
        register_model(name, input_shape=(3, 32, 32), options=options)(_deq)
    for size in MULTISCALE_SIZES:
        channels, branches = MULTISCALE_SIZES[size]
        options = multiscale_options(UnrolledOptions, f"unrolled-mdeq-{size}-16_options", channels, branches, 1, depth=4)
        register_model(f"unrolled-mdeq-{size}-16", input_shape=(3, 32, 32), options=options)(_unrolled)


_register_multiscale()


@register_model("cnn-small", options=CNNSmallOptions)
def cnn_small(input_shape, num_classes, *, widths):
    return CNN(input_shape, num_classes, tuple(widths))


@register_model("cnn-large", options=CNNLargeOptions)
def cnn_large(input_shape, num_classes, *, widths, hidden):
    return CNN(input_shape, num_classes, tuple(widths), hidden)


@register_model("resnet-small", options=ResNetSmallOptions)
def resnet_small(input_shape, num_classes, *, widths, pool):
    return ResNet(input_shape, num_classes, tuple(widths), pool)


@register_model("resnet-large", options=ResNetLargeOptions)
def resnet_large(input_shape, num_classes, *, widths, pool):
    return ResNet(input_shape, num_classes, tuple(widths), pool)


def _cifar_resnet(blocks: int) -> Builder:
    def build(input_shape, num_classes, *, widths):
        return CifarResNet(input_shape, num_classes, blocks, tuple(widths))

    return build


for _blocks in (1, 2, 3):
    register_model(f"resnet-{6 * _blocks + 2}", input_shape=(3, 32, 32), options=CifarResNetOptions)(_cifar_resnet(_blocks))


BUILTIN_MODELS: tuple[str, ...] = tuple(_REGISTRY)
"""The models deqfl itself registers (documented in docs/CONFIG.md)."""
