"""What an engine hands the server for one client, and the one reader of its numbers.

An engine moves bytes, not objects: a `ClientReply` holds the client's upload exactly as it
arrived (`payload`, a `deqfl.fl.transport` encoding) and the fields the client reported
(`fields`, JSON-like: what `ClientUpdate` holds besides the state), or an `error`. The
server decodes and reads them itself (`deqfl.fl.intake`), so that every engine's reply
passes the same bounds:

- the upload's size is checked against a bound before it is decoded;
- every number is read through `FieldReader`, which compares before it converts (an
  integer too large for a float is out of range, never an OverflowError), refuses bools
  posing as numbers, and says which field was wrong and why;
- texts the server keeps (error messages, reasons) are cut to `MAX_TEXT` characters.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from deqfl.errors import ClientFailure
from deqfl.fl.transport import encode_state, pack_tensors, with_extras
from deqfl.fl.update import ClientUpdate

MAX_TEXT = 300
"""Characters kept of any text a client sent (errors, tier names, metric names)."""

MAX_METRICS = 32
"""Reported metrics kept per reply (the first ones by name); the rest are dropped."""

SERVER_FIELDS = ("state", "coverage", "client_state", "extras")
"""`ClientUpdate` fields that never travel in `fields`: the state and the extras travel as
the payload, the coverage is the server's to set, the client's own state stays with the
client."""


class ReplyError(ClientFailure, ValueError):
    """A reply the server cannot use: it becomes a rejection with this message."""


def truncate(text: object, limit: int = MAX_TEXT) -> str:
    """`str(text)` cut to `limit` characters (an ellipsis marks the cut)."""
    value = str(text)
    return value if len(value) <= limit else value[: limit - 1] + "…"


@dataclass(frozen=True)
class ClientReply:
    """One client's answer as the engine received it."""

    client_id: int
    """The client the engine asked (the engine's, not taken from the reply)."""
    payload: bytes | None = None
    """The uploaded state, as encoded by `deqfl.fl.transport.encode_state`."""
    fields: Mapping[str, Any] | None = None
    """The reported fields of `ClientUpdate` but the state and coverage (JSON-like)."""
    error: str | None = None
    """Why the client gave no update (a declared client failure, or the engine's reason)."""
    client_state: bytes | None = None
    """The client's persistent state after the round (`deqfl.fl.transport.pack_tensors`),
    handed back by a simulating engine so that the server's store keeps it for the client
    (`deqfl.fl.client_state`). It stays on the client's side: not uploaded, not counted
    in `bytes_up`. Bytes, like the payload, so that it crosses processes as bytes and the
    intake bounds its size before decoding it."""

    @classmethod
    def from_update(cls, update: ClientUpdate, transport_dtype: str) -> ClientReply:
        """The reply a client sends after training: its state and extras encoded in the
        wire dtype, its client state alongside."""
        payload = encode_state(with_extras(update.state, update.extras), transport_dtype)
        kept = None if update.client_state is None else pack_tensors(update.client_state)
        return cls(update.client_id, payload, update_fields(update), client_state=kept)

    @classmethod
    def failed(cls, client_id: int, error: object) -> ClientReply:
        return cls(client_id, error=truncate(error))


def update_fields(update: ClientUpdate) -> dict[str, Any]:
    """What a client reports besides its state (the `fields` of its reply)."""
    return {
        f.name: getattr(update, f.name) for f in dataclasses.fields(update) if f.name not in SERVER_FIELDS
    }


class FieldReader:
    """Reads a reply's reported fields, each within stated bounds (ReplyError otherwise)."""

    def __init__(self, fields: object) -> None:
        if not isinstance(fields, Mapping):
            raise ReplyError(f"reported fields must be a mapping, got {type(fields).__name__}")
        self.fields = fields

    def _get(self, name: str) -> object:
        if name not in self.fields:
            raise ReplyError(f"reported field {name!r} is missing")
        return self.fields[name]

    def integer(self, name: str, low: int, high: int) -> int:
        """An int in [low, high] (no bools, no floats)."""
        value = self._get(name)
        if not isinstance(value, numbers.Integral) or isinstance(value, bool):
            raise ReplyError(f"{name} must be an integer, got {type(value).__name__}")
        if not low <= value <= high:
            raise ReplyError(f"{name} must be in [{low}, {high}], got {truncate(value, 40)}")
        return int(value)

    def real(self, name: str, low: float, high: float, *, optional: bool = False) -> float | None:
        """A number in [low, high] as a float (None when `optional` and absent or None).
        `high` may be inf to admit an infinite report, which is then bounded downstream."""
        value = self.fields.get(name) if optional else self._get(name)
        if value is None and optional:
            return None
        number = as_real(value)
        if number is None:
            raise ReplyError(f"{name} must be a number, got {type(value).__name__}")
        if not low <= number <= high:
            raise ReplyError(f"{name} must be in [{low:g}, {high:g}], got {number!r}")
        return number

    def text(self, name: str) -> str:
        value = self._get(name)
        if not isinstance(value, str):
            raise ReplyError(f"{name} must be a string, got {type(value).__name__}")
        return truncate(value)

    def metrics(self, name: str = "metrics") -> dict[str, float]:
        """The reported metrics that are finite numbers under short string names, at most
        `MAX_METRICS` of them; anything else is dropped (metrics are only reported)."""
        value = self.fields.get(name, {})
        if not isinstance(value, Mapping):
            raise ReplyError(f"{name} must be a mapping, got {type(value).__name__}")
        kept: dict[str, float] = {}
        for key in sorted(k for k in value if isinstance(k, str) and len(k) <= 64)[:MAX_METRICS]:
            number = as_real(value[key])
            if number is not None and math.isfinite(number):
                kept[key] = number
        return kept


def as_real(value: object) -> float | None:
    """`value` as a float if it is a real number (not a bool) that a float can hold,
    +-inf for an integer beyond a float's range; None if it is not a number."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf
