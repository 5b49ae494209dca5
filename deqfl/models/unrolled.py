"""The DEQ classifier's unrolled twin: L distinct cells instead of one weight-tied cell."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from deqfl.models.cells import InjectedResidualCell
from deqfl.models.stems import pooled_head, stem


class UnrolledClassifier(nn.Module):
    """stem -> z_{i+1} = f_i(z_i, u), i < depth, z_0 = 0, each f_i its own
    InjectedResidualCell -> head. Same compute as `depth` DEQ iterations, depth times the
    cell's parameters: what weight tying saves."""

    def __init__(
        self, input_shape: tuple[int, int, int], num_classes: int, channels: int, depth: int = 16, max_norm: float = 1.0
    ) -> None:
        super().__init__()
        c, h, w = input_shape
        self.stem = stem(c, channels, h, w)
        self.cells = nn.ModuleList(InjectedResidualCell(channels, max_norm) for _ in range(depth))
        self.head = pooled_head(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        u = self.stem(x)
        z = torch.zeros_like(u)
        for cell in self.cells:
            z = cell(z, u)
        return self.head(z)
