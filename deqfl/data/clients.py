"""Every client's training and held-back rows: `client_rows`.

The server and every deployed device compute the same split from the same arguments
(the config's partition settings and seed), so a device needs no list of rows from the
server. Steps, each deterministic:

1. the first `train_subset` training rows are used (0: all of them);
2. `partition_indices(labels, num_clients, scheme, seed, **params)` splits them, with the
   settings the scheme takes (`scheme_params`);
3. each client holds back a seeded share `holdout_fraction` of its rows (`split_holdout`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deqfl.data.partition import PARAMS, partition_indices


@dataclass(frozen=True)
class ClientRows:
    """One client's row indices into the training arrays: those it trains on and those it
    holds back for its own evaluation; both sorted."""

    client_id: int
    train_indices: np.ndarray
    holdout_indices: np.ndarray


def client_rows(
    labels: np.ndarray,
    num_clients: int,
    scheme: str,
    seed: int,
    *,
    holdout_fraction: float,
    train_subset: int = 0,
    **settings: object,
) -> list[ClientRows]:
    """The rows of clients 0..num_clients-1 (see the module doc). `settings` may hold any
    partition setting (alpha, classes_per_client, shards_per_client, ...); only those
    `scheme` takes are passed on (`scheme_params`)."""
    rows = len(labels) if train_subset == 0 else min(train_subset, len(labels))
    parts = partition_indices(labels[:rows], num_clients, scheme, seed, **scheme_params(scheme, **settings))
    return [split_holdout(cid, indices, holdout_fraction, seed) for cid, indices in enumerate(parts)]


def scheme_params(scheme: str, **settings: object) -> dict[str, object]:
    """The settings `scheme` takes (`deqfl.data.partition.PARAMS`), the others dropped:
    alpha for dirichlet and quantity-skew, classes_per_client for pathological,
    shards_per_client for shards, none for iid. An unknown scheme keeps every setting, so
    that `partition_indices` names it in its error."""
    accepted = PARAMS.get(scheme)
    return dict(settings) if accepted is None else {k: v for k, v in settings.items() if k in accepted}


def split_holdout(client_id: int, indices: np.ndarray, fraction: float, seed: int) -> ClientRows:
    """A share `fraction` of the client's rows (rounded; none if it has < 2 rows), chosen
    by a generator seeded with (seed, client_id), is held back."""
    count = int(round(fraction * len(indices))) if len(indices) >= 2 else 0
    order = np.random.default_rng([seed, client_id, 0x40D]).permutation(len(indices))
    holdout = np.sort(indices[order[:count]])
    train = np.sort(indices[order[count:]])
    return ClientRows(client_id, train, holdout)
