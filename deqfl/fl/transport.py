"""What travels: model states serialized with safetensors (no pickle), optionally in fp16.

Byte counts in the results are the lengths of these payloads: a download is counted once
per receiving client, an upload once per replying client.
"""

from __future__ import annotations

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from deqfl.errors import ClientFailure

WIRE_DTYPES = {"float32": torch.float32, "float16": torch.float16}


class PayloadError(ClientFailure):
    """A payload that is not a safetensors state (truncated, garbled, not bytes)."""


def encode_state(state: dict[str, torch.Tensor], dtype: str = "float32") -> bytes:
    """Serialize a state dict from any device; floating tensors are cast to the wire dtype."""
    wire = WIRE_DTYPES[dtype]
    return st_save(
        {k: (v.to(wire) if v.is_floating_point() else v).cpu().contiguous() for k, v in state.items()}
    )


def decode_state(payload: bytes, like: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Deserialize a payload (CPU tensors). With `like`, a tensor whose key is in `like` is
    placed on that tensor's device and, when both are floating, cast back to its dtype (the
    receiver computes on its own device in its own precision); other keys are kept as
    received, so a malformed payload reaches validation unchanged. PayloadError when the
    bytes are not a safetensors state."""
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise PayloadError(f"a payload must be bytes, got {type(payload).__name__}")
    try:
        state = st_load(bytes(payload))
    except Exception as exc:  # safetensors raises its own SafetensorError and others on garbage
        raise PayloadError(f"payload of {len(payload)} bytes is not a safetensors state: {type(exc).__name__}: {exc}") from None
    if like is None:
        return state
    return {k: _like(v, like[k]) if k in like else v for k, v in state.items()}


def _like(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if value.is_floating_point() and like.is_floating_point():
        return value.to(like.device, like.dtype)
    return value.to(like.device)
