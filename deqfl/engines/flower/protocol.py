"""What travels between deqfl's server and its Flower ClientApp, and how it is packed.

A train message (`MessageType.TRAIN`) holds one `ConfigRecord` under `"task"`:

- `payload`: the global state exactly as `deqfl.fl.transport.encode_state` serialized it
  (safetensors bytes, wire dtype applied), so byte counts equal the embedded engine's;
- `task`: the `ClientTask` (round, seed, tier, forward cap, reference budget, options) as
  JSON, plus the client id it is meant for;
- `config`: the resolved experiment config (TOML text) from which the client rebuilds its
  data set and partition (cached per config digest), and `digest`, that config's SHA-256.

  Under a simulation (`FlowerRun.client_state_on_server`) it also holds `state-on-server`
  (true) and, where the server's store holds any, `client-state`: the client's persistent
  state (`deqfl.fl.transport.pack_tensors`), which the client uses instead of its node's
  `Context.state`.

The reply holds a `ConfigRecord` under `"update"`: `payload` (the client's returned state,
encoded in the wire dtype) and `update` (JSON of the `ClientUpdate` fields but the state);
under a simulation also `client-state`, the client's persistent state after the round, for
the server's store (never counted as uploaded bytes).
A query message (`MessageType.QUERY`) asks a node which client id it hosts; the reply's
`"node"` record carries `partition-id`, `num-partitions` and, if set, `tier`.
Errors travel as Flower error replies; the engine turns them into rejected clients.

Importing this module imports no torch: deqfl's training modules are imported by the
functions that pack and unpack tasks and updates (a ClientApp process answering a query
message needs none of them).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from typing import TYPE_CHECKING, Any

from flwr.app import ConfigRecord, RecordDict

if TYPE_CHECKING:
    from deqfl.fl.client import ClientTask
    from deqfl.fl.update import ClientUpdate

TASK_KEY = "task"
UPDATE_KEY = "update"
NODE_KEY = "node"
PARTITION_ID = "partition-id"
NUM_PARTITIONS = "num-partitions"
TIER = "tier"
DATA_DIR = "data-dir"
STATE_ON_SERVER = "state-on-server"
CLIENT_STATE = "client-state"


def config_digest(config_toml: str) -> str:
    return hashlib.sha256(config_toml.encode()).hexdigest()


def task_to_json(task: ClientTask) -> str:
    """Every `ClientTask` field, generically (pydantic models and dataclasses as dicts), so
    fields added to the task later travel without touching this module."""
    from deqfl.fl.client import ClientTask  # noqa: PLC0415

    return json.dumps({f.name: _plain(getattr(task, f.name)) for f in dataclasses.fields(ClientTask)})


def task_from_json(text: str) -> ClientTask:
    from deqfl.fl.client import ClientTask  # noqa: PLC0415

    raw = json.loads(text)
    hints = typing.get_type_hints(ClientTask)
    return ClientTask(**{name: _typed(hints[name], value) for name, value in raw.items()})


def _plain(value: Any) -> Any:
    from pydantic import BaseModel  # noqa: PLC0415

    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


def _typed(annotation: Any, value: Any) -> Any:
    from pydantic import BaseModel  # noqa: PLC0415

    if value is None:
        return None
    candidates = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    for kind in candidates:
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            return kind.model_validate(value)
        if isinstance(kind, type) and dataclasses.is_dataclass(kind):
            return kind(**value)
    return value


def task_record(
    client_id: int, task: ClientTask, download: bytes, config_toml: str, digest: str,
    state_on_server: bool = False, client_state: bytes | None = None,
) -> RecordDict:
    """The train message's record; `client_state` (the server store's bytes for this
    client) travels only with `state_on_server`."""
    record: dict[str, Any] = {
        "client-id": client_id, "payload": download, "task": task_to_json(task),
        "config": config_toml, "digest": digest,
    }
    if state_on_server:
        record[STATE_ON_SERVER] = True
        if client_state is not None:
            record[CLIENT_STATE] = client_state
    return RecordDict({TASK_KEY: ConfigRecord(record)})


def update_record(update: ClientUpdate, upload: bytes, client_state: bytes | None = None) -> RecordDict:
    """The reply's record; `client_state` is set only when the task said `state-on-server`."""
    from deqfl.fl.reply import update_fields  # noqa: PLC0415

    record: dict[str, Any] = {"payload": upload, "update": json.dumps(update_fields(update))}
    if client_state is not None:
        record[CLIENT_STATE] = client_state
    return RecordDict({UPDATE_KEY: ConfigRecord(record)})


def client_state_from_record(content: RecordDict) -> object:
    """The reply's `client-state` value as sent (None: absent); the server's intake bounds
    and decodes it (`deqfl.fl.intake.read_client_state`), dropping anything malformed."""
    record = content.config_records.get(UPDATE_KEY)
    return None if record is None else record.get(CLIENT_STATE)


def update_from_record(content: RecordDict) -> tuple[dict[str, Any], bytes]:
    """The update's fields (a parsed JSON object, all but the state: the server's intake
    checks their values) and the uploaded payload. A reply without an `update` record,
    whose `payload` is not bytes or whose `update` is not the text of a JSON object
    raises ValueError saying which; the
    values are taken as sent, never converted (`bytes(n)` of an int would allocate n
    bytes)."""
    records = content.config_records
    if UPDATE_KEY not in records:
        raise ValueError(f"no {UPDATE_KEY!r} record (records: {sorted(content.keys())[:5]})")
    record = records[UPDATE_KEY]
    payload, text = record.get("payload"), record.get("update")
    if not isinstance(payload, bytes):
        raise ValueError(f"'payload' must be bytes, got {type(payload).__name__}")
    if not isinstance(text, str):
        raise ValueError(f"'update' must be JSON text, got {type(text).__name__}")
    try:
        fields = json.loads(text)
    except RecursionError:
        raise ValueError("'update' is nested too deeply") from None
    except ValueError as exc:  # not JSON, or an integer of more digits than Python parses
        raise ValueError(f"'update' is not JSON: {exc}") from None
    if not isinstance(fields, dict):
        raise ValueError(f"'update' must be a JSON object, got {type(fields).__name__}")
    return fields, payload
