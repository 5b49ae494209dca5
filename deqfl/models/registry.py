"""Model registry: `build_model(name, input_shape, num_classes, **options)`.

Register your own with

    @register_model("my-net")
    def my_net(input_shape, num_classes, **options) -> nn.Module: ...

Builders accept any sensible (C, H, W) input shape and class count; unknown options are a
ConfigError naming the builder's options.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

from torch import nn

from deqfl.deq.backward import BackwardMode, make_backward
from deqfl.deq.solvers import SolverConfig
from deqfl.errors import ConfigError
from deqfl.models.deq_classifier import DEFAULT_SOLVER, DEQClassifier
from deqfl.models.explicit import CNN, ResNet
from deqfl.models.unrolled import UnrolledClassifier

Builder = Callable[..., nn.Module]
Shape = tuple[int, int, int]
_REGISTRY: dict[str, Builder] = {}
_DEFAULT_SHAPES: dict[str, Shape] = {}


def register_model(name: str, input_shape: Shape = (1, 28, 28)) -> Callable[[Builder], Builder]:
    """Decorator adding `builder(input_shape, num_classes, **options)` under `name`;
    `input_shape` is the model's natural input, used when build_model is given none."""

    def decorate(builder: Builder) -> Builder:
        if name in _REGISTRY:
            raise ConfigError(f"model {name!r} is already registered")
        _REGISTRY[name] = builder
        _DEFAULT_SHAPES[name] = tuple(input_shape)
        return builder

    return decorate


def list_models() -> list[str]:
    return list(_REGISTRY)


def default_input_shape(name: str) -> Shape:
    """The (C, H, W) a registered model was designed for."""
    if name not in _REGISTRY:
        raise ConfigError(f"model {name!r} is unknown; registered models: {list_models()}")
    return _DEFAULT_SHAPES[name]


def build_model(name: str, input_shape: Shape | None = None, num_classes: int = 10, **options: Any) -> nn.Module:
    """Build model `name` for `input_shape` (default: the model's own) and `num_classes`."""
    input_shape = default_input_shape(name) if input_shape is None else input_shape
    if len(input_shape) != 3 or min(input_shape) < 1:
        raise ConfigError(f"input_shape must be (C, H, W) with positive sizes, got {input_shape!r}")
    if num_classes < 2:
        raise ConfigError(f"num_classes must be >= 2, got {num_classes!r}")
    builder = _REGISTRY[name]
    params = inspect.signature(builder).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        allowed = [p for p in params if p not in ("input_shape", "num_classes")]
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            raise ConfigError(f"model {name!r} has no option(s) {unknown}; its options are {allowed}")
    return builder(tuple(int(s) for s in input_shape), int(num_classes), **options)


def _solver(solver: SolverConfig | dict | None) -> SolverConfig:
    if solver is None or isinstance(solver, SolverConfig):
        return solver or DEFAULT_SOLVER
    try:
        return DEFAULT_SOLVER.replace(**solver)
    except TypeError as exc:
        raise ConfigError(f"bad solver options {solver!r}: {exc}") from None


def _backward(backward: str | BackwardMode, backward_options: dict | None) -> BackwardMode:
    if isinstance(backward, BackwardMode):
        return backward
    return make_backward(backward, **(backward_options or {}))


def _deq(input_shape, num_classes, channels, solver, eval_solver, backward, backward_options, max_norm, jac_reg_samples):
    return DEQClassifier(
        input_shape,
        num_classes,
        channels,
        solver=_solver(solver),
        eval_solver=None if eval_solver is None else _solver(eval_solver),
        backward=_backward(backward, backward_options),
        max_norm=max_norm,
        jac_reg_samples=jac_reg_samples,
    )


@register_model("deq-mnist")
def deq_mnist(input_shape, num_classes, channels=16, solver=None, eval_solver=None, backward="jfb",
              backward_options=None, max_norm=1.0, jac_reg_samples=0):
    """DESIGN 6b: 16 channels, Anderson m=5 lam=1e-4 tol=1e-3 cap 16, JFB (~7.4K params)."""
    return _deq(input_shape, num_classes, channels, solver, eval_solver, backward, backward_options, max_norm, jac_reg_samples)


@register_model("deq-cifar", input_shape=(3, 32, 32))
def deq_cifar(input_shape, num_classes, channels=92, solver=None, eval_solver=None, backward="jfb",
              backward_options=None, max_norm=1.0, jac_reg_samples=0):
    """The same classifier at 92 channels (~170K params on 3x32x32)."""
    return _deq(input_shape, num_classes, channels, solver, eval_solver, backward, backward_options, max_norm, jac_reg_samples)


@register_model("unrolled-mnist")
def unrolled_mnist(input_shape, num_classes, channels=16, depth=16, max_norm=1.0):
    """deq-mnist's unrolled twin: depth distinct cells."""
    return UnrolledClassifier(input_shape, num_classes, channels, depth, max_norm)


@register_model("unrolled-cifar", input_shape=(3, 32, 32))
def unrolled_cifar(input_shape, num_classes, channels=92, depth=16, max_norm=1.0):
    """deq-cifar's unrolled twin: depth distinct cells."""
    return UnrolledClassifier(input_shape, num_classes, channels, depth, max_norm)


@register_model("cnn-small")
def cnn_small(input_shape, num_classes, widths=(16, 32)):
    return CNN(input_shape, num_classes, tuple(widths))


@register_model("cnn-large")
def cnn_large(input_shape, num_classes, widths=(32, 64), hidden=128):
    return CNN(input_shape, num_classes, tuple(widths), hidden)


@register_model("resnet-small")
def resnet_small(input_shape, num_classes, widths=(16, 32), pool=4):
    return ResNet(input_shape, num_classes, tuple(widths), pool)


@register_model("resnet-large")
def resnet_large(input_shape, num_classes, widths=(32, 64, 128), pool=4):
    return ResNet(input_shape, num_classes, tuple(widths), pool)
