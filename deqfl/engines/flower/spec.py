"""What the Flower engines are given by the layer above (`deqfl.experiments`), so that no
module here reads an experiment config: `FlowerRun` for the server side of a run,
`FlowerNode` for a device that trains its clients.

The experiment config travels to the nodes as TOML text (`FlowerRun.config_text`) with its
SHA-256 digest; a node checks the digest, then hands the text to the function its
ClientApp was made with (`client_app.make_client_app`), which validates it and builds the
`FlowerNode`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import nn

from deqfl.data import DatasetArrays
from deqfl.fl.client import ClientData


@dataclass(frozen=True)
class FlowerRun:
    """One run as the Flower engines see it.

    `config_text`: the resolved experiment config (TOML), sent with every task; the nodes
    rebuild their data and model from it. `num_clients`: registered clients (one Flower
    node each, partition-id 0..num_clients-1). `round_timeout`: seconds to wait for a
    round's replies. `connect_timeout`: seconds to wait on the first round for nodes
    hosting every sampled client. `client_cpus`: CPUs the simulation reserves per virtual
    client; `client_gpus`: the share of a GPU it reserves (0 when the run computes on the
    CPU). `client_state_on_server`: each client's persistent state (personal parts,
    duals, SCAFFOLD's control variate, warm-start caches) travels with its task and
    reply and is kept in the server's store, checkpointed with the run: set by the
    simulation launcher alone (its virtual nodes keep nothing across a resume); False,
    the default and always a deployment's: it stays on the node, in Flower's
    `Context.state`, and a reply's state is ignored.
    """

    config_text: str
    num_clients: int
    round_timeout: float
    connect_timeout: float
    client_cpus: float
    client_gpus: float = 0.0
    client_state_on_server: bool = False


@dataclass
class FlowerNode:
    """What a node needs to train any client of one run.

    `partition()` returns every client's rows in client-id order, exactly as the server
    splits them (called once per run and node; cached on disk under `cache_dir`).
    `threads`: torch threads for training; `transport_dtype`: the wire dtype of uploads.
    """

    dataset: DatasetArrays
    model: nn.Module
    num_clients: int
    threads: int
    transport_dtype: str
    cache_dir: str | None
    partition: Callable[[], Sequence[ClientData]]


NodeLoader = Callable[[str, str | None], FlowerNode]
"""`(config_text, data_dir) -> FlowerNode`: validates a run's config text (digest already
checked) and builds the node; `data_dir`, when not None, is the node's own data folder
(node config `data-dir`), overriding the config's."""
