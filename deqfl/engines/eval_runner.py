"""Server-side evaluation requests and the runner that computes them on one model copy.

An `EvalRequest` is one `deqfl.fl.evaluation.evaluate(model, x, y, forward_cap, tol,
batch_size)` call on test-split rows. `EvalRunner.run(payload, rows, request)` loads the
global state `payload` (float32 safetensors bytes) into its model, resets the model's
non-federated buffers (e.g. spectral-norm power-iteration vectors) to their build-time
values, and evaluates on `normalise(x_test[rows])`, `y_test[rows]` (`rows=None`: every test
row, in order). Normalisation is element-wise, so these are bitwise the rows of the
normalised whole test split. The in-process engine and every worker process run this same
code, so a result does not depend on where it ran nor on what the model copy did before.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from deqfl.data import DatasetArrays
from deqfl.fl.evaluation import EvalResult, evaluate
from deqfl.fl.transport import decode_state
from deqfl.models import federated_state, load_federated_state


@dataclass(frozen=True)
class EvalRequest:
    """One `evaluate` call: the forward budget (None: the model's own) and the batch size."""

    forward_cap: int | None
    tol: float | None
    batch_size: int


class EvalRunner:
    def __init__(self, model: nn.Module, dataset: DatasetArrays):
        self.model = model
        self.dataset = dataset
        self._reference = federated_state(model)
        self._local_buffers = {
            k: v.detach().clone() for k, v in model.state_dict().items() if k not in self._reference
        }

    def run(self, payload: bytes, rows: np.ndarray | None, request: EvalRequest) -> EvalResult:
        """`evaluate` of the state `payload` on the test rows `rows` (see the module docstring)."""
        load_federated_state(self.model, decode_state(payload, like=self._reference))
        if self._local_buffers:
            self.model.load_state_dict(self._local_buffers, strict=False)
        x_test, y_test = (self.dataset.x_test, self.dataset.y_test) if rows is None else \
            (self.dataset.x_test[rows], self.dataset.y_test[rows])
        x, y = self.dataset.normalise(x_test), torch.as_tensor(np.array(y_test))  # a copy: mapped arrays are read-only
        return evaluate(self.model, x, y, request.forward_cap, request.tol, request.batch_size)
