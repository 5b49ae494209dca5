"""`run_in_simulation`: a function of a Flower Grid, run on Flower's simulation engine (Ray).

`run_simulation` is called from Python in the current environment (never `flwr run`,
which would build a fresh environment). One virtual SuperNode per registered client,
node config partition-id = client id. The ServerApp runs `main(grid)` in a thread of this
process, so callbacks and files written by `main` are as in a plain call; what `main`
returns is returned, and what it raises is raised here (by flwr's `run_simulation`). Ray writes under `$RAY_TMPDIR`;
if unset, a short temporary folder is made and removed afterwards (Ray's socket paths
must stay under ~107 characters).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from typing import TypeVar

from flwr.app import Context
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from deqfl.engines.flower.spec import FlowerRun

T = TypeVar("T")


def run_in_simulation(run: FlowerRun, client_app: ClientApp, main: Callable[[Grid], T]) -> T:
    """`main(grid)` on a simulated fleet of `run.num_clients` nodes running `client_app`,
    each reserving `run.client_cpus` CPUs and `run.client_gpus` of a GPU."""
    from flwr.simulation import run_simulation  # noqa: PLC0415

    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    outcome: dict[str, T] = {}
    server_app = ServerApp()

    @server_app.main()
    def _main(grid: Grid, context: Context) -> None:
        outcome["result"] = main(grid)

    made_tmp = None
    if not os.environ.get("RAY_TMPDIR"):
        made_tmp = tempfile.mkdtemp(prefix="deqfl-ray-")
        os.environ["RAY_TMPDIR"] = made_tmp
    try:
        run_simulation(
            server_app=server_app,
            client_app=client_app,
            num_supernodes=run.num_clients,
            backend_config={
                "client_resources": {"num_cpus": run.client_cpus, "num_gpus": run.client_gpus},
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
    if "result" not in outcome:
        raise RuntimeError("the Flower simulation ended without finishing the run (see the log above)")
    return outcome["result"]
