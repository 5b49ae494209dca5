"""The device a run computes on: `experiment.device` checked, resolved and prepared here only.

Names: `auto` (the current CUDA device when torch sees one, else the CPU), `cpu`, `cuda`
(the current CUDA device, normally `cuda:0`) and `cuda:N`. `check_device_name` rejects
anything else when the config is read; `resolve_device` turns a name into a
`torch.device` and fails with a `ConfigError` that says what to do when CUDA is asked for
where torch has none (before any data loads).

`prepare_device` also makes computing on CUDA as deterministic as torch allows:
`torch.use_deterministic_algorithms(True, warn_only=True)` (a kernel with no
deterministic version warns instead of failing), `CUBLAS_WORKSPACE_CONFIG=:4096:8` (cuBLAS
reads it when it starts, so it is set before the first CUDA matrix product; an existing
value is kept), cuDNN's deterministic algorithms without autotuning, and TF32 off, so fp32
stays fp32 (README, "GPU", says what is still not bitwise).

Placement rule for the rest of the code: a tensor is created on the device of the tensor
or module it belongs with (`device=like.device`, `torch.zeros_like`, `module_device`);
random draws come from CPU generators (`device=generator.device`) and are then moved, so
a seed draws the same numbers on every device.
"""

from __future__ import annotations

import os
import re

import torch
from torch import nn

from deqfl.errors import ConfigError

DEVICE_NAMES = "auto, cpu, cuda or cuda:N"
_PATTERN = re.compile(r"(auto|cpu|cuda(:\d+)?)")
CUBLAS_WORKSPACE = ":4096:8"


def check_device_name(name: str) -> str:
    """`name` when it is one of auto, cpu, cuda, cuda:N; ValueError otherwise."""
    if not isinstance(name, str) or _PATTERN.fullmatch(name) is None:
        raise ValueError(f"device must be {DEVICE_NAMES}, got {name!r}")
    return name


def resolve_device(name: str) -> torch.device:
    """The `torch.device` that `name` (`check_device_name`) means on this machine, a CUDA
    one with its index (`cuda`: the current CUDA device, e.g. cuda:0). ConfigError when
    `name` asks for CUDA and torch has none, or for a CUDA index it does not have."""
    check_device_name(name)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(
            f"experiment.device = {name!r} but torch.cuda.is_available() is False (this torch is "
            f"{torch.__version__}, a CPU build?): install a CUDA build of torch (see README, \"GPU\") "
            "or set experiment.device = 'cpu'"
        )
    device = torch.device(name)
    count = torch.cuda.device_count()
    if device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    if device.index >= count:
        raise ConfigError(
            f"experiment.device = {name!r} but torch sees {count} CUDA device(s) "
            f"(cuda:0 to cuda:{count - 1}): choose one of them or set experiment.device = 'cuda'"
        )
    return device


def prepare_device(name: str | torch.device) -> torch.device:
    """`resolve_device(name)` (a `torch.device` is taken as is), with CUDA made
    deterministic as far as torch allows (module docstring). Idempotent; call it in every
    process that computes on the device, before its first CUDA operation."""
    device = name if isinstance(name, torch.device) else resolve_device(name)
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    return device


def module_device(module: nn.Module) -> torch.device:
    """The device of `module`'s first parameter (or buffer); the CPU when it has neither."""
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return torch.device("cpu")
