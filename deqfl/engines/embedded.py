"""The embedded engine (default): clients run one after another in this process.

It moves real serialized payloads (the same bytes Flower would carry), so byte counts and
fp16 transport effects are real. A declared client failure
(`deqfl.errors.ClientFailure`, such as an injected crash) becomes an error reply, listed
under `rejected`; any other exception is a bug and propagates, stopping the run. One model object is reused for every client, so
memory grows with the clients sampled in a round, not with the registered ones.
"""

from __future__ import annotations

import logging

from torch import nn

from deqfl.data import DatasetArrays
from deqfl.fl.client import train_client
from deqfl.errors import ClientFailure
from deqfl.fl.server import ClientJob, ClientReply
from deqfl.fl.transport import decode_state
from deqfl.models import federated_state

log = logging.getLogger(__name__)


class EmbeddedEngine:
    def __init__(self, model: nn.Module, dataset: DatasetArrays, transport_dtype: str = "float32"):
        self.model = model
        self.dataset = dataset
        self.transport_dtype = transport_dtype
        self._reference = federated_state(model)

    def run_clients(self, jobs: list[ClientJob], download: bytes) -> list[ClientReply]:
        replies = []
        for job in jobs:
            cid = job.data.client_id
            try:
                received = decode_state(download, like=self._reference)
                update = train_client(self.model, received, job.task, self.dataset, job.data)
                replies.append(ClientReply.from_update(update, self.transport_dtype))
            except ClientFailure as exc:  # a declared failure (an injected crash): a rejection
                log.warning("client %d crashed: %s", cid, exc)
                replies.append(ClientReply.failed(cid, f"{type(exc).__name__}: {exc}"))
        return replies
