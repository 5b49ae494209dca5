"""Anytime evaluation: a model's accuracy at several forward solver budgets."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from deqfl.deq.budget import solver_budget
from deqfl.deq.module import DEQ
from deqfl.devices import module_device


def find_deq(model: nn.Module) -> DEQ | None:
    """The first DEQ submodule of `model` (or model itself), None for explicit models."""
    return next((m for m in model.modules() if isinstance(m, DEQ)), None)


@torch.no_grad()
def accuracy(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 256) -> float:
    """Top-1 accuracy of `model` (put in eval mode, restored after) on (x, y), each batch
    moved to the model's device."""
    device = module_device(model)
    was_training = model.training
    model.eval()
    try:
        correct = sum(
            int((model(x[i : i + batch_size].to(device)).argmax(1) == y[i : i + batch_size].to(device)).sum())
            for i in range(0, len(x), batch_size)
        )
    finally:
        model.train(was_training)
    return correct / max(len(x), 1)


def accuracy_at_budgets(
    model: nn.Module, x: Tensor, y: Tensor, budgets: Sequence[int] = (1, 2, 4, 8, 16, 32), batch_size: int = 256
) -> dict[int, float]:
    """{budget: accuracy} with every DEQ's forward cap set to each budget and its tolerance to
    0 (so exactly `budget` f-evaluations run). Explicit models: one accuracy, at every budget."""
    if find_deq(model) is None:
        acc = accuracy(model, x, y, batch_size)
        return {int(b): acc for b in budgets}
    results = {}
    for b in budgets:
        with solver_budget(model, forward_cap=int(b), tol=0.0):
            results[int(b)] = accuracy(model, x, y, batch_size)
    return results
