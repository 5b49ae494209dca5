"""`deqfl run --engine flower-sim`: the experiment on Flower's simulation engine (Ray).

`run_simulation` is called from Python in the current environment (never `flwr run`,
which would build a fresh environment). One virtual SuperNode per registered client,
node config partition-id = client id. The ServerApp runs in a thread of this process and
calls deqfl's runner, so `on_round` callbacks and the results files are as on the embedded
engine. Ray writes under `$RAY_TMPDIR`; if unset, a short temporary folder is made and
removed afterwards (Ray's socket paths must stay under ~107 characters).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from deqfl.experiments.config import ExperimentConfig
from deqfl.experiments.runner import RoundCallback


def run_flower_simulation(
    config: ExperimentConfig,
    out_dir: Path,
    resume: bool = False,
    on_round: RoundCallback | None = None,
    stop_after: int | None = None,
) -> dict[str, Any]:
    from flwr.simulation import run_simulation  # noqa: PLC0415

    from deqfl.engines.flower.client_app import app as client_app  # noqa: PLC0415
    from deqfl.engines.flower.server_app import run_on_grid  # noqa: PLC0415

    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    result: dict[str, Any] = {}
    server_app = ServerApp()

    @server_app.main()
    def _main(grid: Grid, context: Context) -> None:
        result["summary"] = run_on_grid(grid, config, out_dir, resume, on_round, stop_after)

    made_tmp = None
    if not os.environ.get("RAY_TMPDIR"):
        made_tmp = tempfile.mkdtemp(prefix="deqfl-ray-")
        os.environ["RAY_TMPDIR"] = made_tmp
    try:
        run_simulation(
            server_app=server_app,
            client_app=client_app,
            num_supernodes=config.data.num_clients,
            backend_config={
                "client_resources": {"num_cpus": config.flower.client_cpus, "num_gpus": 0.0},
                "init_args": {
                    "num_cpus": os.cpu_count() or 1,
                    "include_dashboard": False,
                    "_temp_dir": os.environ["RAY_TMPDIR"],
                },
            },
        )
    finally:
        if made_tmp is not None:
            os.environ.pop("RAY_TMPDIR", None)
            shutil.rmtree(made_tmp, ignore_errors=True)
    if "summary" not in result:
        raise RuntimeError("the Flower simulation ended without finishing the run (see the log above)")
    return result["summary"]
