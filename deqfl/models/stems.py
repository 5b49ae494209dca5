"""Stems and heads shared by the DEQ classifier and its unrolled twin."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.nn import functional as F


def groups_for(channels: int, preferred: int = 4) -> int:
    """Largest group count <= preferred dividing channels (GroupNorm needs a divisor)."""
    return next(g for g in range(min(preferred, channels), 0, -1) if channels % g == 0)


def stem(in_channels: int, channels: int, height: int, width: int) -> nn.Sequential:
    """conv3x3(in -> channels) + GroupNorm, then 2x2 max-pool when the image is at least
    16x16 (28x28 -> 14x14, 32x32 -> 16x16; solving at full resolution costs 4x more).
    No activation: the injection keeps its sign, and the cell's relu thresholds u + W2 h."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, channels, 3, padding=1),
        nn.GroupNorm(groups_for(channels), channels),
    ]
    if min(height, width) >= 16:
        layers.append(MaxPool2x2())
    return nn.Sequential(*layers)


class _MaxPool2x2(torch.autograd.Function):
    """Forward in channels_last layout (CPU max-pooling's fast path), backward with the
    NCHW kernel (the fast one there); indices are per-plane in both layouts."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        y, indices = F.max_pool2d(x.contiguous(memory_format=torch.channels_last), 2, return_indices=True)
        ctx.save_for_backward(x, indices)
        return y.contiguous()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> Tensor:
        x, indices = ctx.saved_tensors
        return torch.ops.aten.max_pool2d_with_indices_backward(
            grad.contiguous(), x, [2, 2], [2, 2], [0, 0], [1, 1], False, indices.contiguous()
        )


class MaxPool2x2(nn.Module):
    """2x2 max-pool, stride 2, on (N, C, H, W) input: the same output, argmax (first
    maximum of each window on ties) and gradient as `nn.MaxPool2d(2)`, bit for bit, but
    2.5-4x faster for a forward and backward on CPU (1.3-1.5 against 3.8-5.1 ms at batch
    32, 16 channels, 28x28; `deqfl bench deq`, `stem_pool_ms`): torch's NCHW forward
    kernel is the slow part, its channels_last one is fast."""

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4:
            raise ValueError(f"MaxPool2x2 takes (N, C, H, W) input, got shape {tuple(x.shape)}")
        if torch.is_grad_enabled() and x.requires_grad:
            return _MaxPool2x2.apply(x)
        # no graph (evaluation, tracing for export): plain operators only
        return F.max_pool2d(x.contiguous(memory_format=torch.channels_last), 2).contiguous()


def pooling_matrix(size_in: int, size_out: int, like: Tensor) -> Tensor:
    """(size_out, size_in) matrix of adaptive average pooling along one axis: row i
    averages the inputs start_i <= j < end_i, start_i = floor(i * in / out),
    end_i = ceil((i + 1) * in / out) (torch's windows), on `like`'s device and dtype."""
    rows = torch.zeros(size_out, size_in, dtype=like.dtype, device=like.device)
    for i in range(size_out):
        start, end = (i * size_in) // size_out, -(-(i + 1) * size_in // size_out)
        rows[i, start:end] = 1.0 / (end - start)
    return rows


def adaptive_avg_pool_by_matmul(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Adaptive average pooling of (N, C, H, W) to `size` as P_h @ x @ P_w^T
    (`pooling_matrix`): the same windows as `F.adaptive_avg_pool2d`, equal up to rounding,
    with a backward made of matrix products (deterministic on CUDA)."""
    return pooling_matrix(x.shape[-2], size[0], x) @ x @ pooling_matrix(x.shape[-1], size[1], x).T


class AdaptiveAvgPool(nn.AdaptiveAvgPool2d):
    """`nn.AdaptiveAvgPool2d` with an int or (int, int) output size; on CUDA computed by
    `adaptive_avg_pool_by_matmul`, since torch's CUDA kernel accumulates its gradient with
    atomic additions (not bitwise repeatable where windows overlap, e.g. 14 -> 4). The CPU
    keeps torch's kernel, so CPU results are unchanged."""

    def forward(self, x: Tensor) -> Tensor:
        if not x.is_cuda:
            return super().forward(x)
        size = self.output_size if isinstance(self.output_size, tuple) else (self.output_size,) * 2
        size = tuple(x.shape[-2 + i] if s is None else int(s) for i, s in enumerate(size))
        return adaptive_avg_pool_by_matmul(x, size)


def pooled_head(channels: int, num_classes: int, pool: int = 4) -> nn.Sequential:
    """GroupNorm + adaptive avg-pool to pool x pool + linear."""
    return nn.Sequential(
        nn.GroupNorm(groups_for(channels), channels),
        AdaptiveAvgPool(pool),
        nn.Flatten(),
        nn.Linear(channels * pool * pool, num_classes),
    )
