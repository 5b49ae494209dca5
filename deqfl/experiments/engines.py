"""Which engine runs an experiment's clients: `resolve_engine(config)`, from
`experiment.engine`, decides it here and nowhere else (`runner.run_experiment`, the CLI,
`deqfl reproduce` and the benchmarks all go through it).

A launcher takes `(config, out_dir, resume, on_round, stop_after)`, returns the summary,
and ends in `runner.run_rounds` with an engine factory:

- `embedded`: in this process, on `EmbeddedEngine`.
- `flower-sim`: in the ServerApp thread of Flower's simulation
  (`deqfl.engines.flower.simulation.run_in_simulation`), on a `GridEngine` over the
  simulated nodes, which run `deqfl.experiments.flower_app.client_app`.
- `flower`: on the running SuperLink `flower.superlink` (`run_on_superlink`): the run
  starts there, the SuperLink's ServerApp (`flower_app.server_app`) runs `run_rounds` on
  its grid and writes the results into `out_dir` (a path on the SuperLink's machine);
  this process calls `on_round` for every new record of `metrics.jsonl` it can see and
  returns `summary.json`.

The Flower engines need the `flower` extra; asked for without it, a ConfigError says how
to install it.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from deqfl.errors import ConfigError
from deqfl.experiments.config import ExperimentConfig
from deqfl.experiments.results import read_jsonl
from deqfl.experiments.run_dir import prepare_run_dir
from deqfl.experiments.runner import RoundCallback, embedded_engine, run_rounds

Launcher = Callable[[ExperimentConfig, Path, bool, RoundCallback | None, int | None], dict[str, Any]]


def resolve_engine(config: ExperimentConfig) -> Launcher:
    """The launcher of the engine `config.experiment.engine` names."""
    name = config.experiment.engine
    if name not in LAUNCHERS:
        raise ConfigError(f"experiment.engine = {name!r} is not an engine; choose one of {', '.join(LAUNCHERS)}")
    if name != "embedded" and importlib.util.find_spec("flwr") is None:
        raise ConfigError(f"experiment.engine = {name!r} needs Flower: pip install -e '.[flower]'")
    return LAUNCHERS[name]


def _embedded(
    config: ExperimentConfig, out_dir: Path, resume: bool, on_round: RoundCallback | None, stop_after: int | None
) -> dict[str, Any]:
    return run_rounds(config, out_dir, resume, on_round, stop_after, embedded_engine)


def _flower_simulation(
    config: ExperimentConfig, out_dir: Path, resume: bool, on_round: RoundCallback | None, stop_after: int | None
) -> dict[str, Any]:
    from deqfl.engines.flower.simulation import run_in_simulation  # noqa: PLC0415 - the flower extra
    from deqfl.experiments.flower_app import client_app, flower_run, grid_engines  # noqa: PLC0415

    prepare_run_dir(out_dir, config, resume)  # fail on a used directory before Ray starts
    return run_in_simulation(
        flower_run(config), client_app,
        lambda grid: run_rounds(config, out_dir, resume, on_round, stop_after,
                                grid_engines(grid, config, client_state_on_server=True)),
    )


def run_on_superlink(
    config: ExperimentConfig,
    out_dir: Path,
    resume: bool = False,
    on_round: RoundCallback | None = None,
    stop_after: int | None = None,
    *,
    poll_seconds: float = 0.5,
    timeout: float | None = None,
) -> dict[str, Any]:
    """The `flower` launcher: start the run on the SuperLink `config.flower.superlink` and
    wait for it (at most `timeout` seconds, then stop it and raise; None: no limit)."""
    from deqfl.engines.flower.deployment import start_run, wait_for_run  # noqa: PLC0415 - the flower extra
    from deqfl.experiments.flower_app import APP_TOML, run_config  # noqa: PLC0415

    if config.experiment.engine != "flower":
        raise ConfigError(f"run_on_superlink runs engine 'flower', but experiment.engine = "
                          f"{config.experiment.engine!r}: use run_experiment, or set experiment.engine = \"flower\"")
    if stop_after is not None:
        raise ConfigError("stop_after is not available on engine 'flower': the rounds run in the SuperLink's ServerApp")
    address, certs = config.flower.superlink, config.flower.root_certificates
    if not address:
        raise ConfigError("engine=flower needs the SuperLink address: --superlink HOST:PORT (or flower.superlink)")
    prepare_run_dir(out_dir, config, resume)  # fail early on a used directory, as the embedded engine does
    run_id = start_run(address, certs, APP_TOML, run_config(config, out_dir, resume))
    follow = _follow_metrics(out_dir / "metrics.jsonl", on_round, resume) if on_round else None
    wait_for_run(address, certs, run_id, follow, poll_seconds, timeout)
    summary = out_dir / "summary.json"
    if not summary.exists():  # the run directory is on the SuperLink's machine, not visible here
        return {"run_id": run_id, "out_dir": str(out_dir)}
    return json.loads(summary.read_text())


def _follow_metrics(metrics: Path, on_round: RoundCallback, resume: bool) -> Callable[[], None]:
    """Calls `on_round` once for every record `metrics` gains (on resume: not for the
    rounds it already held)."""
    seen = {r["round"] for r in read_jsonl(metrics)} if resume and metrics.exists() else set()

    def follow() -> None:
        if metrics.exists():
            for record in read_jsonl(metrics):
                if record["round"] not in seen:
                    seen.add(record["round"])
                    on_round(record)

    return follow


LAUNCHERS: dict[str, Launcher] = {"embedded": _embedded, "flower-sim": _flower_simulation, "flower": run_on_superlink}
