"""The end of a run: the final evaluation on the whole test set, the final model, and
`summary.json` (what the results store and the report read) with its plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from deqfl.experiments import results as rf
from deqfl.experiments.config import ExperimentConfig
from deqfl.experiments.federation import Federation, distinct_tiers
from deqfl.experiments.global_evaluation import EvaluateMany, evaluate_global
from deqfl.fl import privacy as dp
from deqfl.fl.attacks import malicious_clients
from deqfl.models import find_deq, load_federated_state, parameter_count, serialized_bytes


def finish(
    fed: Federation, out_dir: Path, state: dict[str, torch.Tensor], wall: float, evaluate_many: EvaluateMany
) -> dict[str, Any]:
    """Final evaluation on the whole test set (`evaluate_many`), final model, summary and plots."""
    from deqfl.experiments.model_io import save_model  # noqa: PLC0415
    from deqfl.experiments.plots import plot_run  # noqa: PLC0415

    config = fed.config
    load_federated_state(fed.model, state)
    final = evaluate_global(fed, None, evaluate_many, anytime=find_deq(fed.model) is not None)
    records = rf.read_jsonl(out_dir / "metrics.jsonl")
    save_model(out_dir, fed.model, config, fed.reference)
    summary = {
        "dataset": config.data.dataset,
        "model": config.model.name,
        "engine": config.experiment.engine,
        "device": str(fed.device),
        "rounds": config.experiment.rounds,
        "num_clients": config.data.num_clients,
        "seed": config.experiment.seed,
        "parameters": parameter_count(fed.model),
        "model_bytes": serialized_bytes(fed.model),
        "fusion": config.fusion.model_dump(mode="json"),
        "fleet": {t.name: sum(1 for x in fed.tiers if x.name == t.name) for t in distinct_tiers(fed.tiers)},
        "final_accuracy": final["accuracy"],
        "final_loss": final["loss"],
        "best_accuracy": max([r["accuracy"] for r in records] + [final["accuracy"]]),
        "global_residual": final["global_residual"],
        "tier_accuracy": final["tier_accuracy"],
        "anytime": final.get("anytime", {}),
        "skipped_rounds": sum(1 for r in records if r["skipped"]),
        "bytes_up": sum(r["bytes_up"] for r in records),
        "bytes_down": sum(r["bytes_down"] for r in records),
        "simulated_seconds": sum(r["simulated_seconds"] for r in records),
        "wall_seconds": wall,
        "malicious": malicious_clients(config.attack, config.data.num_clients, config.experiment.seed),
        "privacy": _privacy_summary(config),
        **_personal_summary(config, records),
        "versions": rf.versions(),
        "commit": rf.git_commit(),
    }
    rf.atomic_write_text(out_dir / "summary.json", json.dumps(rf.json_safe(summary), indent=2, allow_nan=False))
    plot_run(out_dir, records, summary)
    return summary


def _personal_summary(config: ExperimentConfig, records: list[dict[str, Any]]) -> dict[str, Any]:
    """Under personalisation: the last round's personalised and unseen accuracies, and
    the MB that travelled (down and up, all rounds); nothing otherwise."""
    if config.personalization.algorithm == "none":
        return {}
    last = records[-1] if records else {}
    return {
        "personal_accuracy": last.get("personal_accuracy"),
        "unseen_accuracy": last.get("unseen_accuracy"),
        "megabytes": sum(r["bytes_up"] + r["bytes_down"] for r in records) / 1e6,
    }


def _privacy_summary(config: ExperimentConfig) -> dict[str, Any] | None:
    """The DP settings and the final epsilon (None when DP is off)."""
    if not config.privacy.enabled:
        return None
    return {
        **config.privacy.model_dump(mode="json"),
        "sample_rate": dp.sample_rate(config.privacy, config.sampling.fraction),
        "epsilon": dp.epsilon(config.privacy, config.experiment.rounds, config.sampling.fraction),
    }
