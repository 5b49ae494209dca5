"""The final model of a run: `model.safetensors` (tensors, no pickle) + `model.json`.

`model.json` records how to rebuild the architecture (model name, options, input shape,
classes), the data set and the reference budget, so `deqfl eval` and `deqfl export` can
load a run directory without the code that trained it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import nn

from deqfl.errors import ConfigError
from deqfl.experiments.config import ExperimentConfig
from deqfl.experiments.results import atomic_write_text
from deqfl.fl.profiles import TierConfig
from deqfl.models import build_model, federated_state, load_federated_state


@dataclass(frozen=True)
class SavedModel:
    model: nn.Module
    meta: dict[str, Any]


def save_model(out_dir: Path, model: nn.Module, config: ExperimentConfig, reference: TierConfig) -> None:
    tmp = out_dir / ".model.safetensors.tmp"
    save_file({k: v.contiguous() for k, v in federated_state(model).items()}, str(tmp))
    tmp.replace(out_dir / "model.safetensors")
    meta = {
        "model": config.model.name,
        "options": config.model.options,
        "dataset": config.data.dataset,
        "data_dir": config.data.data_dir,
        "reference_cap": reference.forward_cap,
        "reference_tol": reference.tol,
    }
    atomic_write_text(out_dir / "model.json", json.dumps(meta, indent=2))


META_KEYS = {"model": str, "options": dict, "dataset": str, "reference_cap": int, "reference_tol": float}


def read_model_meta(run_dir: Path) -> dict:
    """`run_dir/model.json`, checked: valid JSON holding at least `META_KEYS` with their
    types (ConfigError naming what is wrong otherwise)."""
    path = run_dir / "model.json"
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path} is not readable JSON ({exc}); rewrite it by resuming the run, or restore it") from None
    if not isinstance(meta, dict):
        raise ConfigError(f"{path} must hold a JSON object, got {type(meta).__name__}")
    for key, kind in META_KEYS.items():
        value = meta.get(key)
        fits = not isinstance(value, bool) and isinstance(value, (int, float) if kind is float else kind)
        if not fits:
            raise ConfigError(f"{path}: {key!r} must be a {kind.__name__}, got {value!r}")
    return meta


def load_saved_model(run_dir: Path, input_shape: tuple[int, ...], num_classes: int) -> SavedModel:
    meta_path, weights = run_dir / "model.json", run_dir / "model.safetensors"
    if not meta_path.exists() or not weights.exists():
        raise ConfigError(
            f"{run_dir} holds no final model (model.json and model.safetensors); "
            "it is written when a run finishes: resume it with `deqfl run --resume`"
        )
    meta = read_model_meta(run_dir)
    model = build_model(meta["model"], input_shape=input_shape, num_classes=num_classes, **meta["options"])
    try:
        load_federated_state(model, load_file(str(weights)))
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(f"{weights} does not fit model '{meta['model']}': {exc}") from None
    model.eval()
    return SavedModel(model, meta)
