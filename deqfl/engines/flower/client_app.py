"""deqfl's Flower ClientApp: one device of the fleet.

`train`: decode the task, check that this node hosts the client id it is addressed to
(node config `partition-id`), rebuild the client's rows from the experiment config the
server sent (cached in this process and on disk under the data cache, keyed by the
config's digest), run `deqfl.fl.client.train_client` under the task's tier budget, and
reply with the encoded returned state and the update's fields.
`query`: report the node config (`partition-id`, `num-partitions`, optional `tier`), from
which the server maps client ids to Flower node ids.

Node config keys: `partition-id` (the client id, required), `num-partitions` (checked
against `data.num_clients` when given), `tier` (checked against the tier the server
assigns when given), `data-dir` (overrides `data.data_dir` on this device).
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass

import numpy as np
import torch
from flwr.app import ConfigRecord, Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode

from deqfl.data import DatasetArrays, load_dataset
from deqfl.engines.flower import protocol as P
from deqfl.experiments.config import ExperimentConfig, validate_config
from deqfl.fl.client import ClientData, train_client
from deqfl.fl.faults import ClientCrash
from deqfl.fl.transport import decode_state, encode_state
from deqfl.models import build_model, federated_state

log = logging.getLogger(__name__)

app = ClientApp()


@dataclass
class _Device:
    config: ExperimentConfig
    dataset: DatasetArrays
    model: torch.nn.Module
    reference: dict[str, torch.Tensor]
    clients: dict[int, ClientData]


_DEVICES: dict[tuple[str, str | None], _Device] = {}
_LOCK = threading.Lock()


def _node_int(context: Context, key: str) -> int | None:
    value = context.node_config.get(key)
    return None if value is None else int(value)


@app.query()
def query(message: Message, context: Context) -> Message:
    node = {k: context.node_config[k] for k in (P.PARTITION_ID, P.NUM_PARTITIONS, P.TIER) if k in context.node_config}
    record = ConfigRecord({k: (str(v) if k == P.TIER else int(v)) for k, v in node.items()})
    return Message(RecordDict({P.NODE_KEY: record}), reply_to=message)


@app.train()
def train(message: Message, context: Context) -> Message:
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
    device = _device(str(record["config"]), str(record["digest"]), None if data_dir is None else str(data_dir))
    expected = _node_int(context, P.NUM_PARTITIONS)
    if expected is not None and expected != device.config.data.num_clients:
        raise ValueError(f"node config num-partitions={expected}, run has {device.config.data.num_clients} clients")
    torch.set_num_threads(device.config.experiment.threads)
    data = _client_data(device, str(record["digest"]), client_id)
    received = decode_state(bytes(record["payload"]), like=device.reference)  # type: ignore[arg-type]
    try:
        update = train_client(device.model, received, task, device.dataset, data)
    except ClientCrash as exc:  # an injected fault (deqfl.fl.faults): a plain error reply, no traceback
        return Message(error=Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, str(exc)), reply_to=message)
    upload = encode_state(update.state, device.config.transport.dtype)
    return Message(P.update_record(update, upload), reply_to=message)


def _device(config_toml: str, digest: str, data_dir: str | None) -> _Device:
    import tomllib  # noqa: PLC0415

    with _LOCK:
        key = (digest, data_dir)
        if key not in _DEVICES:
            if P.config_digest(config_toml) != digest:
                raise ValueError("experiment config does not match its digest")
            config = validate_config(tomllib.loads(config_toml), source="run config from the server")
            if data_dir is not None:
                config.data.data_dir = data_dir
            data = config.data
            dataset = load_dataset(data.dataset, data_dir=data.data_dir, cache_dir=data.cache_dir)
            model = build_model(
                config.model.name, input_shape=dataset.input_shape, num_classes=dataset.num_classes,
                **config.model.options,
            )
            _DEVICES.clear()  # one run at a time per process
            _DEVICES[key] = _Device(config, dataset, model, federated_state(model), {})
        return _DEVICES[key]


def _client_data(device: _Device, digest: str, client_id: int) -> ClientData:
    """The client's train and holdout rows, exactly as the server's `build_federation`
    splits them (same functions, same seeds); cached on disk per config digest."""
    if client_id in device.clients:
        return device.clients[client_id]
    from deqfl.data.cache import cache_root  # noqa: PLC0415

    config = device.config
    path = cache_root(config.data.cache_dir) / "flower-partitions" / f"{digest[:32]}.npz"
    arrays = None
    if path.exists():
        try:
            arrays = dict(np.load(path))
        except (OSError, ValueError):
            arrays = None
    if arrays is None:
        arrays = _partition_arrays(config, device.dataset)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    for cid in range(config.data.num_clients):
        device.clients[cid] = ClientData(cid, arrays[f"train_{cid}"], arrays[f"holdout_{cid}"])
    return device.clients[client_id]


def _partition_arrays(config: ExperimentConfig, dataset: DatasetArrays) -> dict[str, np.ndarray]:
    # The runner's own partition, so that the rows are identical to the server's.
    from deqfl.experiments.runner import client_partition  # noqa: PLC0415

    arrays = {}
    for client in client_partition(config, dataset):
        arrays[f"train_{client.client_id}"] = client.train_indices
        arrays[f"holdout_{client.client_id}"] = client.holdout_indices
    return arrays
