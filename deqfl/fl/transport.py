"""What travels: model states serialized with safetensors (no pickle), optionally in fp16.

Byte counts in the results are the lengths of these payloads: a download is counted once
per receiving client, an upload once per replying client.

A payload may carry *extras* besides the model state: tensors an algorithm sends along
(SCAFFOLD's control variates, `deqfl.fl.fusion.scaffold`), named `"@" + <name>` in the same
safetensors file (`with_extras`) and split off by the receiver (`split_extras`) before
the state is loaded. Model keys never start with "@", so the two cannot collide; extras
are counted in the payload's bytes like the state.
"""

from __future__ import annotations

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from deqfl.errors import ClientFailure

WIRE_DTYPES = {"float32": torch.float32, "float16": torch.float16}

EXTRA_MARK = "@"
"""Prefix of an extra's key in a payload."""


class PayloadError(ClientFailure):
    """A payload that is not a safetensors state (truncated, garbled, not bytes)."""


def encode_state(state: dict[str, torch.Tensor], dtype: str = "float32") -> bytes:
    """Serialize a state dict; floating tensors are cast to the wire dtype."""
    wire = WIRE_DTYPES[dtype]
    return st_save(
        {k: (v.to(wire) if v.is_floating_point() else v).contiguous() for k, v in state.items()}
    )


def decode_state(payload: bytes, like: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Deserialize a payload. With `like`, floating tensors whose key is in `like` are cast
    back to that tensor's dtype (the receiver computes in its own precision); other keys are
    kept as received, so a malformed payload reaches validation unchanged. PayloadError when
    the bytes are not a safetensors state."""
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise PayloadError(f"a payload must be bytes, got {type(payload).__name__}")
    try:
        state = st_load(bytes(payload))
    except Exception as exc:  # safetensors raises its own SafetensorError and others on garbage
        raise PayloadError(f"payload of {len(payload)} bytes is not a safetensors state: {type(exc).__name__}: {exc}") from None
    if like is None:
        return state
    return {
        k: v.to(like[k].dtype) if k in like and v.is_floating_point() and like[k].is_floating_point() else v
        for k, v in state.items()
    }


def with_extras(state: dict[str, torch.Tensor], extras: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state` with `extras` added under `EXTRA_MARK + name` (to encode in one payload)."""
    return {**state, **{EXTRA_MARK + name: value for name, value in extras.items()}}


def split_extras(decoded: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A decoded payload as (state, extras): the keys starting with `EXTRA_MARK` are the
    extras (named without the mark), every other key is the state's."""
    state = {k: v for k, v in decoded.items() if not k.startswith(EXTRA_MARK)}
    extras = {k[len(EXTRA_MARK):]: v for k, v in decoded.items() if k.startswith(EXTRA_MARK)}
    return state, extras


def pack_tensors(tensors: dict[str, torch.Tensor]) -> bytes:
    """Tensors serialized with safetensors exactly as they are (no dtype cast): how a
    client's own state crosses a process boundary (`deqfl.fl.reply.ClientReply`).
    Read back with `decode_state`."""
    return st_save({k: v.detach().cpu().contiguous() for k, v in tensors.items()})
