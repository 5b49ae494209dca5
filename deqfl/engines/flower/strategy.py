"""`DeqflStrategy`: Flower's FedAvg with deqfl's rules at both ends of a round.

One code path: rounds are driven by deqfl's runner (`run_experiment` -> `run_round`), which
samples clients, serializes the global state once, and validates and fuses replies in
client-id order with `deqfl.fl.fusion.Fusion`, exactly as on the embedded engine. The
Flower engine (`GridEngine`) hands each round's jobs to this strategy:

- `configure_train` builds one TRAIN message per job deqfl chose (never Flower's random
  `sample_nodes`), addressed to the node that hosts that client id, carrying deqfl's
  serialized payload bytes untouched;
- with `state_on_server` (a simulation), each message also carries the client's state
  from the server's store, and each reply's returned client state goes back into its
  `ClientReply` for the store (so a resumed simulation restores it, as the embedded
  engine does); on a deployment the state stays on the node;
- `aggregate_train` turns the replies into `ClientReply` objects keyed by client id
  (error replies become failed clients), and never averages anything itself: Flower's
  default averaging would weight every key by `num-examples`, average NaN updates and
  crash on a wrong-shape one, while deqfl's fusion validates first. The returned
  `MetricRecord` holds only counts (received, failed); deqfl's own per-round metrics go
  to `metrics.jsonl`.
- Client-side evaluation is off (`configure_evaluate` sends nothing): the server
  evaluates the global model centrally every round, as on the embedded engine.

`Strategy.start` (Flower's own round loop) is not used: it would run Flower's sampling and
evaluation loop beside deqfl's; calling it raises.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from deqfl.engines.flower import protocol as P
from deqfl.fl.server import ClientJob, ClientReply

log = logging.getLogger(__name__)


class DeqflStrategy(FedAvg):
    def __init__(self, config_toml: str, message_ttl: float, state_on_server: bool = False):
        super().__init__(
            fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=0,
            min_evaluate_nodes=0, min_available_nodes=0,
        )
        self.config_toml = config_toml
        self.digest = P.config_digest(config_toml)
        self.message_ttl = message_ttl
        self.state_on_server = state_on_server
        self._jobs: list[ClientJob] = []
        self._node_of: dict[int, int] = {}
        self._client_of: dict[int, int] = {}
        self.replies: dict[int, ClientReply] = {}

    def plan(self, jobs: list[ClientJob], node_of: dict[int, int]) -> None:
        """Set the round's jobs (deqfl's sample) and where each client lives."""
        self._jobs = [j for j in jobs if j.data.client_id in node_of]
        self._node_of = dict(node_of)
        self._client_of = {node: cid for cid, node in node_of.items()}
        self.replies = {}

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        download = bytes(config["payload"])  # type: ignore[arg-type]
        return [
            Message(
                P.task_record(job.data.client_id, job.task, download, self.config_toml, self.digest,
                              self.state_on_server, job.client_state),
                dst_node_id=self._node_of[job.data.client_id],
                message_type=MessageType.TRAIN,
                group_id=str(server_round),
                ttl=self.message_ttl,
            )
            for job in sorted(self._jobs, key=lambda j: j.data.client_id)
        ]

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        received = failed = 0
        for msg in replies:
            node = msg.metadata.src_node_id
            cid = self._client_of.get(node)
            if cid is None:
                log.warning("round %d: reply from unknown node %d ignored", server_round, node)
                continue
            if msg.has_error():
                failed += 1
                self.replies[cid] = ClientReply.failed(cid, f"node {node}: {msg.error.reason or f'error code {msg.error.code}'}")
                continue
            try:
                fields, upload = P.update_from_record(msg.content)
            except ValueError as exc:  # no readable update record: a failed client
                failed += 1
                self.replies[cid] = ClientReply.failed(cid, f"node {node}: malformed reply: {exc}")
                continue
            fields = {**fields, "client_id": cid}  # the node's client, whatever the reply says
            received += 1
            kept = P.client_state_from_record(msg.content) if self.state_on_server else None
            self.replies[cid] = ClientReply(cid, payload=upload, fields=fields, client_state=kept)  # type: ignore[arg-type]
        return None, MetricRecord({"received": received, "failed": failed})

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return []

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return None

    def start(self, *args, **kwargs):  # noqa: ANN002, ANN003
        raise NotImplementedError(
            "DeqflStrategy runs inside deqfl's round loop: use deqfl.engines.flower.engine.grid_engine "
            "(or `deqfl run --engine flower-sim|flower`), not Strategy.start"
        )
