"""One client job on one model copy: decode the download, train, encode the upload.

Shared by the in-process engine and every worker process, so both run exactly the same
code. Each job starts from the same model copy state: the download is loaded as the
federated state, and the model's non-federated buffers (e.g. spectral-norm power-iteration
vectors) are reset to their build-time values. The global torch generator is seeded per job
from (seed, round, client) and restored afterwards. Hence a client's result does not depend
on which clients this copy ran before, and the round is bitwise the same for any number
of worker processes.

A declared `ClientFailure` (injected crash, undecodable payload) becomes a result with
`error` set; any other exception propagates (the engine stops the run with it).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from deqfl.data import DatasetArrays
from deqfl.errors import ClientFailure
from deqfl.fl.client import train_client
from deqfl.fl.server import ClientJob
from deqfl.fl.transport import decode_state, encode_state
from deqfl.fl.update import ClientUpdate
from deqfl.models import federated_state

_GLOBAL_RNG_TAG = 0x6C0B


@dataclass
class ClientResult:
    """A job's outcome before the server decodes it: the update without its state, and the
    upload (the encoded returned state); or the declared failure's `error` text."""

    client_id: int
    update: ClientUpdate | None
    upload: bytes = b""
    error: str | None = None


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

    def run(self, job: ClientJob, download: bytes) -> ClientResult:
        cid = job.data.client_id
        try:
            received = decode_state(download, like=self.reference)
            self._reset_local_buffers()
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(job_seed(job))
                update = train_client(self.model, received, job.task, self.dataset, job.data)
            upload = encode_state(update.state, self.transport_dtype)
        except ClientFailure as exc:  # logged by the engine, in the run's own process
            return ClientResult(cid, None, error=f"{type(exc).__name__}: {exc}")
        return ClientResult(cid, replace(update, state={}), upload)

    def _reset_local_buffers(self) -> None:
        if self._local_buffers:
            self.model.load_state_dict(self._local_buffers, strict=False)


def job_seed(job: ClientJob) -> int:
    """Seed of the global torch generator during one client's job: (seed, round, client)."""
    draw = np.random.default_rng([job.task.seed, job.task.round, job.data.client_id, _GLOBAL_RNG_TAG])
    return int(draw.integers(2**62))
