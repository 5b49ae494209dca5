"""PNG plots of a run: accuracy against round, accuracy against MB communicated, and the
clients' fusion weights by tier (each client's weight as a dot per round, tier means as lines).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_run(out_dir: Path, records: list[dict[str, Any]], summary: dict[str, Any]) -> list[Path]:
    if not records:
        return []
    rounds = [r["round"] for r in records]
    accuracy = [100 * r["accuracy"] for r in records]
    mb = []
    total = 0.0
    for r in records:
        total += (r["bytes_up"] + r["bytes_down"]) / 1e6
        mb.append(total)
    paths = []

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(rounds, accuracy, marker="o", label="reference budget")
    tiers = sorted({t for r in records for t in r.get("tier_accuracy", {})})
    for tier in tiers:
        ax.plot(rounds, [100 * r["tier_accuracy"][tier] for r in records], linestyle="--", label=f"{tier} budget")
    ax.set(xlabel="round", ylabel="test accuracy (%)", title=f"{summary['model']} on {summary['dataset']}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    paths.append(_save(fig, out_dir / "accuracy_vs_round.png"))

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(mb, accuracy, marker="o")
    ax.set(xlabel="MB communicated (up + down, cumulative)", ylabel="test accuracy (%)")
    ax.grid(alpha=0.3)
    paths.append(_save(fig, out_dir / "accuracy_vs_mb.png"))

    fig, ax = plt.subplots(figsize=(5, 3.5))
    client_tiers = sorted({c["tier"] for r in records for c in r["clients"]})
    for i, tier in enumerate(client_tiers):
        xs = [r["round"] for r in records for c in r["clients"] if c["tier"] == tier]
        ws = [c["weight"] for r in records for c in r["clients"] if c["tier"] == tier]
        color = f"C{i}"
        ax.scatter(xs, ws, s=10, alpha=0.5, color=color)
        means = []
        for r in records:
            tier_w = [c["weight"] for c in r["clients"] if c["tier"] == tier]
            means.append(sum(tier_w) / len(tier_w) if tier_w else float("nan"))
        ax.plot(rounds, means, color=color, label=f"{tier} (mean)")
    ax.set(xlabel="round", ylabel="client weight in fusion", title=f"fusion: {summary['fusion'].get('weighting')}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    paths.append(_save(fig, out_dir / "client_weights.png"))
    return paths


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
