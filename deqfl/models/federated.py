"""What travels between server and clients: the federated state of a model.

`federated_state(model)` is the model's state_dict, in order, as detached copies, minus the
power-iteration vectors of spectral normalisation (`.parametrizations.<p>.<i>._u` / `._v`):
those are per-copy solver state of a normalisation, not model weights, and averaging them
is meaningless (each copy re-estimates them). The default models use bounded weight
normalisation (deqfl.deq.stability), whose parameters (gain g and direction V) are ordinary
parameters: they are federated and averaged like any weight. GroupNorm has no buffers.
Any other buffer (e.g. BatchNorm running statistics in user models) is federated.
"""

from __future__ import annotations

import re

import torch
from safetensors.torch import save
from torch import Tensor, nn

from deqfl.errors import ConfigError

_LOCAL_BUFFER = re.compile(r"\.parametrizations\.[^.]+\.\d+\._[uv]$|^parametrizations\.[^.]+\.\d+\._[uv]$")


def _federated_keys(model: nn.Module) -> dict[str, Tensor]:
    return {k: v for k, v in model.state_dict(keep_vars=True).items() if not _LOCAL_BUFFER.search(k)}


def federated_state(model: nn.Module) -> dict[str, Tensor]:
    """Ordered detached copies of the tensors that are sent and averaged."""
    return {k: v.detach().clone() for k, v in _federated_keys(model).items()}


def load_federated_state(model: nn.Module, state: dict[str, Tensor]) -> None:
    """Copy `state` into `model` in place. Strict: raises ConfigError on a missing or extra key
    or a shape mismatch (nothing is loaded then). Values are cast to the model's dtype."""
    own = _federated_keys(model)
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    if missing or extra:
        raise ConfigError(f"federated state does not fit the model: missing keys {missing}, unexpected keys {extra}")
    wrong = [f"{k}: {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in own.items() if state[k].shape != v.shape]
    if wrong:
        raise ConfigError(f"federated state shapes do not fit the model: {wrong}")
    with torch.no_grad():
        for k, v in own.items():
            v.copy_(state[k])


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def serialized_bytes(model: nn.Module) -> int:
    """Size in bytes of the safetensors serialisation of `federated_state(model)`."""
    return len(save({k: v.contiguous() for k, v in federated_state(model).items()}))
