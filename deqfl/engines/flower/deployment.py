"""`deqfl run --engine flower --superlink HOST:PORT`: the experiment on a running SuperLink.

What works with flwr 1.41 without `flwr run` (which we must not use: see DESIGN.md, 6):

1. The SuperLink serves its Control, Fleet and Runtime APIs over HTTP on one address
   (`flower-superlink --port PORT`); in `--isolation subprocess` (the default) it starts a
   `flower-superexec` that launches one `flwr-serverapp` process per run. Started with
   `--disable-runtime-dependency-installation`, that process runs in the SuperLink's own
   environment (no `uv sync`), so deqfl and torch must be installed there.
2. A run is created by sending a FAB (a zip holding a `pyproject.toml` with
   `[tool.flwr.app]`) to the Control API's StartRun, exactly what `flwr run` does after
   building the FAB. This module builds that FAB in memory (only the pyproject: the code
   comes from the installed deqfl package) and calls StartRun through flwr's
   `ControlHttpClient`, with the experiment config and the run directory as run config.
3. The `flwr-serverapp` process loads `deqfl.engines.flower.server_app:app`, which runs
   deqfl's runner on its grid and writes the results files into the run directory (a path
   on the SuperLink's machine). SuperNodes run `deqfl.engines.flower.client_app:app` in
   `flwr-clientapp` subprocesses, one per message, in their own environment.
4. This module then polls the Control API's ListRuns until the run is finished, follows
   `metrics.jsonl` for progress (when the run directory is visible from here), and
   returns `summary.json`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from deqfl.errors import DeqflError
from deqfl.experiments.config import ExperimentConfig
from deqfl.experiments.results import read_jsonl
from deqfl.experiments.runner import RoundCallback, prepare_run_dir

APP_TOML = """\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "deqfl-flower"
version = "0.1.0"
description = "deqfl on Flower: the code is the installed deqfl package"
license = "Apache-2.0"
dependencies = []

[tool.flwr.app]
publisher = "deqfl"

[tool.flwr.app.components]
serverapp = "deqfl.engines.flower.server_app:app"
clientapp = "deqfl.engines.flower.client_app:app"

[tool.flwr.app.config]
deqfl-config = ""
out-dir = ""
resume = false
"""


def build_fab() -> bytes:
    from flwr.cli.build import build_fab_from_files  # noqa: PLC0415

    return build_fab_from_files({"pyproject.toml": APP_TOML.encode()})[0]


def control_client(address: str, root_certificates: str | None):
    from flwr.cli.cli_client_interceptor import CliClientHttpInterceptor  # noqa: PLC0415
    from flwr.supercore.control import ControlHttpClient  # noqa: PLC0415
    from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor  # noqa: PLC0415

    return ControlHttpClient.from_server_address(
        server_address=address,
        insecure=root_certificates is None,
        root_certificates=Path(root_certificates).read_bytes() if root_certificates else None,
        interceptors=[CliClientHttpInterceptor(), RuntimeVersionHttpInterceptor(component_name="flwr CLI")],
    )


def start_run(config: ExperimentConfig, out_dir: Path, address: str, root_certificates: str | None, resume: bool) -> int:
    import hashlib  # noqa: PLC0415

    from flwr.common.serde import fab_to_proto, user_config_to_proto  # noqa: PLC0415
    from flwr.proto.control_pb2 import StartRunRequest  # noqa: PLC0415
    from flwr.supercore.fab import Fab  # noqa: PLC0415

    fab_bytes = build_fab()
    fab = Fab(hashlib.sha256(fab_bytes).hexdigest(), fab_bytes, {})
    overrides = {"deqfl-config": config.to_toml(), "out-dir": str(out_dir.resolve()), "resume": resume}
    client = control_client(address, root_certificates)
    try:
        res = client.StartRun(StartRunRequest(fab=fab_to_proto(fab), override_config=user_config_to_proto(overrides)))
    finally:
        client.close()
    if not res.HasField("run_id"):
        raise DeqflError(f"the SuperLink at {address} did not start the run")
    return int(res.run_id)


def run_status(address: str, root_certificates: str | None, run_id: int) -> tuple[str, str, str]:
    """(status, sub_status, details) of a run, e.g. ('finished', 'completed', '')."""
    from flwr.common.serde import run_from_proto  # noqa: PLC0415
    from flwr.proto.control_pb2 import ListRunsRequest  # noqa: PLC0415

    client = control_client(address, root_certificates)
    try:
        res = client.ListRuns(ListRunsRequest(run_id=run_id))
    finally:
        client.close()
    run = run_from_proto(res.run_dict[run_id])
    return run.status.status, run.status.sub_status, run.status.details


def stop_run(address: str, root_certificates: str | None, run_id: int) -> None:
    from flwr.proto.control_pb2 import StopRunRequest  # noqa: PLC0415

    client = control_client(address, root_certificates)
    try:
        client.StopRun(StopRunRequest(run_id=run_id))
    finally:
        client.close()


def run_on_superlink(
    config: ExperimentConfig,
    out_dir: Path,
    resume: bool = False,
    on_round: RoundCallback | None = None,
    poll_seconds: float = 0.5,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Start the run on the SuperLink `config.flower.superlink` and wait for it to finish."""
    address = config.flower.superlink
    if not address:
        raise DeqflError("engine=flower needs the SuperLink address: --superlink HOST:PORT (or flower.superlink)")
    prepare_run_dir(out_dir, config, resume)  # fail early on a used directory, as the embedded engine does
    certs = config.flower.root_certificates
    run_id = start_run(config, out_dir, address, certs, resume)
    metrics = out_dir / "metrics.jsonl"
    seen = {r["round"] for r in read_jsonl(metrics)} if resume and metrics.exists() else set()
    started = time.monotonic()
    try:
        while True:
            status, sub_status, details = run_status(address, certs, run_id)
            if on_round and metrics.exists():
                for record in read_jsonl(metrics):
                    if record["round"] not in seen:
                        seen.add(record["round"])
                        on_round(record)
            if status == "finished":
                break
            if timeout is not None and time.monotonic() - started > timeout:
                stop_run(address, certs, run_id)
                raise DeqflError(f"run {run_id} on {address} did not finish within {timeout:g} s; stopped it")
            time.sleep(poll_seconds)
    except KeyboardInterrupt:
        stop_run(address, certs, run_id)
        raise
    if sub_status != "completed":
        raise DeqflError(f"run {run_id} on {address} ended {sub_status}: {details} (see the SuperLink's log)")
    summary = out_dir / "summary.json"
    if not summary.exists():
        return {"run_id": run_id, "out_dir": str(out_dir)}
    return json.loads(summary.read_text())
