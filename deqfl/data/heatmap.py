"""PNG heat map of a partition's label counts (clients x classes), drawn off-screen.

Uses matplotlib's Agg canvas directly, so the global pyplot backend is never touched.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def save_heatmap(counts: np.ndarray, classes: Sequence[str], path: Path, title: str) -> Path:
    """Write the heat map of `counts` (clients x classes) to `path` (PNG); return `path`."""
    num_clients, num_classes = counts.shape
    height = min(max(3.0, 0.12 * num_clients + 1.5), 30.0)
    width = min(max(4.0, 0.45 * num_classes + 2.5), 30.0)
    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    image = axes.imshow(counts, aspect="auto", interpolation="nearest", cmap="viridis")
    figure.colorbar(image, ax=axes, label="samples")
    axes.set_xlabel("class")
    axes.set_ylabel("client")
    axes.set_title(title, fontsize=9)
    if num_classes <= 20:
        axes.set_xticks(range(num_classes), [str(c) for c in classes], rotation=45, ha="right")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path
