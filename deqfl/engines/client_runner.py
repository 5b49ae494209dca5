"""One client job on one model copy: decode the download, train, reply with the upload.

Shared by the in-process engine and every worker process, so both run exactly the same
code. Each job starts from the same model copy state: the download is loaded as the
federated state, and the model's non-federated buffers (e.g. spectral-norm power-iteration
vectors) are reset to their build-time values. The global torch generator is seeded per job
from (seed, round, client) and restored afterwards. Hence a client's result does not depend
on which clients this copy ran before, and the round is bitwise the same for any number
of worker processes.

Under personalisation the download lacks the entries that stay on the client; they are
filled in from this copy's build-time values (`deqfl.fl.personal.mod.complete_download`),
which the algorithm replaces with the client's own.

The reply is what travels (`deqfl.fl.reply.ClientReply`: the encoded state and extras,
and the reported fields), so the server reads it as it reads a Flower reply; the client's
state after the round (the job brings the stored one) rides along, uncounted, for the
server's client-state store. A declared
`ClientFailure` (injected crash, undecodable payload) becomes a reply with `error` set;
any other exception propagates (the engine stops the run with it).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from deqfl.data import DatasetArrays
from deqfl.errors import ClientFailure
from deqfl.fl.client import train_client
from deqfl.fl.personal.mod import complete_download
from deqfl.fl.server import ClientJob, ClientReply
from deqfl.fl.transport import decode_state, split_extras
from deqfl.models import federated_state

_GLOBAL_RNG_TAG = 0x6C0B


class ClientRunner:
    def __init__(self, model: nn.Module, dataset: DatasetArrays, transport_dtype: str = "float32"):
        self.model = model
        self.dataset = dataset
        self.transport_dtype = transport_dtype
        self.reference = federated_state(model)
        federated = set(self.reference)
        self._local_buffers = {
            k: v.detach().clone() for k, v in model.state_dict().items() if k not in federated
        }

    def run(self, job: ClientJob, download: bytes) -> ClientReply:
        cid = job.data.client_id
        try:
            received, extras = split_extras(decode_state(download, like=self.reference))
            received = complete_download(received, self.reference, job.task.personalization)
            self._reset_local_buffers()
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(job_seed(job))
                update = train_client(
                    self.model, received, job.task, self.dataset, job.data,
                    client_state=None if job.client_state is None else decode_state(job.client_state),
                    server_extras=extras,
                )
            return ClientReply.from_update(update, self.transport_dtype)
        except ClientFailure as exc:  # logged by the engine, in the run's own process
            return ClientReply.failed(cid, f"{type(exc).__name__}: {exc}")

    def _reset_local_buffers(self) -> None:
        if self._local_buffers:
            self.model.load_state_dict(self._local_buffers, strict=False)


def job_seed(job: ClientJob) -> int:
    """Seed of the global torch generator during one client's job: (seed, round, client)."""
    draw = np.random.default_rng([job.task.seed, job.task.round, job.data.client_id, _GLOBAL_RNG_TAG])
    return int(draw.integers(2**62))
