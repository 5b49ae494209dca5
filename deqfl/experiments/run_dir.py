"""A run's directory and identity: which settings make a run the same run, and refusing a
directory that holds another run's files.

`run_config_hash` is kept in every checkpoint (`deqfl.fl.checkpoint`); `prepare_run_dir`
is called before any work; `load_run_config` reads a run directory's saved config (for
`--resume`).
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from deqfl.errors import ConfigError
from deqfl.experiments import results as rf
from deqfl.experiments.config import ExperimentConfig, validate_config
from deqfl.fl.checkpoint import has_checkpoints, json_digest

RUN_LOCATION_KEYS = {"data": {"data_dir", "cache_dir"}, "experiment": {"workers", "tensorboard", "device"}}
"""Config keys that say where files are, how many processes compute or on which device,
not what the run computes (its results are bitwise the same for any worker count; a device
changes them only by floating-point rounding, README "GPU"): a run moved to another data
directory, or resumed with another number of workers or on another device, is the same
run, so they are left out of its identity."""


def run_config_hash(config: ExperimentConfig) -> str:
    """The run's identity, kept in its checkpoints: `json_digest` of the settings that
    differ from the defaults (keys added later with a default leave the hashes of earlier
    runs unchanged), without `RUN_LOCATION_KEYS`."""
    return json_digest(config.model_dump(mode="json", exclude_defaults=True, exclude=RUN_LOCATION_KEYS))


def prepare_run_dir(out_dir: Path, config: ExperimentConfig, resume: bool) -> None:
    """Make `out_dir` this run's directory, or refuse (ConfigError) one that holds another
    run's files: a `config.toml` with other settings, or checkpoints without a
    `config.toml`. A new run (not `resume`) also refuses a directory holding rounds or
    checkpoints of its own config: those are resumed, never silently restarted over."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} is a file, not a folder; choose a folder for the run's files")
    metrics = out_dir / "metrics.jsonl"
    if not resume and metrics.exists() and rf.read_jsonl(metrics):
        raise ConfigError(
            f"{out_dir} already holds a run; resume it with `deqfl run --resume {out_dir}` "
            "or choose another --out"
        )
    saved = out_dir / "config.toml"
    if saved.exists():
        differing = _differing_keys(load_run_config(out_dir), config)
        if differing:
            raise ConfigError(
                f"{out_dir} holds another run: its config.toml differs from this run's config "
                f"in {', '.join(differing[:5])}; choose another --out"
            )
    elif has_checkpoints(out_dir):
        raise ConfigError(f"{out_dir} holds checkpoints but no config.toml, so not this run's; choose another --out")
    if not resume and has_checkpoints(out_dir):
        raise ConfigError(
            f"{out_dir} holds checkpoints of this config's run; resume it with "
            f"`deqfl run --resume {out_dir}` or choose another --out"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    if not resume or not saved.exists():
        rf.atomic_write_text(saved, config.to_toml())


def _differing_keys(saved: ExperimentConfig, config: ExperimentConfig) -> list[str]:
    """Dotted `section.key` names whose settings differ (none: the same run hash)."""
    a, b = (c.model_dump(mode="json", exclude=RUN_LOCATION_KEYS) for c in (saved, config))
    return sorted(
        f"{section}.{key}" for section in a.keys() | b.keys()
        for key in a.get(section, {}).keys() | b.get(section, {}).keys()
        if a.get(section, {}).get(key) != b.get(section, {}).get(key)
    )


def load_run_config(out_dir: Path) -> ExperimentConfig:
    """The config saved in `out_dir` (ConfigError if it is missing or not a valid config)."""
    path = out_dir / "config.toml"
    if not path.exists():
        raise ConfigError(f"{out_dir} is not a run directory: {path.name} is missing")
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid TOML ({exc}): not a deqfl run's config") from None
    return validate_config(raw, source=str(path))
