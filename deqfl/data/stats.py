"""Summaries of a partition: per-client label counts and label entropy."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def label_counts(labels: np.ndarray, parts: Sequence[np.ndarray], num_classes: int) -> np.ndarray:
    """int64 array (clients x classes): how many samples of each class each client holds."""
    labels = np.asarray(labels)
    return np.stack([np.bincount(labels[p], minlength=num_classes)[:num_classes] for p in parts]
                    ).astype(np.int64) if len(parts) else np.zeros((0, num_classes), np.int64)


def label_entropy(counts: np.ndarray) -> np.ndarray:
    """Per-client entropy of the label distribution, in bits (0: one class only)."""
    counts = np.asarray(counts, dtype=np.float64)
    p = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, -p * np.log2(p), 0.0)
    return terms.sum(axis=1)
