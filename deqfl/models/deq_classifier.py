"""The DEQ image classifier: stem -> DEQ(cell) -> head, for any registered cell."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from deqfl.deq.backward import BackwardMode, JFB
from deqfl.deq.module import DEQ
from deqfl.deq.solvers import SolverConfig
from deqfl.models.cells import make_family

DEFAULT_SOLVER = SolverConfig(method="anderson", max_iter=16, tol=1e-3, stop_mode="rel", m=5, lam=1e-4)


class DEQClassifier(nn.Module):
    """stem -> DEQ over the cell -> head, all three from the cell family `cell`
    (`deqfl.models.cells`; the default "residual": stem conv3x3 + GroupNorm (+ max-pool)
    -> InjectedResidualCell(channels) -> GroupNorm + avg-pool 4x4 + linear). The solver
    and gradient mode live on `self.deq`."""

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        num_classes: int,
        channels: int,
        solver: SolverConfig = DEFAULT_SOLVER,
        eval_solver: SolverConfig | None = None,
        backward: BackwardMode | None = None,
        max_norm: float = 1.0,
        jac_reg_samples: int = 0,
        cell: str = "residual",
        cell_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        family = make_family(cell, input_shape, num_classes, channels, max_norm, cell_options)
        self.stem = family.stem()
        self.deq = DEQ(
            family.cell(),
            train_solver=solver,
            eval_solver=eval_solver,
            backward=backward or JFB(),
            jac_reg_samples=jac_reg_samples,
        )
        self.head = family.head()

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.deq(self.stem(x)))
