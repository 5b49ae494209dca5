"""Tensor helpers shared by aggregators (deltas are dicts of float64 tensors)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from deqfl.fl.validation import ValidatedUpdate


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
        return torch.zeros(0, dtype=torch.float64, device="cpu")
    return torch.cat([value.reshape(-1) for value in delta.values()])


def weight_vector(weights: Sequence[float], updates: Sequence[ValidatedUpdate]) -> torch.Tensor:
    """The weights as a float64 vector on the device of the updates' deltas."""
    device = next(iter(updates[0].delta.values())).device
    return torch.tensor(list(weights), dtype=torch.float64, device=device)
