"""Loss terms of local training: the client minimises the sum of its terms each step.

    loss = task + sum_t term_t(inputs)        (terms in order; a term may return None)

A term is any object with a `name` (str, used for the `loss_<name>` metric) and a call
`term(inputs: LossInputs) -> Tensor | None` returning a scalar with graph. Built in:

* `TaskLoss`: cross-entropy of the batch, mean over samples (always the first term; its
  mean over steps is the reported `train_loss`).
* `ProximalTerm(mu)`: FedProx's mu/2 * ||w - w_global||^2 over the trainable parameters.
* `JacobianPenalty(weight)`: weight * sum over the DEQ calls of this step of their
  Hutchinson estimates of ||J_f(z*)||_F^2 / dim (only layers with `jac_reg_samples` > 0
  record one; the probes come from the client's own generator).
* `FixedPointCorrection(weight, model)`: fixed-point correction (Bai et al. 2022),
  weight * mean_i CE(model(x) with every solve cut at correction step j_i, y): the task
  loss of the logits the model gives when each DEQ answers with one differentiable cell
  application from its solve's output after j_i evaluations (`deqfl.deq.budget.replaying`;
  j_i = `correction_steps(cap, points)`, recorded when local training asks its budget for
  `points` correction points), so the DEQ learns to be accurate at small budgets. The model
  runs again from the inputs for each point (its explicit parts included).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from torch import Tensor, nn

from deqfl.deq.budget import SolveRecord, deq_layers, replaying
from deqfl.errors import ConfigError
from deqfl.fl.client.task import TrainOptions


@dataclass(frozen=True)
class LossInputs:
    """What a loss term may look at in one local step."""

    logits: Tensor
    targets: Tensor
    params: dict[str, Tensor]
    """The trainable parameters by name (with graph)."""
    anchor: dict[str, Tensor]
    """The same parameters as received from the server (the global model, detached)."""
    solves: SolveRecord
    """This step's DEQ calls: solver statistics, fixed points (detached) and Jacobian
    penalties."""
    client_state: dict[str, Tensor] | None
    """The client's persistent state (None when the run keeps none)."""
    inputs: Tensor | None = None
    """The batch's inputs (for terms that run the model again; None when not given)."""


class LossTerm(Protocol):
    name: str

    def __call__(self, inputs: LossInputs) -> Tensor | None: ...


@dataclass(frozen=True)
class TaskLoss:
    name: str = "task"

    def __call__(self, inputs: LossInputs) -> Tensor:
        return nn.functional.cross_entropy(inputs.logits, inputs.targets)


@dataclass(frozen=True)
class ProximalTerm:
    mu: float
    name: str = "proximal"

    def __call__(self, inputs: LossInputs) -> Tensor:
        prox = sum(((p - inputs.anchor[k]) ** 2).sum() for k, p in inputs.params.items())
        return 0.5 * self.mu * prox


@dataclass(frozen=True)
class JacobianPenalty:
    weight: float
    name: str = "jacobian"

    def __call__(self, inputs: LossInputs) -> Tensor | None:
        penalty = inputs.solves.jacobian_penalty()
        return None if penalty is None else self.weight * penalty


@dataclass(frozen=True, eq=False)
class FixedPointCorrection:
    weight: float
    model: nn.Module
    name: str = "correction"

    def __call__(self, inputs: LossInputs) -> Tensor | None:
        points = inputs.solves.correction_points
        if points == 0 or inputs.inputs is None:
            return None
        total = None
        for point in range(points):
            with replaying(self.model, inputs.solves, point):
                loss = nn.functional.cross_entropy(self.model(inputs.inputs), inputs.targets)
            total = loss if total is None else total + loss
        return self.weight / points * total


def default_loss_terms(options: TrainOptions, model: nn.Module) -> tuple[LossTerm, ...]:
    """Task loss, then FedProx's term when mu > 0, then the Jacobian penalty when a DEQ of
    `model` has jac_reg_samples > 0 and the weight is > 0, then fixed-point correction when
    `model` has a DEQ and its weight is > 0."""
    terms: list[LossTerm] = [TaskLoss()]
    if options.proximal_mu > 0:
        terms.append(ProximalTerm(options.proximal_mu))
    if options.jacobian_weight > 0 and any(deq.jac_reg_samples > 0 for _, deq in deq_layers(model)):
        terms.append(JacobianPenalty(options.jacobian_weight))
    if options.fixed_point_correction > 0 and deq_layers(model):
        terms.append(FixedPointCorrection(options.fixed_point_correction, model))
    return tuple(terms)


def check_deq_terms(fixed_point_correction: float, model: nn.Module, model_name: str) -> None:
    """ConfigError, before any training, when fixed-point correction (a DEQ-only term,
    which `default_loss_terms` would leave out) is asked of a model without a DEQ layer."""
    if fixed_point_correction > 0 and not deq_layers(model):
        raise ConfigError(
            f"train.fixed_point_correction = {fixed_point_correction:g} needs a DEQ model, but model.name = "
            f"'{model_name}' has no DEQ layer: set train.fixed_point_correction = 0 or choose a DEQ model (`deqfl models`)"
        )


def total_loss(terms: tuple[LossTerm, ...], inputs: LossInputs) -> tuple[Tensor, dict[str, float]]:
    """The summed loss (terms added left to right) and each contributing term's value."""
    total: Tensor | None = None
    values: dict[str, float] = {}
    for term in terms:
        value = term(inputs)
        if value is None:
            continue
        values[term.name] = value.item()
        total = value if total is None else total + value
    if total is None:
        raise ValueError("no loss term contributed to the loss; include TaskLoss()")
    return total, values


