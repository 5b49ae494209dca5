"""The DEQ image classifier: stem -> DEQ(cell) -> pooled linear head."""

from __future__ import annotations

from torch import Tensor, nn

from deqfl.deq.backward import BackwardMode, JFB
from deqfl.deq.module import DEQ
from deqfl.deq.solvers import SolverConfig
from deqfl.models.cells import InjectedResidualCell
from deqfl.models.stems import pooled_head, stem

DEFAULT_SOLVER = SolverConfig(method="anderson", max_iter=16, tol=1e-3, stop_mode="rel", m=5, lam=1e-4)


class DEQClassifier(nn.Module):
    """stem conv3x3 + GroupNorm (+ max-pool) -> DEQ over InjectedResidualCell(channels) ->
    GroupNorm + avg-pool 4x4 + linear. The solver and gradient mode live on `self.deq`."""

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
    ) -> None:
        super().__init__()
        c, h, w = input_shape
        self.stem = stem(c, channels, h, w)
        self.deq = DEQ(
            InjectedResidualCell(channels, max_norm),
            train_solver=solver,
            eval_solver=eval_solver,
            backward=backward or JFB(),
            jac_reg_samples=jac_reg_samples,
        )
        self.head = pooled_head(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.deq(self.stem(x)))
