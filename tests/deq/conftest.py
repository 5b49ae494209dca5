"""Shared problems of the DEQ-core tests."""

import pytest
import torch

from deqfl.deq.solvers import RowMap


def _spread_problem(batch=5, channels_last=False):
    """Per-sample scales 0.1 to 2.7 of a contractive map, so samples converge at different
    steps: f(z, (scale, u)) = scale * tanh(conv(z)) + u as a RowMap, and its calls' batch sizes."""
    g = torch.Generator().manual_seed(1)
    w = torch.randn(4, 4, 3, 3, generator=g, dtype=torch.float64)
    w = w / torch.linalg.matrix_norm(w.flatten(1), 2) / 3
    scale = torch.linspace(0.1, 2.7, batch, dtype=torch.float64)[:, None, None, None]
    u = torch.randn(batch, 4, 5, 5, generator=g, dtype=torch.float64)
    if channels_last:
        u = u.contiguous(memory_format=torch.channels_last)
    sizes = []

    def cell(z, context):
        s, v = context
        sizes.append(z.shape[0])
        return s * torch.tanh(torch.nn.functional.conv2d(z, w, padding=1)) + v

    return RowMap(cell, (scale, u)), torch.zeros_like(u), sizes


@pytest.fixture
def spread_problem():
    """`spread_problem(batch=5, channels_last=False) -> (f, z0, sizes)`: a RowMap whose
    samples converge at different steps, a zero start and the batch sizes of f's calls."""
    return _spread_problem
