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
from deqfl.devices import module_device
from deqfl.models import find_deq


@dataclass(frozen=True)
class EvalResult:
    accuracy: float
    loss: float
    residual: float | None


@dataclass(frozen=True)
class EvalTotals:
    """The sums `evaluate` keeps over consecutive batches of rows: correct predictions, each
    batch's summed cross-entropy loss and each DEQ call's mean relative residual times its
    samples (None: the model has no DEQ), in order. `a + b` is the totals of `a`'s rows
    followed by `b`'s; `result()` adds the terms in that order, so totals computed in parts
    split at batch boundaries give bitwise the numbers of one `evaluate` call."""

    rows: int
    correct: int
    losses: tuple[float, ...]
    residuals: tuple[float, ...] | None

    def __add__(self, other: EvalTotals) -> EvalTotals:
        residuals = None if self.residuals is None else self.residuals + other.residuals
        return EvalTotals(self.rows + other.rows, self.correct + other.correct, self.losses + other.losses, residuals)

    def result(self) -> EvalResult:
        loss_sum = 0.0
        for loss in self.losses:
            loss_sum += loss
        residual = None if self.residuals is None else sum(self.residuals) / self.rows
        return EvalResult(accuracy=self.correct / self.rows, loss=loss_sum / self.rows, residual=residual)


@torch.no_grad()
def evaluate_totals(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    cap: int | None,
    tol: float | None,
    batch_size: int = 500,
) -> EvalTotals:
    """The totals of `evaluate` on these rows, batch by batch from the first row. `x`, `y`
    may live anywhere (e.g. on the host): each batch is moved to the model's device."""
    model.eval()
    device = module_device(model)
    deq = find_deq(model)
    correct, losses = 0, []
    with solver_budget(model, cap, tol) as solves:
        for start in range(0, len(y), batch_size):
            xb, yb = (t[start : start + batch_size].to(device) for t in (x, y))
            logits = model(xb)
            correct += int((logits.argmax(1) == yb).sum())
            losses.append(float(nn.functional.cross_entropy(logits, yb, reduction="sum")))
    residuals = tuple(float(call.stats.mean_rel_residual) * call.batch for call in solves.calls)
    return EvalTotals(len(y), correct, tuple(losses), residuals if deq is not None else None)


def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    cap: int | None,
    tol: float | None,
    batch_size: int = 500,
) -> EvalResult:
    return evaluate_totals(model, x, y, cap, tol, batch_size).result()
