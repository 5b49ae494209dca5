"""Tensor helpers shared by aggregators (deltas are dicts of float64 tensors)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch


def weighted_sum(
    deltas: Sequence[Mapping[str, torch.Tensor]], coefficients: Sequence[float]
) -> dict[str, torch.Tensor]:
    """sum_k c_k delta_k, accumulated in the order given (deterministic)."""
    total = {key: torch.zeros_like(value) for key, value in deltas[0].items()}
    for delta, c in zip(deltas, coefficients):
        for key, acc in total.items():
            acc.add_(delta[key], alpha=float(c))
    return total


def flatten(delta: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """All of a delta's values as one float64 vector (keys in their dict order)."""
    if not delta:
        return torch.zeros(0, dtype=torch.float64)
    return torch.cat([value.reshape(-1) for value in delta.values()])
