"""The multiscale cell (`cell = "multiscale"`), in the spirit of MDEQ (Bai, Koltun and
Kolter, NeurIPS 2020): n resolution branches updated together and fused across scales.

Branch i has width C_i = channels * 2^i and side H_i = ceil(H_{i-1} / 2), H_0 the side
after the stem (the image's, halved `stem_strides` times by strided convolutions). The
cell, with u_i the injection at scale i and every convolution W under bounded weight
normalisation (`deqfl.deq.stability`, ||W||_F < max_norm):

    b_j = W2_j * relu(GN(W1_j * z_j + u_j))                     (W1_j, W2_j: 3x3, C_j -> C_j)
    z'_i = relu(u_i + b_i + sum_{j<i} D_ij(b_j) + sum_{j>i} up(U_ij * b_j))

D_ij: i - j strided 3x3 convolutions (relu between them), C_j -> ... -> C_i; U_ij: a 1x1
convolution C_j -> C_i, then nearest upsampling to H_i x W_i. With one branch, without the
GroupNorm and the inner injection, this is the residual cell. The injection enters before
the GroupNorm, so the normalised quantity has the variance of u even at z = 0 (a GroupNorm
of a z-only quantity has an unbounded Jacobian where that quantity is constant, as at
z0 = 0). The stem computes u_0 = GN(conv3x3(x)) (after its strided convolutions) and
u_i = GN(conv3x3_stride2(relu(u_{i-1}))); the head GroupNorms each branch, average-pools
it to min(pool, H_i) x min(pool, W_i) and feeds the concatenation to a linear layer.

The DEQ state is one flat tensor (B, d), d = sum_i C_i H_i W_i: branch i occupies its own
slice, in (H, W, C) order, so `Branches.unpack` gives channels_last views without copies
(the fast path of CPU convolutions) and the solvers see a single state; samples never
interact.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from pydantic import Field
from torch import Tensor, nn
from torch.nn import functional as F

from deqfl.deq.stability import bounded_weight_norm
from deqfl.models.cells.base import CellFamily, CellOptions, register_cell
from deqfl.models.stems import AdaptiveAvgPool, groups_for


@dataclass(frozen=True)
class Branches:
    """Widths and (H, W) sides of the branches, and the flat packing of their states."""

    widths: tuple[int, ...]
    sides: tuple[tuple[int, int], ...]

    @classmethod
    def geometry(cls, channels: int, branches: int, side: tuple[int, int]) -> Branches:
        """C_i = channels * 2^i, side_i = ceil(side_{i-1} / 2) (a stride-2, padding-1 3x3 convolution)."""
        sides = [side]
        for _ in range(branches - 1):
            sides.append(tuple(_halved(s) for s in sides[-1]))
        return cls(tuple(channels * 2**i for i in range(branches)), tuple(sides))

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(c * h * w for c, (h, w) in zip(self.widths, self.sides))

    def unpack(self, flat: Tensor) -> list[Tensor]:
        """(B, d) -> [(B, C_i, H_i, W_i)] views in channels_last layout."""
        out, start = [], 0
        for c, (h, w), n in zip(self.widths, self.sides, self.sizes):
            out.append(flat[:, start : start + n].view(flat.shape[0], h, w, c).permute(0, 3, 1, 2))
            start += n
        return out

    def pack(self, states: list[Tensor]) -> Tensor:
        """[(B, C_i, H_i, W_i)] -> (B, d), each branch in (H, W, C) order."""
        return torch.cat([s.permute(0, 2, 3, 1).reshape(s.shape[0], -1) for s in states], dim=1)


def _halved(side: int) -> int:
    return (side - 1) // 2 + 1


def _conv(x: Tensor, conv: nn.Conv2d) -> Tensor:
    """conv(x) with its weight in channels_last layout (the fast CPU path for channels_last x)."""
    weight = conv.weight.contiguous(memory_format=torch.channels_last)
    return F.conv2d(x, weight, conv.bias, conv.stride, conv.padding)


def _normed_conv(cin: int, cout: int, kernel: int, stride: int, max_norm: float, bias: bool) -> nn.Conv2d:
    return bounded_weight_norm(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=bias), max_norm)


class _Down(nn.Module):
    """D_ij: `steps` stride-2 3x3 convolutions cin -> ... -> cout, relu between them."""

    def __init__(self, cin: int, cout: int, steps: int, max_norm: float) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            _normed_conv(cin, cout if k == steps - 1 else cin, 3, 2, max_norm, bias=False) for k in range(steps)
        )

    def forward(self, x: Tensor) -> Tensor:
        for k, conv in enumerate(self.convs):
            x = _conv(F.relu(x) if k else x, conv)
        return x


class _Up(nn.Module):
    """U_ij: 1x1 convolution cin -> cout, then nearest upsampling to `side`."""

    def __init__(self, cin: int, cout: int, side: tuple[int, int], max_norm: float) -> None:
        super().__init__()
        self.side = side
        self.conv = _normed_conv(cin, cout, 1, 1, max_norm, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return F.interpolate(_conv(x, self.conv), size=self.side, mode="nearest")


class MultiscaleCell(nn.Module):
    """f(z, u) over flat multi-branch states (module docstring)."""

    def __init__(self, branches: Branches, max_norm: float = 1.0) -> None:
        super().__init__()
        self.branches = branches
        widths, n = branches.widths, len(branches.widths)
        self.conv1 = nn.ModuleList(_normed_conv(c, c, 3, 1, max_norm, bias=True) for c in widths)
        self.norm = nn.ModuleList(nn.GroupNorm(groups_for(c), c) for c in widths)
        self.conv2 = nn.ModuleList(_normed_conv(c, c, 3, 1, max_norm, bias=True) for c in widths)
        self.fuse = nn.ModuleList(
            nn.ModuleList(
                nn.Identity() if i == j
                else _Down(widths[j], widths[i], i - j, max_norm) if j < i
                else _Up(widths[j], widths[i], branches.sides[i], max_norm)
                for j in range(n)
            )
            for i in range(n)
        )

    def forward(self, z: Tensor, u: Tensor) -> Tensor:
        zs, us = self.branches.unpack(z), self.branches.unpack(u)
        b = [
            _conv(F.relu(norm(_conv(z_i, w1) + u_i)), w2)
            for z_i, u_i, w1, norm, w2 in zip(zs, us, self.conv1, self.norm, self.conv2)
        ]
        fused = []
        for i, row in enumerate(self.fuse):
            y = b[i]
            for j, fuse in enumerate(row):
                if j != i:
                    y = y + fuse(b[j])
            fused.append(y)
        return F.relu(self.branches.pack(fused) + u)  # u added flat: contiguous, unlike its branch views


class MultiscaleStem(nn.Module):
    """x -> flat injection u: conv3x3 (stride 2 when stem_strides > 0) + GN, then
    stem_strides - 1 times relu + stride-2 conv3x3 + GN; u_0 is that, u_i =
    GN(conv3x3_stride2(relu(u_{i-1}))) with C_{i-1} -> C_i."""

    def __init__(self, in_channels: int, branches: Branches, stem_strides: int) -> None:
        super().__init__()
        self.branches = branches
        c0 = branches.widths[0]
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, c0, 3, 2 if stem_strides else 1, 1), nn.GroupNorm(groups_for(c0), c0)
        ]
        for _ in range(stem_strides - 1):
            layers += [nn.ReLU(), nn.Conv2d(c0, c0, 3, 2, 1), nn.GroupNorm(groups_for(c0), c0)]
        self.stem = nn.Sequential(*layers)
        widths = branches.widths
        self.down = nn.ModuleList(
            nn.Sequential(nn.ReLU(), nn.Conv2d(widths[i - 1], widths[i], 3, 2, 1, bias=False),
                          nn.GroupNorm(groups_for(widths[i]), widths[i]))
            for i in range(1, len(widths))
        )

    def forward(self, x: Tensor) -> Tensor:
        u = [self.stem(x.contiguous(memory_format=torch.channels_last))]
        for down in self.down:
            u.append(down(u[-1]))
        return self.branches.pack(u)


class MultiscaleHead(nn.Module):
    """Per branch GroupNorm + average pool to min(pool, side); concatenated; linear."""

    def __init__(self, branches: Branches, num_classes: int, pool: int) -> None:
        super().__init__()
        self.branches = branches
        self.pools = [(min(pool, h), min(pool, w)) for h, w in branches.sides]
        self.norms = nn.ModuleList(nn.GroupNorm(groups_for(c), c) for c in branches.widths)
        self.pool = nn.ModuleList(AdaptiveAvgPool(p) for p in self.pools)
        features = sum(c * ph * pw for c, (ph, pw) in zip(branches.widths, self.pools))
        self.linear = nn.Linear(features, num_classes)

    def forward(self, z: Tensor) -> Tensor:
        parts = [pool(norm(s)).flatten(1) for s, norm, pool in zip(self.branches.unpack(z), self.norms, self.pool)]
        return self.linear(torch.cat(parts, dim=1))


class MultiscaleOptions(CellOptions):
    """Options of the multiscale cell (`model.options.cell_options`)."""

    branches: int = Field(2, ge=1, le=4, description="Resolution branches (widths channels * 2^i).")
    stem_strides: int = Field(0, ge=0, le=3, description="Stride-2 stem convolutions: the first branch "
                              "solves at the image side / 2^stem_strides (32x32 -> 16x16 for 1, 8x8 for 2).")
    pool: int = Field(4, ge=1, description="Side of each branch's average-pooled map before the linear head.")


@register_cell("multiscale", options=MultiscaleOptions)
class Multiscale(CellFamily):
    """MultiscaleStem -> MultiscaleCell -> MultiscaleHead (module docstring)."""

    def __init__(self, input_shape, num_classes, channels, max_norm, *, branches: int = 2, stem_strides: int = 0,
                 pool: int = 4) -> None:
        super().__init__(input_shape, num_classes, channels, max_norm)
        side = tuple(input_shape[1:])
        for _ in range(stem_strides):
            side = tuple(_halved(s) for s in side)
        self.geometry = Branches.geometry(channels, branches, side)
        self.stem_strides, self.pool = stem_strides, pool

    def stem(self) -> nn.Module:
        return MultiscaleStem(self.input_shape[0], self.geometry, self.stem_strides)

    def cell(self) -> nn.Module:
        return MultiscaleCell(self.geometry, self.max_norm)

    def head(self) -> nn.Module:
        return MultiscaleHead(self.geometry, self.num_classes, self.pool)
