"""The DEQ classifier's unrolled twin: L distinct cells instead of one weight-tied cell."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from deqfl.models.cells import make_family


class UnrolledClassifier(nn.Module):
    """stem -> u, z_{i+1} = f_i(z_i, u), i < depth, z_0 = 0, each f_i its
    own cell of family `cell` (`deqfl.models.cells`) -> head. Same compute as `depth` DEQ
    iterations, depth times the cell's parameters: what weight tying saves."""

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        num_classes: int,
        channels: int,
        depth: int = 16,
        max_norm: float = 1.0,
        cell: str = "residual",
        cell_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        family = make_family(cell, input_shape, num_classes, channels, max_norm, cell_options)
        self.stem = family.stem()
        self.cells = nn.ModuleList(family.cell() for _ in range(depth))
        self.head = family.head()

    def forward(self, x: Tensor) -> Tensor:
        u = self.stem(x)
        z = torch.zeros_like(u)
        for cell in self.cells:
            z = cell(z, u)
        return self.head(z)
