"""DEQ cells f(z, u): the weight-tied map a DEQ iterates, with input injection u."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from deqfl.deq.stability import bounded_weight_norm


class InjectedResidualCell(nn.Module):
    """ResNet-style cell with input injection (u = GroupNorm-ed stem features):

        f(z, u) = relu(u + W2 * relu(W1 * z + b1) + b2)

    W1, W2: 3x3 convolutions, channels -> channels, each under bounded weight normalisation
    (||W||_F < max_norm, see deqfl.deq.stability). Since relu is 1-Lipschitz,
    Lip_z(f) <= ||W1||_2 ||W2||_2, which max_norm bounds for every weight training can reach:
    the cell stays contractive, so the solver needs few iterations and its residual cannot
    drift upward during (federated) training. Normalisation lives outside the loop (stem and
    head GroupNorm) because a GroupNorm of a z-dependent quantity has an unbounded Jacobian
    when that quantity's variance is small (for instance at z0 = 0).
    """

    def __init__(self, channels: int, max_norm: float = 1.0) -> None:
        super().__init__()
        self.conv1 = bounded_weight_norm(nn.Conv2d(channels, channels, 3, padding=1), max_norm)
        self.conv2 = bounded_weight_norm(nn.Conv2d(channels, channels, 3, padding=1), max_norm)

    def initial_state(self, u: Tensor) -> Tensor:
        return torch.zeros_like(u)

    def forward(self, z: Tensor, u: Tensor) -> Tensor:
        return F.relu(u + self.conv2(F.relu(self.conv1(z))))
