"""Server-side evaluation requests, cut into pieces, and the runner that computes a piece
on one model copy.

An `EvalRequest` is one `deqfl.fl.evaluation.evaluate(model, x, y, forward_cap, tol,
batch_size)` call on test-split rows. `split_rows` cuts the rows at batch boundaries into
pieces; `EvalRunner.run(payload, rows, request)` loads the global state `payload` (float32
safetensors bytes) into its model, resets the model's non-federated buffers (e.g.
spectral-norm power-iteration vectors) to their build-time values, and returns the
`EvalTotals` of the request on `normalise(x_test[rows])`, `y_test[rows]`. Normalisation is
element-wise, so these are bitwise the rows of the normalised whole test split, and the
pieces' totals added in row order give bitwise the result of one `evaluate` call on all
the rows (`EvalTotals`). The in-process engine and every worker process run this same code,
so a result does not depend on where it ran nor on what the model copy did before.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from deqfl.data import DatasetArrays
from deqfl.fl.evaluation import EvalTotals, evaluate_totals
from deqfl.fl.transport import decode_state
from deqfl.models import federated_state, load_federated_state


@dataclass(frozen=True)
class EvalRequest:
    """One `evaluate` call: the forward budget (None: the model's own) and the batch size."""

    forward_cap: int | None
    tol: float | None
    batch_size: int


def split_rows(rows: np.ndarray, batch_size: int, pieces: int) -> list[np.ndarray]:
    """`rows` cut into at most `pieces` consecutive parts of whole batches (ceil(batches /
    pieces) each; the last part may hold fewer), in order."""
    batches = -(-len(rows) // batch_size)
    step = max(1, -(-batches // pieces)) * batch_size
    return [rows[start : start + step] for start in range(0, len(rows), step)]


class EvalRunner:
    def __init__(self, model: nn.Module, dataset: DatasetArrays):
        self.model = model
        self.dataset = dataset
        self._reference = federated_state(model)
        self._local_buffers = {
            k: v.detach().clone() for k, v in model.state_dict().items() if k not in self._reference
        }

    def run(self, payload: bytes, rows: np.ndarray, request: EvalRequest) -> EvalTotals:
        """The totals of `request` for the state `payload` on the test rows `rows` (see the
        module docstring)."""
        load_federated_state(self.model, decode_state(payload, like=self._reference))
        if self._local_buffers:
            self.model.load_state_dict(self._local_buffers, strict=False)
        x = self.dataset.normalise(self.dataset.x_test[rows])
        y = torch.as_tensor(self.dataset.y_test[rows], device="cpu")  # a copy (fancy indexing): mapped arrays are read-only
        return evaluate_totals(self.model, x, y, request.forward_cap, request.tol, request.batch_size)
