"""deqfl's Flower ServerApp, and `run_on_grid`: deqfl's runner on any Flower Grid.

The ServerApp's main(grid, context) calls `deqfl.experiments.runner.run_experiment` with
an engine factory that builds a `GridEngine` on the grid it was given, so the rounds,
evaluation, checkpoints and results files are the embedded engine's, line for line.

Run config keys (declared in `[tool.flwr.app.config]`, set by `deqfl run --engine flower`):
`deqfl-config` (the resolved experiment config, TOML text), `out-dir` (run directory, on
the machine running the ServerApp, i.e. the SuperLink's), `resume` (bool).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from deqfl.engines.flower.engine import GridEngine
from deqfl.engines.flower.strategy import DeqflStrategy
from deqfl.experiments.config import ExperimentConfig, validate_config
from deqfl.experiments.runner import Federation, RoundCallback, run_experiment


def run_on_grid(
    grid: Grid,
    config: ExperimentConfig,
    out_dir: Path,
    resume: bool = False,
    on_round: RoundCallback | None = None,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Run (or resume) the experiment with its clients on the grid's nodes."""
    flower = config.flower

    def factory(fed: Federation) -> GridEngine:
        strategy = DeqflStrategy(fed.config.to_toml(), message_ttl=flower.round_timeout + 60.0)
        return GridEngine(
            grid, strategy, fed.config.data.num_clients, flower.round_timeout,
            connect_timeout=flower.connect_timeout, query_timeout=min(30.0, flower.round_timeout),
        )

    return run_experiment(config, out_dir, resume, on_round, stop_after, engine_factory=factory)


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    run_config = context.run_config
    text = str(run_config.get("deqfl-config", ""))
    out = str(run_config.get("out-dir", ""))
    if not text or not out:
        raise ValueError("run config needs `deqfl-config` and `out-dir`: start runs with `deqfl run --engine flower`")
    config = validate_config(tomllib.loads(text), source="run config deqfl-config")
    run_on_grid(grid, config, Path(out), resume=bool(run_config.get("resume", False)))
