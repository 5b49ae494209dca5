"""deqfl's Flower app: the `server_app` and `client_app` Flower loads, and what they need
from an experiment config.

An app is an entry point, like the CLI: it reads experiment configs and hands the Flower
engine library (`deqfl.engines.flower`, which never imports `deqfl.experiments`) the specs
it runs on (`FlowerRun`, `FlowerNode`). Declared in pyproject.toml's `[tool.flwr.app]`
and, identically, in the FAB `deqfl run --engine flower` sends (`APP_TOML`; a test keeps
the two equal).

Run config keys (`[tool.flwr.app.config]`, made by `run_config`): `deqfl-config` (the
resolved experiment config, TOML text), `out-dir` (the run directory, on the machine
running the ServerApp, i.e. the SuperLink's), `resume` (bool).

- `server_app` (a SuperLink's `flwr-serverapp` process): validates the run config and runs
  `runner.run_rounds` with its clients on the SuperLink's grid (`grid_engines`).
- `client_app` (every SuperNode, and every virtual node of the simulation): rebuilds the
  run's data (mapped), model and partition from the config text (`load_node`).

A deployed SuperNode loads this module in a fresh process for every message, so it imports
only what both apps' objects need; each function imports what it uses (a ClientApp
process never imports the server's round loop, and a query message imports no torch).
"""

from __future__ import annotations

import dataclasses
import functools
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from deqfl.engines.flower.client_app import make_client_app
from deqfl.errors import ConfigError

if TYPE_CHECKING:
    from deqfl.data import DatasetArrays
    from deqfl.engines.flower.spec import FlowerNode, FlowerRun
    from deqfl.experiments.config import ExperimentConfig
    from deqfl.experiments.federation import Federation
    from deqfl.experiments.runner import EngineFactory
    from deqfl.fl.client import ClientData
    from deqfl.fl.server import Engine

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
serverapp = "deqfl.experiments.flower_app:server_app"
clientapp = "deqfl.experiments.flower_app:client_app"

[tool.flwr.app.config]
deqfl-config = ""
out-dir = ""
resume = false
"""


def flower_run(config: ExperimentConfig) -> FlowerRun:
    """The Flower engines' view of the run `config` describes; a virtual client reserves
    `flower.client_gpus` of a GPU when the run computes on CUDA. Its clients keep their
    own state (`client_state_on_server` False): only the simulation launcher asks for it
    (`grid_engines`), never the config."""
    from deqfl.devices import resolve_device  # noqa: PLC0415
    from deqfl.engines.flower.spec import FlowerRun  # noqa: PLC0415

    flower = config.flower
    on_cuda = resolve_device(config.experiment.device).type == "cuda"
    return FlowerRun(
        config_text=config.to_toml(), num_clients=config.data.num_clients, round_timeout=flower.round_timeout,
        connect_timeout=flower.connect_timeout, client_cpus=flower.client_cpus,
        client_gpus=flower.client_gpus if on_cuda else 0.0,
    )


def grid_engines(grid: Grid, config: ExperimentConfig, client_state_on_server: bool = False) -> EngineFactory:
    """An engine factory for `runner.run_rounds`: the run's clients on `grid`'s nodes;
    `client_state_on_server` (the simulation launcher's, never a deployment's): their state
    travels with tasks and replies into the server's store (`FlowerRun`)."""
    from deqfl.engines.flower.engine import grid_engine  # noqa: PLC0415

    run = dataclasses.replace(flower_run(config), client_state_on_server=client_state_on_server)

    def factory(fed: Federation) -> Engine:
        return grid_engine(grid, run)

    return factory


def load_node(config_text: str, data_dir: str | None) -> FlowerNode:
    """A node of the run whose config is `config_text` (validated here); `data_dir`, when
    not None, replaces `data.data_dir` (the device's own data folder). The data set is
    mapped from the data cache (read where it has no cache entry yet); the partition is
    computed only when a node's partition cache lacks it (`_partition`)."""
    import torch  # noqa: PLC0415

    from deqfl.data import load_dataset  # noqa: PLC0415
    from deqfl.devices import prepare_device  # noqa: PLC0415
    from deqfl.engines.flower.spec import FlowerNode  # noqa: PLC0415
    from deqfl.experiments.config import validate_config  # noqa: PLC0415
    from deqfl.models import build_model  # noqa: PLC0415

    config = validate_config(tomllib.loads(config_text), source="run config from the server")
    if data_dir is not None:
        config.data.data_dir = data_dir
    data = config.data
    device = prepare_device(config.experiment.device)
    dataset = load_dataset(data.dataset, data_dir=data.data_dir, cache_dir=data.cache_dir, mmap=True)
    with torch.random.fork_rng(devices=[]), torch.device("cpu"):
        torch.manual_seed(config.experiment.seed)  # the server's build: personal parts start from the same values
        model = build_model(
            config.model.name, input_shape=dataset.input_shape, num_classes=dataset.num_classes, **config.model.options,
        )
    model.to(device)
    return FlowerNode(
        dataset=dataset, model=model, num_clients=data.num_clients, threads=config.experiment.threads,
        transport_dtype=config.transport.dtype, cache_dir=data.cache_dir,
        partition=functools.partial(_partition, config, dataset),
    )


def _partition(config: ExperimentConfig, dataset: DatasetArrays) -> list[ClientData]:
    from deqfl.experiments.federation import client_partition  # noqa: PLC0415

    return client_partition(config, dataset)


def run_config(config: ExperimentConfig, out_dir: Path, resume: bool) -> dict[str, str | bool]:
    """The Flower run config that starts `config`'s run in `out_dir` on a SuperLink."""
    return {"deqfl-config": config.to_toml(), "out-dir": str(out_dir.resolve()), "resume": resume}


client_app = make_client_app(load_node)
server_app = ServerApp()


@server_app.main()
def _main(grid: Grid, context: Context) -> None:
    values = context.run_config
    text, out = str(values.get("deqfl-config", "")), str(values.get("out-dir", ""))
    if not text or not out:
        raise ConfigError("run config needs `deqfl-config` and `out-dir`: start runs with `deqfl run --engine flower`")
    from deqfl.experiments.config import validate_config  # noqa: PLC0415
    from deqfl.experiments.runner import run_rounds  # noqa: PLC0415

    config = validate_config(tomllib.loads(text), source="run config deqfl-config")
    run_rounds(config, Path(out), bool(values.get("resume", False)), None, None, grid_engines(grid, config))
