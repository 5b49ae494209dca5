"""A deployed SuperNode starts a fresh ClientApp process per message (DESIGN.md 6c): each
message must import only what it needs, map the data set instead of reading it, and read
only its client's rows. Each case runs messages through deqfl's ClientApp in a fresh
Python process, as `flwr-clientapp` does, on MNIST from the shared data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("flwr")

from deqfl.experiments.config import load_config  # noqa: E402

MESSAGES = r'''
import json, sys
from flwr.supercore.task_identity import TaskIdentity
TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 1
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from deqfl.experiments.flower_app import client_app

config_text, client = open(sys.argv[1]).read(), int(sys.argv[2])
context = Context(run_id=1, node_id=7, node_config={"partition-id": client, "num-partitions": 4},
                  state=RecordDict(), run_config={})
query = Message(RecordDict({"node": ConfigRecord({"ask": "partition-id"})}), dst_node_id=7,
                message_type=MessageType.QUERY, ttl=60)
answer = client_app(query, context).content.config_records["node"]
out = {"query": dict(answer), "torch_after_query": "torch" in sys.modules}

# the server's side of a train message: the global model and the task
import numpy as np
from deqfl.engines.flower import protocol as P
from deqfl.engines.flower.client_app import _RUNS, process_age
from deqfl.fl.client import ClientTask, TrainOptions
from deqfl.fl.profiles import TierConfig
from deqfl.fl.transport import encode_state
from deqfl.models import build_model, federated_state
model = build_model("cnn-small", input_shape=(1, 28, 28), num_classes=10)
task = ClientTask(round=1, seed=0, tier=TierConfig(name="default", share=1.0), forward_cap=8, reference_cap=8,
                  reference_tol=1e-3, options=TrainOptions(lr=0.05, momentum=0.0, weight_decay=0.0, batch_size=16,
                                                           proximal_mu=0.0, residual_samples=8))
server_side = set(sys.modules)
train = Message(P.task_record(client, task, encode_state(federated_state(model), "float32"), config_text,
                              P.config_digest(config_text)), dst_node_id=7, message_type=MessageType.TRAIN, ttl=60)
reply = client_app(train, context)
fields, upload = P.update_from_record(reply.content)
node = next(iter(_RUNS.values())).node
out.update(
    num_examples=fields["num_examples"], upload=len(upload),
    mapped=isinstance(node.dataset.x_train, np.memmap),
    imported=sorted(m for m in set(sys.modules) - server_side if m.startswith("deqfl.")),
    age=process_age(),
)
print(json.dumps(out))
'''


def _message(config_file: Path, client: int) -> dict:
    done = subprocess.run([sys.executable, "-c", MESSAGES, str(config_file), str(client)], capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_message_maps_the_data_and_imports_only_what_it_needs(tmp_path, shared_data):
    config = load_config(None, [
        "data.dataset=mnist", f"data.data_dir={json.dumps(str(shared_data / 'mnist'))}", "data.num_clients=4",
        f"data.cache_dir={json.dumps(str(tmp_path / 'cache'))}", "data.train_subset=400", "data.partition=iid",
        "model.name=cnn-small", "train.batch_size=16", "experiment.threads=1",
    ])
    config_file = tmp_path / "config.toml"
    config_file.write_text(config.to_toml())

    first = _message(config_file, 1)  # a cold node: decodes MNIST into the cache, partitions
    assert first["query"] == {"partition-id": 1, "num-partitions": 4}
    assert not first["torch_after_query"]  # answering a query imports no torch
    assert first["num_examples"] == 90 and first["upload"] > 0
    assert "deqfl.experiments.federation" in first["imported"]  # it had to partition

    second = _message(config_file, 2)  # every later message: the caches exist
    assert not second["torch_after_query"] and second["num_examples"] == 90
    assert second["mapped"]  # the data set is mapped from the cache, not read
    server_only = {"deqfl.experiments.runner", "deqfl.fl.server", "deqfl.fl.fusion", "deqfl.engines.flower.engine",
                   "deqfl.engines.flower.strategy", "deqfl.experiments.results"}
    assert not server_only & set(second["imported"]), second["imported"]
    assert "deqfl.experiments.federation" not in second["imported"]  # the partition came from the cache
    assert second["age"] is not None and second["age"] > 0
