"""`GridEngine`: deqfl's Engine on a Flower Grid (simulation or deployment).

`run_clients(jobs, download)` is called by `deqfl.fl.server.run_round` with deqfl's
sampled jobs. It makes sure every sampled client id is mapped to the Flower node hosting
it, lets `DeqflStrategy.configure_train` build one message per job, pushes them, pulls
replies until all arrived or `round_timeout` passed, and lets
`DeqflStrategy.aggregate_train` turn them into `ClientReply` objects. A client whose node
is unknown, silent past the timeout, or answered with an error gets an error reply: the
round lists it under `rejected` with the reason and goes on without its update.

Node ids. Flower assigns node ids (random 64-bit integers); a node's client id is its
node config `partition-id`. The engine asks each node it has not seen yet once (a QUERY
message answered by the ClientApp with its node config) and keeps the map; a node that
goes silent is forgotten (asked again if it comes back). In simulation the nodes are
`run_simulation`'s virtual SuperNodes, partition-id 0..N-1; in deployment they are the
SuperNodes started with `--node-config "partition-id=K num-partitions=N"`.
"""

from __future__ import annotations

import logging
import time

from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from deqfl.engines.flower import protocol as P
from deqfl.engines.flower.spec import FlowerRun
from deqfl.engines.flower.strategy import DeqflStrategy
from deqfl.fl.server import ClientJob, ClientReply

log = logging.getLogger(__name__)

PULL_INTERVAL = 0.1


def grid_engine(grid: Grid, run: FlowerRun) -> "GridEngine":
    """The engine for `run` on `grid`. Messages live `round_timeout` + 60 s; a node query
    waits at most 30 s (or `round_timeout`, if shorter)."""
    strategy = DeqflStrategy(run.config_text, message_ttl=run.round_timeout + 60.0,
                             state_on_server=run.client_state_on_server)
    return GridEngine(
        grid, strategy, run.num_clients, run.round_timeout,
        connect_timeout=run.connect_timeout, query_timeout=min(30.0, run.round_timeout),
    )


class GridEngine:
    def __init__(
        self,
        grid: Grid,
        strategy: DeqflStrategy,
        num_clients: int,
        round_timeout: float,
        connect_timeout: float = 0.0,
        query_timeout: float = 30.0,
    ):
        self.grid = grid
        self.strategy = strategy
        self.num_clients = num_clients
        self.round_timeout = round_timeout
        self.connect_timeout = connect_timeout
        self.query_timeout = query_timeout
        self.node_of: dict[int, int] = {}  # client id -> node id
        self._asked: set[int] = set()  # node ids already queried
        self._first = True

    # -- node map -------------------------------------------------------------------------
    def refresh_nodes(self, needed: set[int]) -> None:
        """Query nodes not seen yet; on the first round wait (up to `connect_timeout`) for
        nodes hosting every client id in `needed`."""
        connecting = self._first
        deadline = time.monotonic() + (self.connect_timeout if connecting else 0.0)
        self._first = False
        while True:
            online = set(self.grid.get_node_ids())
            for cid in [c for c, n in self.node_of.items() if n not in online]:
                log.warning("client %d: node %d is no longer connected", cid, self.node_of.pop(cid))
            self._asked &= online
            fresh = sorted(online - self._asked)
            if fresh:
                answered = self._query(fresh)
                # while connecting, a node that errs or stays silent (its ClientApp still
                # starting on a loaded machine, past the query's TTL) is asked again; after
                # that every node is asked once (one that reconnects gets a new node id)
                self._asked.update(answered if connecting and time.monotonic() < deadline else fresh)
            if needed <= set(self.node_of) or time.monotonic() >= deadline:
                return
            time.sleep(0.5)

    def _query(self, nodes: list[int]) -> set[int]:
        """Ask `nodes` which client they host; returns the nodes that answered."""
        messages = [
            Message(RecordDict({P.NODE_KEY: ConfigRecord({"ask": "partition-id"})}), dst_node_id=n,
                    message_type=MessageType.QUERY, ttl=self.query_timeout)
            for n in nodes
        ]
        answered: set[int] = set()
        for reply in self._exchange(messages, self.query_timeout):
            node = reply.metadata.src_node_id
            if reply.has_error() or P.NODE_KEY not in reply.content.config_records:
                log.warning("node %d did not say which client it hosts: %s", node,
                            reply.error.reason if reply.has_error() else "no node record")
                continue
            answered.add(node)
            record = reply.content.config_records[P.NODE_KEY]
            if P.PARTITION_ID not in record:
                log.warning("node %d has no partition-id in its node config", node)
                continue
            cid = int(record[P.PARTITION_ID])  # type: ignore[arg-type]
            if not 0 <= cid < self.num_clients:
                log.warning("node %d hosts partition %d, outside 0..%d", node, cid, self.num_clients - 1)
            elif cid in self.node_of and self.node_of[cid] != node:
                log.warning("client %d is hosted by nodes %d and %d; keeping %d", cid, self.node_of[cid], node, self.node_of[cid])
            else:
                self.node_of[cid] = node
        return answered

    def _exchange(self, messages: list[Message], timeout: float) -> list[Message]:
        """Push, then pull replies every PULL_INTERVAL until all arrived or `timeout`."""
        if not messages:
            return []
        pending = set(self.grid.push_messages(messages))
        deadline = time.monotonic() + timeout
        replies: list[Message] = []
        while pending and time.monotonic() < deadline:
            got = list(self.grid.pull_messages(pending))
            replies.extend(got)
            pending -= {m.metadata.reply_to_message_id for m in got}
            if pending:
                time.sleep(PULL_INTERVAL)
        return replies

    # -- Engine ---------------------------------------------------------------------------
    def run_clients(self, jobs: list[ClientJob], download: bytes) -> list[ClientReply]:
        if not jobs:
            return []
        round_number = jobs[0].task.round
        self.refresh_nodes({j.data.client_id for j in jobs})
        self.strategy.plan(jobs, self.node_of)
        messages = list(self.strategy.configure_train(
            round_number, ArrayRecord(), ConfigRecord({"payload": download}), self.grid
        ))
        replies = self._exchange(messages, self.round_timeout)
        self.strategy.aggregate_train(round_number, replies)
        out = []
        for job in jobs:
            cid = job.data.client_id
            reply = self.strategy.replies.get(cid)
            if reply is None:
                node = self.node_of.get(cid)
                if node is None:
                    error = "no SuperNode hosts this client (no node with this partition-id)"
                else:
                    # kept while the SuperLink still lists the node; dropped once it does not
                    error = f"node {node}: no reply within {self.round_timeout:g} s (node died or timed out)"
                reply = ClientReply.failed(cid, error)
            if reply.error:
                log.warning("round %d: client %d: %s", round_number, cid, reply.error)
            out.append(reply)
        return out
