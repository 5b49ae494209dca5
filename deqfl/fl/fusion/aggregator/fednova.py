"""`fednova`: normalised averaging for unequal local work (Wang et al., NeurIPS 2020).

Client i ran tau_i SGD steps with heavy-ball momentum rho_i (constant learning rate).
Its update is the sum of its gradients weighted by a_i, whose l1 norm is

    ||a_i||_1 = [tau_i - rho_i (1 - rho_i^tau_i) / (1 - rho_i)] / (1 - rho_i)

(= tau_i when rho_i = 0). With shares p_i (the weighting's weights), the normalised
direction d_i = (x - x_i) / ||a_i||_1 and tau_eff = sum_i p_i ||a_i||_1:

    x_new = x - server_lr * tau_eff * sum_i p_i d_i,

i.e. delta = tau_eff * sum_i p_i (x_i - x) / ||a_i||_1. With equal tau and rho for every
client this is exactly the weighted mean (FedAvg). tau_i and rho_i are client-reported:
validation requires tau_i >= 1 and 0 <= rho_i < 1; they are not otherwise bounded, so a
client understating tau_i inflates its own update (use a robust aggregator where that
matters). No options.
"""

from __future__ import annotations

from collections.abc import Sequence

from deqfl.fl.fusion.aggregator.ops import weighted_sum
from deqfl.fl.fusion.base import Aggregate, RuleOptions
from deqfl.fl.fusion.registry import register_aggregator
from deqfl.fl.validation import ValidatedUpdate


def normaliser(tau: int, rho: float) -> float:
    """||a||_1 for tau SGD steps with momentum rho (formula in the module docstring)."""
    if rho == 0:
        return float(tau)
    return (tau - rho * (1 - rho**tau) / (1 - rho)) / (1 - rho)


@register_aggregator("fednova")
def fednova(
    updates: Sequence[ValidatedUpdate], weights: Sequence[float], options: RuleOptions
) -> Aggregate:
    norms = [normaliser(u.update.local_steps, u.update.momentum) for u in updates]
    tau_eff = sum(p * a for p, a in zip(weights, norms))
    coefficients = [tau_eff * p / a for p, a in zip(weights, norms)]
    return Aggregate(delta=weighted_sum([u.delta for u in updates], coefficients))
