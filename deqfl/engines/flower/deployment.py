"""A run on a running Flower SuperLink: start it, follow it, stop it.

What works with flwr 1.41 without `flwr run` (which we must not use: see DESIGN.md, 6):

1. The SuperLink serves its Control, Fleet and Runtime APIs over HTTP on one address
   (`flower-superlink --port PORT`); in `--isolation subprocess` (the default) it starts a
   `flower-superexec` that launches one `flwr-serverapp` process per run. Started with
   `--disable-runtime-dependency-installation`, that process runs in the SuperLink's own
   environment (no `uv sync`), so deqfl and torch must be installed there.
2. A run is created by sending a FAB (a zip holding a `pyproject.toml` with
   `[tool.flwr.app]`) to the Control API's StartRun, exactly what `flwr run` does after
   building the FAB. `start_run` builds that FAB in memory from the app's pyproject text
   (only the pyproject: the code comes from the installed deqfl package) and calls
   StartRun through flwr's `ControlHttpClient`, with the given run config.
3. The `flwr-serverapp` process loads the FAB's `serverapp` component; SuperNodes run its
   `clientapp` in `flwr-clientapp` subprocesses, one per message, in their own
   environment. deqfl's components are in `deqfl.experiments.flower_app`.
4. `wait_for_run` polls the Control API's ListRuns until the run is finished.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from deqfl.errors import DeqflError


def build_fab(app_toml: str) -> bytes:
    """A FAB holding only `pyproject.toml` = `app_toml` (which declares the app)."""
    from flwr.cli.build import build_fab_from_files  # noqa: PLC0415

    return build_fab_from_files({"pyproject.toml": app_toml.encode()})[0]


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


def start_run(
    address: str, root_certificates: str | None, app_toml: str, run_config: dict[str, str | bool]
) -> int:
    """Start the app `app_toml` declares on the SuperLink at `address` with `run_config`
    (keys of its `[tool.flwr.app.config]`); returns the run id."""
    import hashlib  # noqa: PLC0415

    from flwr.common.serde import fab_to_proto, user_config_to_proto  # noqa: PLC0415
    from flwr.proto.control_pb2 import StartRunRequest  # noqa: PLC0415
    from flwr.supercore.fab import Fab  # noqa: PLC0415

    fab_bytes = build_fab(app_toml)
    fab = Fab(hashlib.sha256(fab_bytes).hexdigest(), fab_bytes, {})
    client = control_client(address, root_certificates)
    try:
        res = client.StartRun(StartRunRequest(fab=fab_to_proto(fab), override_config=user_config_to_proto(run_config)))
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


def wait_for_run(
    address: str,
    root_certificates: str | None,
    run_id: int,
    on_poll: Callable[[], None] | None = None,
    poll_seconds: float = 0.5,
    timeout: float | None = None,
) -> None:
    """Poll until run `run_id` is finished, calling `on_poll()` after every poll; raise
    DeqflError if it did not complete, or stop it and raise after `timeout` seconds (and
    on Ctrl-C)."""
    started = time.monotonic()
    try:
        while True:
            status, sub_status, details = run_status(address, root_certificates, run_id)
            if on_poll:
                on_poll()
            if status == "finished":
                break
            if timeout is not None and time.monotonic() - started > timeout:
                stop_run(address, root_certificates, run_id)
                raise DeqflError(f"run {run_id} on {address} did not finish within {timeout:g} s; stopped it")
            time.sleep(poll_seconds)
    except KeyboardInterrupt:
        stop_run(address, root_certificates, run_id)
        raise
    if sub_status != "completed":
        raise DeqflError(f"run {run_id} on {address} ended {sub_status}: {details} (see the SuperLink's log)")
