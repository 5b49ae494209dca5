"""Loss terms of the personalised algorithms (`deqfl.fl.client.loss_terms` protocol).

* `ProximalTo(center, weight)`: weight/2 * ||w - center||^2 over the trainable parameters
  that `center` holds (Ditto's pull of the personal model v towards the global w).
* `AugmentedLagrangian(center, dual, rho)`: FeDEQ's ADMM consensus term over the trainable
  parameters that `dual` holds,

      <lambda_k, theta_k - theta> + rho/2 ||theta_k - theta||^2,

  theta the received shared part (`center`), lambda_k the client's dual.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from deqfl.fl.client.loss_terms import LossInputs


@dataclass(frozen=True)
class ProximalTo:
    center: dict[str, Tensor]
    weight: float
    name: str = "personal_proximal"

    def __call__(self, inputs: LossInputs) -> Tensor | None:
        terms = [((p - self.center[k]) ** 2).sum() for k, p in inputs.params.items() if k in self.center]
        return 0.5 * self.weight * sum(terms) if terms else None


@dataclass(frozen=True)
class AugmentedLagrangian:
    center: dict[str, Tensor]
    dual: dict[str, Tensor]
    rho: float
    name: str = "admm"

    def __call__(self, inputs: LossInputs) -> Tensor | None:
        terms = []
        for key, p in inputs.params.items():
            if key in self.dual:
                gap = p - self.center[key]
                terms.append((self.dual[key] * gap).sum() + 0.5 * self.rho * (gap**2).sum())
        return sum(terms) if terms else None
