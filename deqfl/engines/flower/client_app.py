"""deqfl's Flower ClientApp: one device of the fleet, made by `make_client_app(load_node)`.

`train`: decode the task, check that this node hosts the client id it is addressed to
(node config `partition-id`), check the experiment config the server sent against its
digest and rebuild the run's node with `load_node` (cached in this process per digest and
data folder), take the client's rows from the node's partition (cached on disk under the
data cache, keyed by the config's digest), run `deqfl.fl.client.train_client` under the
task's tier budget, and reply with the encoded returned state (with the update's extras)
and the update's fields. The client's own state (personal parts and duals,
SCAFFOLD's control variate, warm-start caches) lives on a deployed node, in `Context.state`
under `CLIENT_STATE_KEY` (an ArrayRecord): read before training, replaced after it, never
sent to the server (so a server-side resume does not roll it back, docs/RELIABILITY.md).
Under a simulation the task says `state-on-server`: the state comes with the task from the
server's store and goes back with the reply, so a resumed simulation restores it.
`query`: report the node config (`partition-id`, `num-partitions`, optional `tier`), from
which the server maps client ids to Flower node ids.

Node config keys: `partition-id` (the client id, required), `num-partitions` (checked
against the run's number of clients when given), `tier` (checked against the tier the
server assigns when given), `data-dir` (this device's data folder, passed to `load_node`).

The app object Flower loads is made in `deqfl.experiments.flower_app`, which knows how to
read an experiment config; nothing here does.

Per-message cost. A deployed SuperNode starts a fresh ClientApp process for every message
(DESIGN.md 6c), so everything above is paid per message: importing this module imports
no torch (a query needs none; a train message imports the training modules when it runs),
the node's data set is mapped, not read (`FlowerNode.dataset`: the process reads only its
client's rows), the model is built once per process by `load_node`, and the client's rows
come from the partition cache without re-partitioning. When `$DEQFL_CLIENTAPP_STARTUP_LOG`
names a file (`deqfl bench flower` sets it), every train message appends one JSON line to
it: `client` and `ready_seconds`, the seconds from its process's start to the moment
training starts.
"""

from __future__ import annotations

import functools
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode

from deqfl.engines.flower import protocol as P
from deqfl.errors import ClientFailure

if TYPE_CHECKING:
    import torch

    from deqfl.engines.flower.spec import FlowerNode, NodeLoader
    from deqfl.fl.client import ClientData


CLIENT_STATE_KEY = "deqfl-client-state"
"""Where a node keeps its client's state in `Context.state` (an ArrayRecord)."""

STARTUP_LOG_ENV = "DEQFL_CLIENTAPP_STARTUP_LOG"
"""Environment variable naming the file train messages append their start-up time to."""


def make_client_app(load_node: NodeLoader) -> ClientApp:
    """A ClientApp whose nodes rebuild each run with `load_node(config_text, data_dir)`.

    `load_node` must be a module-level function: Flower's simulation pickles the app for
    every message, so it travels by reference, and the runs a process has rebuilt are
    cached in this module (`_RUNS`), not in the app."""
    app = ClientApp()
    app.query()(_query)
    app.train()(functools.partial(_train, load_node))
    return app


def _query(message: Message, context: Context) -> Message:
    node = {k: context.node_config[k] for k in (P.PARTITION_ID, P.NUM_PARTITIONS, P.TIER) if k in context.node_config}
    record = ConfigRecord({k: (str(v) if k == P.TIER else int(v)) for k, v in node.items()})
    return Message(RecordDict({P.NODE_KEY: record}), reply_to=message)


def _node_int(context: Context, key: str) -> int | None:
    value = context.node_config.get(key)
    return None if value is None else int(value)


def _train(load_node: NodeLoader, message: Message, context: Context) -> Message:
    import torch  # noqa: PLC0415

    from deqfl.fl.client import train_client  # noqa: PLC0415
    from deqfl.fl.personal.mod import complete_download  # noqa: PLC0415
    from deqfl.fl.transport import decode_state, encode_state, pack_tensors, split_extras, with_extras  # noqa: PLC0415

    record = message.content.config_records[P.TASK_KEY]
    client_id = int(record["client-id"])  # type: ignore[arg-type]
    hosted = _node_int(context, P.PARTITION_ID)
    if hosted != client_id:
        raise ValueError(f"this node hosts client {hosted}, not client {client_id}")
    task = P.task_from_json(str(record["task"]))
    wanted_tier = context.node_config.get(P.TIER)
    if wanted_tier is not None and str(wanted_tier) != task.tier.name:
        raise ValueError(f"node config tier '{wanted_tier}' differs from the server's tier '{task.tier.name}'")
    data_dir = context.node_config.get(P.DATA_DIR)
    digest = str(record["digest"])
    run = _run(load_node, str(record["config"]), digest, None if data_dir is None else str(data_dir))
    expected = _node_int(context, P.NUM_PARTITIONS)
    if expected is not None and expected != run.node.num_clients:
        raise ValueError(f"node config num-partitions={expected}, run has {run.node.num_clients} clients")
    torch.set_num_threads(run.node.threads)
    data = _client_data(run, digest, client_id)
    received, extras = split_extras(decode_state(bytes(record["payload"]), like=run.reference))  # type: ignore[arg-type]
    received = complete_download(received, run.reference, task.personalization)  # the entries that stay here
    on_server = record.get(P.STATE_ON_SERVER) is True  # set only by the simulation's server
    _log_startup(client_id)
    try:
        update = train_client(
            run.node.model, received, task, run.node.dataset, data,
            client_state=_kept_state(record, context, on_server), server_extras=extras,
        )
    except ClientFailure as exc:  # a declared failure (an injected crash): a plain error reply, no traceback
        return Message(error=Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, str(exc)), reply_to=message)
    handed_back = None
    if update.client_state is not None:
        if on_server:
            handed_back = pack_tensors(update.client_state)
        else:
            context.state[CLIENT_STATE_KEY] = ArrayRecord(torch_state_dict=update.client_state)
    upload = encode_state(with_extras(update.state, update.extras), run.node.transport_dtype)
    return Message(P.update_record(update, upload, handed_back), reply_to=message)


def _kept_state(record: ConfigRecord, context: Context, on_server: bool) -> dict[str, torch.Tensor] | None:
    """The client's persistent state before training: from the task (the server's store)
    under `state-on-server`, else from this node's `Context.state`."""
    from deqfl.fl.transport import decode_state  # noqa: PLC0415

    if on_server:
        packed = record.get(P.CLIENT_STATE)
        return None if packed is None else decode_state(bytes(packed))  # type: ignore[arg-type]
    kept = context.state.array_records.get(CLIENT_STATE_KEY)
    return None if kept is None else dict(kept.to_torch_state_dict())


@dataclass
class _Run:
    node: FlowerNode
    reference: dict[str, torch.Tensor]
    clients: dict[int, ClientData] = field(default_factory=dict)


_RUNS: dict[tuple[str, str | None], _Run] = {}
_LOCK = threading.Lock()


def _log_startup(client_id: int) -> None:
    """Append this message's start-up time to `$DEQFL_CLIENTAPP_STARTUP_LOG`, if set."""
    path = os.environ.get(STARTUP_LOG_ENV)
    age = process_age()
    if path and age is not None:
        with open(path, "a") as log:  # one short line per write: appends do not interleave
            log.write(json.dumps({"client": client_id, "pid": os.getpid(), "ready_seconds": age}) + "\n")


def process_age() -> float | None:
    """Seconds since this process started (Linux: `/proc/self/stat` field 22 against
    `/proc/uptime`, 10 ms resolution); None where /proc is not available."""
    try:
        started = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, IndexError, ValueError):
        return None
    return uptime - started / os.sysconf("SC_CLK_TCK")


def _run(load_node: NodeLoader, config_text: str, digest: str, data_dir: str | None) -> _Run:
    """The run this process rebuilt for (digest, data folder); one at a time per process."""
    from deqfl.models import federated_state  # noqa: PLC0415

    with _LOCK:
        key = (digest, data_dir)
        if key not in _RUNS:
            if P.config_digest(config_text) != digest:
                raise ValueError("experiment config does not match its digest")
            node = load_node(config_text, data_dir)
            _RUNS.clear()
            _RUNS[key] = _Run(node, federated_state(node.model))
        return _RUNS[key]


def _client_data(run: _Run, digest: str, client_id: int) -> ClientData:
    """The client's train and holdout rows, exactly as the server splits them (the node's
    `partition`: same functions, same seeds); every client's rows are cached on disk per
    config digest (an .npz), of which a process reads only its client's two arrays."""
    if client_id in run.clients:
        return run.clients[client_id]
    import zipfile  # noqa: PLC0415

    import numpy as np  # noqa: PLC0415

    from deqfl.data.cache import cache_root  # noqa: PLC0415
    from deqfl.fl.client import ClientData  # noqa: PLC0415

    node = run.node
    path = cache_root(node.cache_dir) / "flower-partitions" / f"{digest[:32]}.npz"
    names = (f"train_{client_id}", f"holdout_{client_id}")
    rows = None
    if path.exists():
        try:
            with np.load(path) as cached:
                rows = tuple(cached[name] for name in names)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            rows = None  # unreadable or incomplete: rebuilt below
    if rows is None:
        arrays = {}
        for client in node.partition():
            arrays[f"train_{client.client_id}"] = client.train_indices
            arrays[f"holdout_{client.client_id}"] = client.holdout_indices
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
        rows = tuple(arrays[name] for name in names)
    run.clients[client_id] = ClientData(client_id, *rows)
    return run.clients[client_id]
