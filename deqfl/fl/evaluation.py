"""Server-side evaluation of the global model at a forward budget.

`evaluate` returns accuracy, mean cross-entropy loss and, for DEQ models, the mean
relative residual ||f(z)-z|| / ||f(z)|| of the fixed point reached (`residual`), computed
over the same rows (sample-weighted over batches and DEQ calls). For explicit models every budget gives the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from deqfl.deq.budget import solver_budget
from deqfl.models import find_deq


@dataclass(frozen=True)
class EvalResult:
    accuracy: float
    loss: float
    residual: float | None


@torch.no_grad()
def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    cap: int | None,
    tol: float | None,
    batch_size: int = 500,
) -> EvalResult:
    model.eval()
    deq = find_deq(model)
    correct, loss_sum = 0, 0.0
    with solver_budget(model, cap, tol) as solves:
        for start in range(0, len(y), batch_size):
            xb, yb = x[start : start + batch_size], y[start : start + batch_size]
            logits = model(xb)
            correct += int((logits.argmax(1) == yb).sum())
            loss_sum += float(nn.functional.cross_entropy(logits, yb, reduction="sum"))
    residual_sum = sum(float(call.stats.mean_rel_residual) * call.batch for call in solves.calls)
    n = len(y)
    return EvalResult(
        accuracy=correct / n,
        loss=loss_sum / n,
        residual=residual_sum / n if deq is not None else None,
    )

