"""Multiply-accumulates (MACs) of a model's training step, counted by torch's
FlopCounterMode (convolutions and matrix products; MACs = FLOPs / 2), per sample.

- `training_macs(model, input_shape, cap)`: one SGD training step (forward, cross-entropy,
  backward) on random inputs; a DEQ at forward cap `cap` with tolerance 0, so that every
  solve runs to the cap (the worst case at that cap);
- `cell_macs(model, input_shape)`: one cell evaluation of a DEQ on one sample;
- `macs_at_iterations(model, input_shape, iterations)`: a DEQ's training step at a mean of
  m forward iterations, `training_macs(cap=1) + (m - 1) * cell_macs`: under a gradient mode
  whose backward cost does not grow with the forward iterations (JFB, phantom), the forward
  solve is the only part that does; an explicit model's `training_macs` (m ignored);
- `correction_point_macs(model, input_shape)`: what one fixed-point correction point adds
  to a training step (`deqfl.fl.client.loss_terms.FixedPointCorrection`): the model run
  again from the inputs with each DEQ answering by one differentiable cell application
  from a kept solver output (`deqfl.deq.budget.replaying`), its cross-entropy and backward.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

from deqfl.deq import solver_budget
from deqfl.deq.budget import replaying
from deqfl.models.anytime import find_deq

Shape = tuple[int, int, int]


def training_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, opt: torch.optim.Optimizer,
                  cap: int | None) -> float:
    """One training step (forward at `cap` with tolerance 0 for a DEQ); returns its mean
    forward iterations."""
    with solver_budget(model, forward_cap=cap, tol=0.0 if cap else None) as solves:
        loss = F.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return solves.mean_iterations


def training_macs(model: nn.Module, input_shape: Shape, cap: int | None, batch: int = 2) -> float:
    """MACs of one training step per sample (module docstring)."""
    x, y = torch.randn(batch, *input_shape), torch.arange(batch) % 10
    counter = FlopCounterMode(display=False)
    with counter:
        training_step(model, x, y, torch.optim.SGD(model.parameters(), lr=0.0), cap)
    return counter.get_total_flops() / 2 / batch


def cell_macs(model: nn.Module, input_shape: Shape) -> float:
    """MACs of one cell evaluation on one sample."""
    deq = find_deq(model)
    with torch.no_grad():
        u = deq.inject(model.stem(torch.randn(1, *input_shape)))
        counter = FlopCounterMode(display=False)
        with counter:
            deq.cell(deq.initial_state(u), u)
    return counter.get_total_flops() / 2


def macs_at_iterations(model: nn.Module, input_shape: Shape, iterations: float | None) -> float:
    """MACs of one training step per sample at a mean of `iterations` forward iterations
    (module docstring); explicit models: `training_macs`."""
    if find_deq(model) is None:
        return training_macs(model, input_shape, None)
    if iterations is None:
        raise ValueError("a DEQ's training MACs need its mean forward iterations")
    return training_macs(model, input_shape, 1) + (iterations - 1) * cell_macs(model, input_shape)


def correction_point_macs(model: nn.Module, input_shape: Shape, batch: int = 2) -> float:
    """MACs per sample of one fixed-point correction point (module docstring). Leaves
    `model` in training mode with its gradients cleared (and a normalisation layer's
    running statistics moved by the extra forward pass): pass a model built to be counted."""
    if find_deq(model) is None:
        raise ValueError("fixed-point correction needs a DEQ model")
    x, y = torch.randn(batch, *input_shape), torch.arange(batch) % 10
    model.train()
    with solver_budget(model, forward_cap=2, tol=0.0, correction_points=1) as solves:
        model(x)  # a training solve keeps its output after one evaluation: the point to replay
    counter = FlopCounterMode(display=False)
    with counter, replaying(model, solves, 0):
        F.cross_entropy(model(x), y).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / 2 / batch
