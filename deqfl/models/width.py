"""HeteroFL-style width slicing (Diao, Ding and Tarokh, ICLR 2021): the sub-model baseline.

A device of width ratio r trains the sub-model whose every hidden layer keeps the first
ceil(r w) of its w channels; its tensors are the *leading slices* of the global model's:

    sub[k] = global[k][:s_1, :s_2, ...]   with (s_1, s_2, ...) the sub-model's shape of k.

The server writes each returned slice back into the global shape (`embed_state`) and
averages every entry over the clients that trained it (the `heterofl` aggregator). A model
can be sliced when it has a `narrowed(ratio)` method returning the sub-model (the explicit
`CNN` does); the DEQ never needs it, since a weak device runs fewer solver iterations of
the same model instead.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from deqfl.devices import module_device
from deqfl.errors import ConfigError
from deqfl.models.federated import federated_state

Shapes = dict[str, tuple[int, ...]]


def narrow_model(model: nn.Module, ratio: float) -> nn.Module:
    """The width-`ratio` sub-model of `model` (a fresh module on `model`'s device; `model`
    itself when ratio is 1). ConfigError when the model cannot be sliced or the ratio is outside (0, 1]."""
    if not 0 < ratio <= 1:
        raise ConfigError(f"a width ratio must be in (0, 1], got {ratio!r}")
    if ratio == 1:
        return model
    if not callable(getattr(model, "narrowed", None)):
        raise ConfigError(
            f"{type(model).__name__} cannot be width-sliced (it has no `narrowed` method): "
            "a tier's `width` below 1 needs an explicit CNN (cnn-small, cnn-large)"
        )
    with torch.random.fork_rng(devices=[]), torch.device("cpu"):  # its init is overwritten; keep the global RNG as it was
        sub = model.narrowed(ratio)
    sub.to(module_device(model))
    check_nested(sub_shapes(sub), federated_state(model))
    return sub


def sub_shapes(model: nn.Module) -> Shapes:
    """The shape of every federated tensor of `model`."""
    return {k: tuple(v.shape) for k, v in federated_state(model).items()}


def check_nested(shapes: Mapping[str, tuple[int, ...]], state: Mapping[str, torch.Tensor]) -> None:
    """ValueError unless `shapes` has `state`'s keys, each shape no larger in any dimension."""
    if set(shapes) != set(state):
        raise ValueError(f"sub-model keys differ from the model's: {sorted(set(shapes) ^ set(state))[:5]}")
    for key, shape in shapes.items():
        full = tuple(state[key].shape)
        if len(shape) != len(full) or any(s > f for s, f in zip(shape, full)):
            raise ValueError(f"{key}: sub-model shape {shape} does not fit inside {full}")


def slice_state(state: Mapping[str, torch.Tensor], shapes: Mapping[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """The leading slice of every tensor of `state` with the shape `shapes` gives (copies)."""
    return {k: v[tuple(slice(0, n) for n in shapes[k])].clone() for k, v in state.items()}


def embed_state(
    sub_state: Mapping[str, torch.Tensor], global_state: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Global-shaped tensors: `sub_state`'s values on their leading slice, the global
    values elsewhere (so the update x_k - x is exactly 0 outside the slice)."""
    full = {}
    for key, value in global_state.items():
        tensor = value.detach().clone()
        tensor[tuple(slice(0, n) for n in sub_state[key].shape)] = sub_state[key].to(tensor.dtype)
        full[key] = tensor
    return full


def multiply_accumulates(model: nn.Module, input_shape: tuple[int, int, int]) -> int:
    """Multiply-accumulates of one forward pass of one sample through the model's Conv2d
    and Linear layers (the compute that width slicing shrinks)."""
    total = 0

    def count(module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            per_output = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            total += output.numel() * per_output
        elif isinstance(module, nn.Linear):
            total += output.numel() * module.in_features

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *input_shape, device=module_device(model)))
    finally:
        model.train(training)
        for hook in hooks:
            hook.remove()
    return total
