"""A client's own test split: test rows drawn by the client's label distribution.

As FedRep (Collins et al., ICML 2021) and FeDEQ evaluate personalised models, client k is
tested on a sample of the global test set whose label histogram follows k's training
labels: `size` rows, class c getting a share n_c / n of them (largest remainder rounding,
ties to the smaller class), drawn without replacement from the test rows of class c (all
of them when the class has fewer). The draw is seeded by (seed, client) only, so every
engine and every round gives a client the same rows.
"""

from __future__ import annotations

import numpy as np

_TAG = 0x7E57


def class_quota(train_labels: np.ndarray, num_classes: int, size: int) -> np.ndarray:
    """Rows per class: `size` split by the training label shares, largest remainder."""
    counts = np.bincount(np.asarray(train_labels, dtype=np.int64), minlength=num_classes)[:num_classes]
    if counts.sum() == 0:
        return np.zeros(num_classes, dtype=np.int64)
    exact = size * counts / counts.sum()
    quota = np.floor(exact).astype(np.int64)
    order = sorted(range(num_classes), key=lambda c: (-(exact[c] - quota[c]), c))
    for c in order[: size - int(quota.sum())]:
        quota[c] += 1
    return quota


def client_test_rows(
    y_test: np.ndarray, train_labels: np.ndarray, size: int, seed: int, client_id: int
) -> np.ndarray:
    """Sorted test-row indices of the client's test split (module docstring)."""
    y_test = np.asarray(y_test)
    num_classes = int(max(y_test.max(initial=0), np.max(train_labels, initial=0))) + 1
    quota = class_quota(train_labels, num_classes, size)
    rng = np.random.default_rng([seed, client_id, _TAG])
    rows = []
    for c in range(num_classes):
        if quota[c] == 0:
            continue
        pool = np.flatnonzero(y_test == c)
        rows.append(rng.choice(pool, size=min(int(quota[c]), len(pool)), replace=False))
    return np.sort(np.concatenate(rows)) if rows else np.zeros(0, dtype=np.int64)
